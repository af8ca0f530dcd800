"""``enclave user``: local accounts (there is no self sign-up)."""

from __future__ import annotations

import sys

import click

from ..rbac import ACCOUNT_ROLES
from . import main, pass_ctx


@main.group()
def user() -> None:
    """Manage accounts."""


@user.command("add")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice(ACCOUNT_ROLES),
              help="A role for the account; repeat for several.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from standard input instead of generating one.")
@pass_ctx
def add(ctx, name: str, roles: tuple[str, ...], password_stdin: bool) -> None:
    """Create account NAME. A generated password is printed once."""
    from .. import accounts

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = accounts.generate_password()
    try:
        with ctx.recording() as record:
            accounts.add_user(ctx.settings, name, list(roles), password, record)
    except accounts.AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {name} ({', '.join(sorted(roles))})")
    if not password_stdin:
        click.echo(f"password: {password}")


@user.command("set-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@pass_ctx
def set_password(ctx, name: str, password_stdin: bool) -> None:
    """Set NAME's password (and clear its login throttles). A generated password is printed once."""
    from .. import accounts

    password = sys.stdin.readline().rstrip("\n") if password_stdin else accounts.generate_password()
    try:
        with ctx.recording() as record:
            accounts.set_password(ctx.settings, name, password, record)
    except accounts.AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"password set for {name}")
    if not password_stdin:
        click.echo(f"password: {password}")


@user.command("list")
@pass_ctx
def list_(ctx) -> None:
    """List accounts: name, roles and when each was created."""
    from .. import accounts

    found = accounts.all_accounts(ctx.settings)
    if not found:
        click.echo("no accounts")
        return
    click.echo(f"{'ACCOUNT':<32} {'ROLES':<26} CREATED")
    for a in found:
        click.echo(f"{a.name:<32} {', '.join(a.roles):<26} {a.created_at.isoformat(timespec='seconds')}")


@user.command("throttles")
@pass_ctx
def throttles(ctx) -> None:
    """List the clients whose failed logins are on record: account, client, failures, and until when
    the client's logins for the account are refused ('-': they are not)."""
    from .. import logins

    rows = logins.throttles(ctx.settings)
    if not rows:
        click.echo("no failed logins on record")
        return
    click.echo(f"{'ACCOUNT':<32} {'CLIENT':<40} {'FAILURES':>8}  UNTIL")
    for t in rows:
        until = t.until.isoformat(timespec="seconds") if t.until else "-"
        click.echo(f"{t.username:<32} {t.client:<40} {t.failures:>8}  {until}")


@user.command("clear-throttle")
@click.argument("name")
@click.option("--client", help="Forget the failures of this client address only (as 'enclave user throttles' shows it).")
@pass_ctx
def clear_throttle(ctx, name: str, client: str | None) -> None:
    """Forget NAME's failed logins, from every client or one: its throttles end."""
    from .. import accounts

    try:
        with ctx.recording() as record:
            forgotten = accounts.clear_throttle(ctx.settings, name, client, record)
    except accounts.AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"forgot {forgotten} failed login(s) of {name}" + (f" from {client}" if client else ""))
