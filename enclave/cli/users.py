"""``enclave user``: local accounts (there is no self sign-up)."""

from __future__ import annotations

import sys

import click

from .. import accounts
from ..db import ROLES
from . import main, pass_ctx


@main.group()
def user() -> None:
    """Manage accounts."""


@user.command("add")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice(ROLES),
              help="A role for the account; repeat for several.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from standard input instead of generating one.")
@pass_ctx
def add(ctx, name: str, roles: tuple[str, ...], password_stdin: bool) -> None:
    """Create account NAME. A generated password is printed once."""
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
    """Set NAME's password (and lift a lock-out). A generated password is printed once."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else accounts.generate_password()
    try:
        with ctx.recording() as record:
            accounts.set_password(ctx.settings, name, password, record)
    except accounts.AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"password set for {name}")
    if not password_stdin:
        click.echo(f"password: {password}")
