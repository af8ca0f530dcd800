"""The ``enclave`` command: provisioning and operations, run on the hub side by admins."""

from __future__ import annotations

import contextlib
import getpass
import os

import click

from ..host_state import keep_private

# Every command's module is imported to list it in ``enclave --help``: their heavy imports (the
# settings' schema, SQLAlchemy, JupyterHub, the checks) wait inside the commands that need them,
# so that a command takes only what it uses (benchmarks/cli.py; tests/test_cli_imports.py).


class _Context:
    def __init__(self) -> None:
        self._settings = None

    @property
    def settings(self):
        if self._settings is None:
            from ..settings import SettingsError, load_settings

            try:
                self._settings = load_settings()
            except SettingsError as exc:
                raise click.ClickException(str(exc)) from None
        return self._settings

    @contextlib.contextmanager
    def recording(self):
        """A change's record-keeper: ``record(action, workspace=, detail=)`` hands a record to the
        audit log as the one who ran the command (the hub's audit service, or one started for the
        while). A change calls it before it commits, so a record the log does not take leaves
        nothing changed."""
        from ..audit.client import AuditError, audit_service

        actor = operator_name()
        try:
            with audit_service(self.settings) as audit:
                def record(action: str, workspace: str | None = None, detail: dict | None = None) -> None:
                    audit.append("cli", actor, action, workspace=workspace, detail=detail)

                yield record
        except AuditError as exc:
            raise click.ClickException(f"nothing was changed: the audit log cannot record it ({exc})") from None


def operator_name() -> str:
    """Who runs the command, for the records it makes."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


pass_ctx = click.make_pass_decorator(_Context, ensure=True)


@click.group()
@click.pass_context
def main(ctx: click.Context) -> None:
    """Enclave: secure analysis sandboxes on JupyterHub."""
    keep_private()
    ctx.ensure_object(_Context)


from . import data, doctor, environment, exports, hub, users, workspaces  # noqa: E402  (subcommands register on ``main``)
from . import audit  # noqa: E402,F401  (``enclave audit``)

__all__ = ["main", "pass_ctx", "data", "environment", "exports", "hub", "users", "workspaces"]
