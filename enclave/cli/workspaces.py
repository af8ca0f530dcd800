"""``enclave workspace``: workspaces, their members and attached releases."""

from __future__ import annotations

import json

import click

from ..rbac import WORKSPACE_ROLES
from . import main, operator_name, pass_ctx


def _run(name: str, *args, ctx=None):
    """Run ``enclave.workspaces.<name>``: a change (recorded in the audit log when ``ctx`` is given)
    or a read; errors as CLI errors."""
    from .. import workspaces as ws
    from ..releases import ReleaseError

    fn = getattr(ws, name)
    try:
        if ctx is None:
            return fn(*args)
        with ctx.recording() as record:
            return fn(*args, record=record)
    except (ws.WorkspaceError, ReleaseError) as exc:
        raise click.ClickException(str(exc)) from None


@main.group()
def workspace() -> None:
    """Manage workspaces."""


@workspace.command("create")
@click.argument("name")
@pass_ctx
def create(ctx, name: str) -> None:
    """Create workspace NAME."""
    _run("create", ctx.settings, name, ctx=ctx)
    click.echo(f"created workspace {name}")


@workspace.command("add-member")
@click.argument("workspace_name", metavar="WS")
@click.argument("username", metavar="USER")
@click.option("--role", required=True, type=click.Choice(WORKSPACE_ROLES))
@pass_ctx
def add_member(ctx, workspace_name: str, username: str, role: str) -> None:
    """Make USER an operator or reviewer of workspace WS."""
    _run("add_member", ctx.settings, workspace_name, username, role, ctx=ctx)
    click.echo(f"{username} is now a {role} of {workspace_name}")


@workspace.command("attach")
@click.argument("workspace_name", metavar="WS")
@click.argument("release")
@click.option("--columns", help="Only these columns (comma-separated, 'col' or 'table.col'): a column view.")
@click.option("--reason", default="", help="Why the workspace needs this data (kept in its data supply manifest).")
@pass_ctx
def attach(ctx, workspace_name: str, release: str, columns: str | None, reason: str) -> None:
    """Make RELEASE (or some of its columns) visible, read-only, under /data in WS's sandboxes."""
    cols = [c.strip() for c in columns.split(",") if c.strip()] if columns is not None else None
    if cols is not None and not cols:
        raise click.BadParameter("give at least one column", param_hint="--columns")
    _run("attach", ctx.settings, workspace_name, release, operator_name(), cols, reason, ctx=ctx)
    what = f"columns {', '.join(cols)} of {release}" if cols else release
    click.echo(f"attached {what} to {workspace_name} (mounted at /data/{release})")


def _key_values(items: tuple[str, ...]) -> dict[str, str]:
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.ClickException(f"'{item}' is not KEY=VALUE")
        values[key] = value
    return values


@workspace.command("set-limits")
@click.argument("workspace_name", metavar="WS")
@click.argument("limits", nargs=-1, required=True, metavar="KEY=VALUE...")
@pass_ctx
def set_limits(ctx, workspace_name: str, limits: tuple[str, ...]) -> None:
    """Override sandbox limits for WS (memory_mb, pids, cpus, max_file_mb, disk_mb: each home's
    quota, tmp_mb: each sandbox's /tmp). A disk quota below what a home uses is refused."""
    view = _run("set_limits", ctx.settings, workspace_name, _key_values(limits), ctx=ctx)
    click.echo(f"limits of {workspace_name}: {view.limits} (from each sandbox's next start)")


@workspace.command("set-guard")
@click.argument("workspace_name", metavar="WS")
@click.argument("items", nargs=-1, required=True, metavar="KEY=VALUE...")
@pass_ctx
def set_guard(ctx, workspace_name: str, items: tuple[str, ...]) -> None:
    """Change what WS's servers let through: terminals, upload_max_mb, read_max_mb,
    output_message_max_kb, output_cell_max_kb, output_connection_max_kb, export_max_mb. Values are
    JSON (true, 2, 0.5)."""
    values = {}
    for key, value in _key_values(items).items():
        try:
            values[key] = json.loads(value)
        except ValueError:
            values[key] = value  # the guard's check names the key and the type it needs
    view = _run("set_guard", ctx.settings, workspace_name, values, ctx=ctx)
    click.echo(f"guard settings of {workspace_name}: {json.dumps(view.guard, sort_keys=True)} (from each server's next start)")


@workspace.command("list")
@pass_ctx
def list_(ctx) -> None:
    """List workspaces with their members, releases, and each home's disk use of its quota."""
    for w in _run("all_workspaces", ctx.settings):
        _show(ctx.settings, w)


@workspace.command("show")
@click.argument("workspace_name", metavar="WS")
@pass_ctx
def show(ctx, workspace_name: str) -> None:
    """Show workspace WS: its members, releases, limits, guard settings and homes' disk use."""
    _show(ctx.settings, _run("get", ctx.settings, workspace_name))


def _show(settings, w) -> None:
    from .. import workspaces as ws

    quota = w.effective_limits(settings.sandbox.limits).disk_mb
    homes = ws.home_usages(settings, w.name)
    click.echo(w.name)
    click.echo(f"  operators: {', '.join(sorted(w.operators)) or '-'}")
    click.echo(f"  reviewers: {', '.join(sorted(w.reviewers)) or '-'}")
    click.echo(f"  releases:  {', '.join(w.releases) or '-'}")
    if w.limits:
        click.echo(f"  limits:    {json.dumps(w.limits, sort_keys=True)}")
    used = [f"{user} {u.used_mb} MiB of {u.quota_mb} MiB" for user, u in homes.items()]
    click.echo(f"  disk:      {quota} MiB per home; used: {', '.join(used) or '-'}")
    if w.guard:
        click.echo(f"  guard:     {json.dumps(w.guard, sort_keys=True)}")
