"""``enclave user``: local accounts (there is no self sign-up), their roles, state and expiry."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import click

from ..i18n import N_
from ..rbac import ACCOUNT_ROLES
from . import main, pass_ctx
from .language import refusal, translated, usage_error

DATE_HELP = "YYYY-MM-DD (from 00:00 UTC that day) or an ISO 8601 time (UTC unless it says)"


def parse_date(text: str, what: str) -> datetime:
    """An expiry given on the command line, as a UTC datetime: a date means 00:00 UTC that day."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise refusal("date.invalid", N_("%(what)s: '%(text)s' is not a date: give YYYY-MM-DD or an ISO 8601 time"
                                         " (2027-06-30, 2027-06-30T08:00+08:00)"), what=translated(what), text=text) from None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def expiry(date: str | None, never: bool, what: str) -> datetime | None:
    """``DATE`` or ``--never`` (exactly one) of a ``set-expiry`` command, as its new expiry."""
    if never and date is not None:
        raise usage_error("expiry.both", N_("give %(what)s as DATE or --never, not both"), what=translated(what))
    if not never and date is None:
        raise usage_error("expiry.missing", N_("give %(what)s as DATE, or --never for none"), what=translated(what))
    return None if never else parse_date(date, what)


def when(moment: datetime | None) -> str:
    """A moment (the service layer's views give them with their zone) as the listings show it: UTC,
    to the second; '-' for none."""
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else "-"


def moment(value: datetime | None) -> str | None:
    """An expiry as the provisioning API takes it: RFC 3339 with its offset; None: never."""
    return value.isoformat() if value is not None else None


def account_path(name: str, *rest: str) -> str:
    from ..provisioning.client import path

    return path("accounts", name, *rest)


@main.group()
def user() -> None:
    """Manage accounts."""


_roles_option = click.option("--role", "roles", multiple=True, required=True, type=click.Choice(ACCOUNT_ROLES),
                             help="A role for the account; repeat for several.")


@user.command("add")
@click.argument("name")
@_roles_option
@click.option("--expires", metavar="DATE", help=f"The account is no longer usable from then: {DATE_HELP}.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from standard input instead of generating one.")
@pass_ctx
def add(ctx, name: str, roles: tuple[str, ...], expires: str | None, password_stdin: bool) -> None:
    """Create account NAME. A generated password is printed once."""
    expires_at = parse_date(expires, "--expires") if expires is not None else None
    body = {"name": name, "roles": sorted(set(roles))}
    if expires_at is not None:
        body["expires_at"] = moment(expires_at)
    if password_stdin:
        body["password"] = sys.stdin.readline().rstrip("\n")
    made = ctx.api("POST", "/accounts", body)  # without a password, the service generates one
    click.echo(f"created {name} ({', '.join(sorted(roles))})" + (f", expires {when(expires_at)}" if expires_at else ""))
    if not password_stdin:
        click.echo(f"password: {made['password']}")


@user.command("set-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@pass_ctx
def set_password(ctx, name: str, password_stdin: bool) -> None:
    """Set NAME's password (and clear its login throttles). A generated password is printed once."""
    # On the provisioning service's CLI socket alone: its HTTP API does not set passwords.
    body = {"password": sys.stdin.readline().rstrip("\n")} if password_stdin else {}
    answer = ctx.api("PUT", account_path(name, "password"), body)  # without a password, the service generates one
    click.echo(f"password set for {name}")
    if not password_stdin:
        click.echo(f"password: {answer['password']}")


@user.command("set-roles")
@click.argument("name")
@_roles_option
@pass_ctx
def set_roles(ctx, name: str, roles: tuple[str, ...]) -> None:
    """Give NAME exactly these roles (the others are taken away). The last usable admin keeps admin."""
    ctx.api("PUT", account_path(name, "roles"), {"roles": sorted(set(roles))})
    click.echo(f"{name} now holds {', '.join(sorted(set(roles)))} (from its next login)")


@user.command("disable")
@click.argument("name")
@click.option("--reason", required=True, help="Why (kept with the account and in the audit log).")
@pass_ctx
def disable(ctx, name: str, reason: str) -> None:
    """Disable NAME: its logins are refused, its sandboxes stopped, its sessions and tokens ended."""
    ctx.api("POST", account_path(name, "disable"), {"reason": reason})
    click.echo(f"disabled {name}: {reason}")


@user.command("enable")
@click.argument("name")
@pass_ctx
def enable(ctx, name: str) -> None:
    """Enable NAME again (an expired account also needs a new expiry: set-expiry)."""
    ctx.api("POST", account_path(name, "enable"))
    click.echo(f"enabled {name}")


@user.command("set-expiry")
@click.argument("name")
@click.argument("date", required=False)
@click.option("--never", is_flag=True, help="The account does not expire.")
@pass_ctx
def set_expiry(ctx, name: str, date: str | None, never: bool) -> None:
    """Set when NAME stops being usable: DATE (YYYY-MM-DD, from 00:00 UTC that day, or an ISO 8601
    time, UTC unless it says), or --never."""
    expires_at = expiry(date, never, N_("the account's expiry"))
    ctx.api("PUT", account_path(name, "expiry"), {"expires_at": moment(expires_at)})
    click.echo(f"{name} expires {when(expires_at)}" if expires_at else f"{name} does not expire")


@user.command("remove")
@click.argument("name")
@pass_ctx
def remove(ctx, name: str) -> None:
    """Remove account NAME and its workspace memberships. Refused for the last usable admin and for
    a data holder of sources or workspaces (give those to another holder first)."""
    ctx.api("DELETE", account_path(name))
    click.echo(f"removed {name}")


@user.command("list")
@pass_ctx
def list_(ctx) -> None:
    """List accounts: name, roles, state, expiry and when each was created."""
    found = ctx.api("GET", "/accounts")
    if not found:
        click.echo("no accounts")
        return
    width = max(26, *(len(", ".join(a["roles"])) + 1 for a in found))
    click.echo(f"{'ACCOUNT':<32} {'ROLES':<{width}} {'STATE':<9} {'EXPIRES':<25} CREATED")
    for a in found:
        click.echo(f"{a['name']:<32} {', '.join(a['roles']):<{width}} {_state(a):<9} {a['expires_at'] or '-':<25} "
                   f"{a['created_at']}")


def _state(account: dict) -> str:
    """active, disabled, or expired (active but past its expiry)."""
    return "expired" if account["state"] == "active" and not account["usable"] else account["state"]


@user.command("show")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_ctx
def show(ctx, name: str, fmt: str) -> None:
    """Show account NAME: roles, state (and why), expiry, creation, its roles in each workspace, and
    the sources and workspaces it is the data holder of."""
    account = ctx.api("GET", account_path(name))
    every = ctx.api("GET", "/workspaces")
    member_of = {w["name"]: sorted(role for role, members in w["members"].items() if name in members)
                 for w in every if any(name in members for members in w["members"].values())}
    holds = {"sources": [s["name"] for s in ctx.api("GET", "/sources") if s["holder"] == name],
             "workspaces": [w["name"] for w in every if w["holder"] == name]}
    if fmt == "json":
        described = {key: account[key] for key in ("name", "roles", "state", "state_reason", "expires_at")}
        click.echo(json.dumps({**described, "usable": account["usable"], "created_at": account["created_at"],
                               "workspaces": member_of, "holder_of": holds},
                              ensure_ascii=False, sort_keys=True, indent=2))
        return
    click.echo(account["name"])
    click.echo(f"  roles:      {', '.join(account['roles'])}")
    click.echo(f"  state:      {_state(account)}" + (f" ({account['state_reason']})" if account["state_reason"] else ""))
    click.echo(f"  expires:    {account['expires_at'] or '-'}")
    click.echo(f"  created:    {account['created_at']}")
    roles_in = [f'{ws} ({", ".join(roles)})' for ws, roles in member_of.items()]
    click.echo(f"  workspaces: {'; '.join(roles_in) or '-'}")
    if holds["sources"] or holds["workspaces"]:
        click.echo(f"  holder of:  sources {', '.join(holds['sources']) or '-'};"
                   f" workspaces {', '.join(holds['workspaces']) or '-'}")


@user.command("set-language")
@click.argument("name")
@click.argument("language", metavar="zh_CN|en")
@pass_ctx
def set_language(ctx, name: str, language: str) -> None:
    """Set the language NAME reads Enclave in: zh_CN (简体中文) or en (English), as they would on the
    hub's home page; Enclave's pages show it from their next load.
    NAME may also be a user of an identity provider (who has no Enclave account)."""
    from ..provisioning.client import path

    ctx.api("PUT", path("languages", name), {"language": language})
    click.echo(f"{name} reads Enclave in {'简体中文 (zh_CN)' if language == 'zh_CN' else 'English (en)'}")


@user.command("throttles")
@pass_ctx
def throttles(ctx) -> None:
    """List the clients whose failed logins are on record: account, client, failures, and until when
    the client's logins for the account are refused ('-': they are not)."""
    rows = ctx.api("GET", "/throttles")
    if not rows:
        click.echo("no failed logins on record")
        return
    click.echo(f"{'ACCOUNT':<32} {'CLIENT':<40} {'FAILURES':>8}  UNTIL")
    for t in rows:
        click.echo(f"{t['username']:<32} {t['client']:<40} {t['failures']:>8}  {t['until'] or '-'}")


@user.command("clear-throttle")
@click.argument("name")
@click.option("--client", help="Forget the failures of this client address only (as 'enclave user throttles' shows it).")
@pass_ctx
def clear_throttle(ctx, name: str, client: str | None) -> None:
    """Forget NAME's failed logins, from every client or one: its throttles end."""
    from urllib.parse import urlencode

    query = f"?{urlencode({'client': client})}" if client is not None else ""
    forgotten = ctx.api("DELETE", account_path(name, "throttles") + query)["forgotten"]
    click.echo(f"forgot {forgotten} failed login(s) of {name}" + (f" from {client}" if client else ""))
