"""The ``enclave`` command: provisioning and operations, run on the hub side by admins."""

from __future__ import annotations

import contextlib
import getpass
import os

import click

from ..host_state import keep_private
from ..i18n import N_
from .language import CommandError, EnclaveGroup, refusal

# Every command's module is imported to list it in ``enclave --help``: their heavy imports (the
# settings' schema, SQLAlchemy, JupyterHub, the checks) wait inside the commands that need them,
# so that a command takes only what it uses (benchmarks/cli.py; tests/test_cli_imports.py).


class _Context:
    def __init__(self) -> None:
        self._settings = None
        # The home of the provisioning service this command started for the while, once it has.
        self._service_home = None

    @property
    def settings(self):
        if self._settings is None:
            from ..settings import SettingsError, load_settings

            try:
                self._settings = load_settings()
            except SettingsError as exc:
                raise CommandError(exc.message) from None
        return self._settings

    def api(self, method: str, path: str, body: dict | None = None):
        """``method`` ``path`` of the provisioning API (:mod:`enclave.provisioning.client`), as the
        one who runs the command: the JSON it answers, or its refusal as the command's error.

        The hub's provisioning service answers when the hub runs: the command then loads neither
        the settings nor the service layer. When it does not, the command starts one for the while
        (the slow path: it loads the settings) and sends the request there; that service stops
        when the command ends."""
        from ..provisioning import client

        try:
            try:
                return client.call(method, path, body, home=self._service_home)
            except client.ServiceNotRunning:
                if self._service_home is not None:
                    raise
                root = click.get_current_context().find_root()
                root.with_resource(client.service_for_the_while(self.settings))
                self._service_home = self.settings.home
                return client.call(method, path, body, home=self._service_home)
        except client.ProvisioningError as exc:
            raise CommandError(exc.message) from None

    @contextlib.contextmanager
    def recording(self):
        """A change's record-keeper (:class:`enclave.audit.client.Recorder`), handing records to the
        audit log as the one who ran the command (the hub's audit service, or one started for the
        while). A change calls it before it commits, so a record the log does not take leaves
        nothing changed."""
        from ..audit.client import AuditError, Recorder, audit_service

        try:
            with audit_service(self.settings) as audit:
                yield Recorder(audit, "cli", operator_name())
        except AuditError as exc:
            raise refusal("audit.unavailable", N_("nothing was changed: the audit log cannot record it (%(reason)s)"),
                          reason=str(exc)) from None


def operator_name() -> str:
    """Who runs the command, for the records it makes."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


pass_ctx = click.make_pass_decorator(_Context, ensure=True)


@click.group(cls=EnclaveGroup)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Enclave: secure analysis sandboxes on JupyterHub."""
    keep_private()
    ctx.ensure_object(_Context)


from . import apply, data, doctor, environment, exports, hub, users, workspaces  # noqa: E402  (subcommands register on ``main``)
from . import audit  # noqa: E402,F401  (``enclave audit``)

__all__ = ["main", "pass_ctx", "data", "environment", "exports", "hub", "users", "workspaces"]
