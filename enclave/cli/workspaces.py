"""``enclave workspace``: workspaces, their purpose, data holder, state, members and attached releases.

Every command here is a request to the provisioning service (:meth:`enclave.cli._Context.api`): the
hub's when it runs, else one the command starts for the while.
"""

from __future__ import annotations

import json

import click

from ..i18n import N_
from ..rbac import WORKSPACE_ROLES
from . import main, pass_ctx
from .language import bad_parameter, refusal
from .users import DATE_HELP, expiry, moment, parse_date, when


def workspace_path(name: str, *rest: str) -> str:
    from ..provisioning.client import path

    return path("workspaces", name, *rest)


@main.group()
def workspace() -> None:
    """Manage workspaces."""


@workspace.command("create")
@click.argument("name")
@click.option("--purpose", default="", help="The approved scenario of use (应用场景), shown to the data holder.")
@click.option("--holder", metavar="USER", help="The data holder whose sources the workspace uses.")
@click.option("--expires", metavar="DATE", help=f"The workspace is frozen then: {DATE_HELP}.")
@pass_ctx
def create(ctx, name: str, purpose: str, holder: str | None, expires: str | None) -> None:
    """Create workspace NAME."""
    expires_at = parse_date(expires, "--expires") if expires is not None else None
    body = {"name": name, "purpose": purpose}
    if holder is not None:
        body["holder"] = holder
    if expires_at is not None:
        body["expires_at"] = moment(expires_at)
    ctx.api("POST", "/workspaces", body)
    click.echo(f"created workspace {name}")


_role_option = click.option("--role", required=True, type=click.Choice(WORKSPACE_ROLES))


@workspace.command("add-member")
@click.argument("workspace_name", metavar="WS")
@click.argument("username", metavar="USER")
@_role_option
@pass_ctx
def add_member(ctx, workspace_name: str, username: str, role: str) -> None:
    """Make USER an operator, reviewer or owner of workspace WS."""
    ctx.api("POST", workspace_path(workspace_name, "members"), {"user": username, "role": role})
    click.echo(f"{username} is now a {role} of {workspace_name}")


@workspace.command("remove-member")
@click.argument("workspace_name", metavar="WS")
@click.argument("username", metavar="USER")
@_role_option
@pass_ctx
def remove_member(ctx, workspace_name: str, username: str, role: str) -> None:
    """Take USER's role in workspace WS away (their other roles there stay)."""
    ctx.api("DELETE", workspace_path(workspace_name, "members", username, role))
    click.echo(f"{username} is no longer a {role} of {workspace_name}")


@workspace.command("attach")
@click.argument("workspace_name", metavar="WS")
@click.argument("release")
@click.option("--columns", help="Only these columns (comma-separated, 'col' or 'table.col'): a column view.")
@click.option("--reason", default="", help="Why the workspace needs this data (kept in its data supply manifest).")
@pass_ctx
def attach(ctx, workspace_name: str, release: str, columns: str | None, reason: str) -> None:
    """Ask for RELEASE (or some of its columns) in WS. Its data holder consents (from their own
    account, shown WS's purpose); then it is visible, read-only, under /data in WS's sandboxes."""
    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns is not None else None
    if cols is not None and not cols:
        raise bad_parameter("columns.empty", N_("give at least one column"), "--columns")
    body = {"release": release, "reason": reason, **({"columns": cols} if cols is not None else {})}
    view = ctx.api("POST", workspace_path(workspace_name, "releases"), body)
    what = f"columns {', '.join(cols)} of {release}" if cols else release
    # The service asks only for releases of the workspace's own data holder's sources.
    click.echo(f"asked for {what} in {workspace_name}: awaiting consent by {view['holder']}"
               f" (then mounted at /data/{release})")


@workspace.command("detach")
@click.argument("workspace_name", metavar="WS")
@click.argument("release")
@pass_ctx
def detach(ctx, workspace_name: str, release: str) -> None:
    """Take RELEASE away from WS (attached or still awaiting consent), from each sandbox's next start."""
    ctx.api("DELETE", workspace_path(workspace_name, "releases", release))
    click.echo(f"detached {release} from {workspace_name}")


@workspace.command("set-purpose")
@click.argument("workspace_name", metavar="WS")
@click.argument("purpose")
@pass_ctx
def set_purpose(ctx, workspace_name: str, purpose: str) -> None:
    """Set WS's purpose: the approved scenario of use (应用场景) its data holder consents to."""
    ctx.api("PUT", workspace_path(workspace_name, "purpose"), {"purpose": purpose})
    click.echo(f"purpose of {workspace_name}: {purpose}")


@workspace.command("set-holder")
@click.argument("workspace_name", metavar="WS")
@click.argument("username", metavar="USER")
@pass_ctx
def set_holder(ctx, workspace_name: str, username: str) -> None:
    """Make USER (an account with the holder role) WS's data holder."""
    ctx.api("PUT", workspace_path(workspace_name, "holder"), {"holder": username})
    click.echo(f"data holder of {workspace_name}: {username}")


@workspace.command("set-expiry")
@click.argument("workspace_name", metavar="WS")
@click.argument("date", required=False)
@click.option("--never", is_flag=True, help="The workspace does not expire.")
@pass_ctx
def set_expiry(ctx, workspace_name: str, date: str | None, never: bool) -> None:
    """Set when WS is frozen by itself: DATE (YYYY-MM-DD, from 00:00 UTC that day, or an ISO 8601
    time, UTC unless it says), or --never."""
    expires_at = expiry(date, never, N_("the workspace's expiry"))
    ctx.api("PUT", workspace_path(workspace_name, "expiry"), {"expires_at": moment(expires_at)})
    click.echo(f"{workspace_name} expires {when(expires_at)}" if expires_at else f"{workspace_name} does not expire")


@workspace.command("set-operators-may-review")
@click.argument("workspace_name", metavar="WS")
@click.argument("allowed", type=click.Choice(["yes", "no"]))
@pass_ctx
def set_operators_may_review(ctx, workspace_name: str, allowed: str) -> None:
    """Whether one account may be both operator and reviewer of WS (yes|no). Nobody ever reviews
    their own export requests either way."""
    ctx.api("PUT", workspace_path(workspace_name, "operators-may-review"), {"allowed": allowed == "yes"})
    click.echo(f"operators of {workspace_name} {'may' if allowed == 'yes' else 'may not'} also review")


@workspace.command("freeze")
@click.argument("workspace_name", metavar="WS")
@click.option("--reason", required=True, help="Why (kept with the workspace and in the audit log).")
@pass_ctx
def freeze(ctx, workspace_name: str, reason: str) -> None:
    """Freeze WS: its sandboxes stop and none start, and no export request is taken, until unfrozen."""
    ctx.api("POST", workspace_path(workspace_name, "freeze"), {"reason": reason})
    click.echo(f"froze {workspace_name}: {reason}")


@workspace.command("unfreeze")
@click.argument("workspace_name", metavar="WS")
@pass_ctx
def unfreeze(ctx, workspace_name: str) -> None:
    """Make frozen WS active again."""
    ctx.api("POST", workspace_path(workspace_name, "unfreeze"))
    click.echo(f"unfroze {workspace_name}")


@workspace.command("archive")
@click.argument("workspace_name", metavar="WS")
@click.option("--reason", required=True, help="Why (kept with the workspace and in the audit log).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def archive(ctx, workspace_name: str, reason: str, yes: bool) -> None:
    """Archive WS, for good: its sandboxes stop, its homes are kept read-only for the retention
    period and then deleted, and nothing about it changes again."""
    if not reason.strip():  # before the question, not after it
        raise bad_parameter("reason.missing", N_("say why the workspace is archived"), "--reason")
    if not yes:
        click.confirm(f"Archive {workspace_name}? This is final: it cannot be undone", abort=True)
    ctx.api("POST", workspace_path(workspace_name, "archive"), {"reason": reason})
    click.echo(f"archived {workspace_name}: {reason}")


def _key_values(items: tuple[str, ...]) -> dict:
    """KEY=VALUE arguments, each value as JSON (2048, 0.5, true), else as the text given: the
    service names the key and the type it needs."""
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise refusal("argument.not_key_value", N_("'%(item)s' is not KEY=VALUE"), item=item)
        try:
            values[key] = json.loads(value)
        except ValueError:
            values[key] = value
    return values


@workspace.command("set-limits")
@click.argument("workspace_name", metavar="WS")
@click.argument("limits", nargs=-1, required=True, metavar="KEY=VALUE...")
@pass_ctx
def set_limits(ctx, workspace_name: str, limits: tuple[str, ...]) -> None:
    """Override sandbox limits for WS (memory_mb, pids, cpus, max_file_mb, disk_mb: each home's
    quota, tmp_mb: each sandbox's /tmp). A disk quota below what a home uses is refused."""
    view = ctx.api("PUT", workspace_path(workspace_name, "limits"), _key_values(limits))
    click.echo(f"limits of {workspace_name}: {view['limits']} (from each sandbox's next start)")


@workspace.command("set-guard")
@click.argument("workspace_name", metavar="WS")
@click.argument("items", nargs=-1, required=True, metavar="KEY=VALUE...")
@pass_ctx
def set_guard(ctx, workspace_name: str, items: tuple[str, ...]) -> None:
    """Change what WS's servers let through: terminals, upload_max_mb, read_max_mb,
    output_message_max_kb, output_cell_max_kb, output_connection_max_kb, export_max_mb. Values are
    JSON (true, 2, 0.5)."""
    view = ctx.api("PUT", workspace_path(workspace_name, "guard"), _key_values(items))
    click.echo(f"guard settings of {workspace_name}: {json.dumps(view['guard'], sort_keys=True)}"
               " (from each server's next start)")


@workspace.command("set-export-policy")
@click.argument("workspace_name", metavar="WS")
@click.argument("items", nargs=-1, required=True, metavar="KEY=VALUE...")
@pass_ctx
def set_export_policy(ctx, workspace_name: str, items: tuple[str, ...]) -> None:
    """Override [exports] for WS's export requests: approvals_required, max_file_mb,
    max_files_per_request, max_csv_rows, min_cell_count, round_base, nk_n, nk_k, p_ratio. Requests
    made from now on are decided under the new policy version; those already made keep theirs."""
    view = ctx.api("PUT", workspace_path(workspace_name, "export-policy"), _key_values(items))
    status = ctx.api("GET", workspace_path(workspace_name, "status"))
    click.echo(f"export policy of {workspace_name}: {json.dumps(view['export_policy'], sort_keys=True)}"
               f" ({status['export_policy_label']})")


@workspace.command("list")
@pass_ctx
def list_(ctx) -> None:
    """List workspaces: each one's purpose, state, holder, members, releases, and homes' disk use."""
    found = ctx.api("GET", "/workspaces")
    if not found:
        click.echo("no workspaces")
    for w in found:
        _show(w, ctx.api("GET", workspace_path(w["name"], "status")))


@workspace.command("show")
@click.argument("workspace_name", metavar="WS")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: the workspace's declared state only, the same bytes however it was built.")
@pass_ctx
def show(ctx, workspace_name: str, fmt: str) -> None:
    """Show workspace WS: purpose, state, holder, members, releases (and those awaiting consent),
    limits, guard settings, export policy and homes' disk use."""
    described = ctx.api("GET", workspace_path(workspace_name))
    if fmt == "json":  # the API's workspace is the service layer's describe(); its status is apart
        click.echo(json.dumps(described, ensure_ascii=False, sort_keys=True, indent=2))
    else:
        _show(described, ctx.api("GET", workspace_path(workspace_name, "status")))


def _show(w: dict, status: dict) -> None:
    """A workspace as listed: its declared state (the API's workspace) and its status."""
    members = w["members"]
    releases = w["releases"]
    attached = sorted(r for r, given in releases.items() if given["status"] == "attached")
    awaiting = sorted(r for r, given in releases.items() if given["status"] == "awaiting_consent")
    click.echo(w["name"])
    click.echo(f"  purpose:   {w['purpose'] or '-'}")
    state = w["state"] + (f" ({w['state_reason']})" if w["state"] != "active" and w["state_reason"] else "")
    click.echo(f"  state:     {state}")
    click.echo(f"  expires:   {w['expires_at'] or '-'}")
    click.echo(f"  holder:    {w['holder'] or '-'}")
    click.echo(f"  owners:    {', '.join(members['owner']) or '-'}")
    click.echo(f"  operators: {', '.join(members['operator']) or '-'}")
    click.echo(f"  reviewers: {', '.join(members['reviewer']) or '-'}"
               + ("  (operators may also review)" if w["operators_may_review"] else ""))
    click.echo(f"  releases:  {', '.join(_release(r, releases[r]['columns']) for r in attached) or '-'}")
    for release in awaiting:
        asked = releases[release]
        click.echo(f"  awaiting consent: {_release(release, asked['columns'])},"
                   f" asked by {status['requested_by'].get(release, '-')}"
                   + (f": {asked['reason']}" if asked["reason"] else ""))
    if w["limits"]:
        click.echo(f"  limits:    {json.dumps(w['limits'], sort_keys=True)}")
    used = [f"{user} {u['used_mb']} MiB of {u['quota_mb']} MiB" for user, u in status["homes"].items()]
    click.echo(f"  disk:      {status['disk_mb']} MiB per home; used: {', '.join(used) or '-'}")
    if w["guard"]:
        click.echo(f"  guard:     {json.dumps(w['guard'], sort_keys=True)}")
    if w["export_policy"]:
        click.echo(f"  exports:   {json.dumps(w['export_policy'], sort_keys=True)} ({status['export_policy_label']})")


def _release(release: str, columns: dict | None) -> str:
    """A release as the listing names it, with its column view (table -> columns) if it has one."""
    if not columns:
        return release
    return f"{release} [{'; '.join(f'{t}: ' + ', '.join(cols) for t, cols in sorted(columns.items()))}]"
