"""The ``enclave`` command: provisioning and operations, run on the hub side by admins."""

from __future__ import annotations

import click

from ..settings import SettingsError, load_settings


class _Context:
    def __init__(self) -> None:
        self._settings = None

    @property
    def settings(self):
        if self._settings is None:
            try:
                self._settings = load_settings()
            except SettingsError as exc:
                raise click.ClickException(str(exc)) from None
        return self._settings


pass_ctx = click.make_pass_decorator(_Context, ensure=True)


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """Enclave: secure analysis sandboxes on JupyterHub."""
    ctx.ensure_object(_Context)


from . import data, exports, hub, users, workspaces  # noqa: E402  (subcommands register on ``main``)
from . import audit  # noqa: E402,F401  (``enclave audit``)

__all__ = ["main", "pass_ctx", "data", "exports", "hub", "users", "workspaces"]
