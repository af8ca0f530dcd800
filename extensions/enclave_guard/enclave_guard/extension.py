"""The guard's server extension.

Loaded from the read-only environment's system config (``etc/jupyter/jupyter_server_config.json``,
which also sets the contents manager, the kernel websocket class, the terminal manager, the server
extension allow-list and the Lab settings). At load it
checks that those settings are in force and stops the server if any is not: a guard that is
half-installed must not serve.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from jupyter_server.utils import url_path_join
from tornado.ioloop import PeriodicCallback
from traitlets import Bool, Unicode, default
from traitlets.config import LoggingConfigurable

from jupyter_server.base.handlers import APIHandler
from jupyter_server.services.contents import handlers as contents_handlers
from jupyter_server.services.kernels import handlers as kernels_handlers
from jupyter_server.services.sessions import handlers as sessions_handlers

from . import messages, policy
from .audit import AuditTrail
from .contents import GuardContentsManager
from .egress import BATCH_SECONDS, EgressBudget
from .exports import package_environment
from .handlers import (
    ChecksHandler,
    ClosedHandler,
    ExportRequestHandler,
    ExportsHandler,
    ExportTransitionHandler,
    ExportVersionsHandler,
    SealedRunReleasesHandler,
    SealedRunsHandler,
    SealedRunWithdrawHandler,
    UploadPolicyHandler,
)
from .intake import Intake
from .kernel_channel import GuardedKernelConnection
from .kernels import GuardKernelSpecManager
from .refusals import CodedErrors
from .terminals import GuardedTerminalManager


class EnclaveGuard(LoggingConfigurable):
    """Where the guard finds its workspace, its audit receiver and the export review intake."""

    workspace_file = Unicode(policy.WORKSPACE_FILE, help="The workspace's settings, written by the hub.").tag(config=True)
    audit_socket = Unicode(policy.AUDIT_SOCKET, help="This sandbox's receiver of audit records (hub side).").tag(config=True)
    exports_socket = Unicode(policy.EXPORTS_SOCKET, help="The export review service's intake socket.").tag(config=True)
    exports_url = Unicode(
        help="The export review service's pages (on its own origin), where operators follow their requests."
    ).tag(config=True)

    egress_accounting = Bool(
        True, help="Charge output to the operator's egress budget. Off only to measure what the accounting"
                   " costs (benchmarks/guard_overhead.py): the server's command line and config are the hub's."
    ).tag(config=True)

    @default("exports_url")
    def _exports_url_from_the_hub(self):
        return os.environ.get("ENCLAVE_EXPORTS_URL", "")


@dataclass
class Guard:
    workspace: policy.Workspace
    workspace_file: str
    audit: AuditTrail
    # The operator's egress budget in this workspace (kept on the hub side).
    egress: EgressBudget
    intake: Intake
    exports_url: str
    packages: dict[str, str]

    def record_execution(self, **fields) -> dict:
        return self.audit.record_execution(**fields)


class GuardNotInForce(RuntimeError):
    """A setting the guard depends on is not what the guard's config sets."""


def _require(condition: bool, what: str):
    if not condition:
        raise GuardNotInForce(f"Enclave guard: {what}; the server must not start like this")


def _check_configuration(serverapp, settings: policy.GuardSettings):
    _require(isinstance(serverapp.contents_manager, GuardContentsManager),
             "ServerApp.contents_manager_class is not enclave_guard.contents.GuardContentsManager")
    _require(issubclass(serverapp.kernel_websocket_connection_class, GuardedKernelConnection),
             "ServerApp.kernel_websocket_connection_class is not the guarded connection")
    _require(isinstance(serverapp.kernel_spec_manager, GuardKernelSpecManager),
             "ServerApp.kernel_spec_manager_class is not enclave_guard.kernels.GuardKernelSpecManager")
    _require(bool(serverapp.kernel_spec_manager.allowed_kernelspecs), "KernelSpecManager.allowed_kernelspecs is empty")
    _require(serverapp.contents_manager.files_handler_class is None,
             "ContentsManager.files_handler_class is set: /files/ would be served")
    _require(not serverapp.contents_manager.allow_hidden, "ContentsManager.allow_hidden is on")
    if settings.terminals:
        _require(serverapp.terminals_enabled, "the workspace allows terminals but ServerApp.terminals_enabled is off")
        for app in serverapp.extension_manager.extension_apps.get(policy.TERMINAL_EXTENSION, set()):
            _require(issubclass(app.terminal_manager_class, GuardedTerminalManager),
                     "TerminalsExtensionApp.terminal_manager_class is not the guarded one: a shell would run in the server")
    else:
        _require(not serverapp.terminals_enabled, "terminals are enabled but the workspace does not allow them")
    _require(not serverapp.disable_check_xsrf, "XSRF checks are disabled")
    # JupyterLab serves these folders' files back (settings keep their raw text) and reads its
    # application settings (overrides, page config) from app_settings_dir: kernel code must not be
    # able to write them, so they may not be in the home.
    home = os.path.realpath(serverapp.root_dir)
    lab = serverapp.extension_manager.extension_apps.get("jupyterlab", set())
    for app in lab:
        for trait in ("user_settings_dir", "workspaces_dir", "app_settings_dir"):
            where = os.path.realpath(getattr(app, trait))
            _require(not (where == home or where.startswith(home + os.sep)),
                     f"LabApp.{trait} ({where}) is in the home, where kernel code can write")
    loaded = {name for name, ext in serverapp.extension_manager.extensions.items() if ext.enabled}
    allowed = policy.server_extensions(settings)
    _require(loaded <= allowed, f"server extensions outside the allow-list are enabled: {sorted(loaded - allowed)}")


def _enforce_page_config(hook, settings: policy.GuardSettings):
    """Wrap a page_config_hook so the plugins the guard disables stay disabled and locked."""
    if getattr(hook, "_enclave_guard", False):
        return hook

    closed_plugins = policy.disabled_lab_plugins(settings)

    def guarded(handler, page_config):
        if hook is not None:
            page_config = hook(handler, page_config)
        disabled = page_config.get("disabledExtensions")
        disabled = list(disabled) if isinstance(disabled, list) else [k for k, v in (disabled or {}).items() if v]
        page_config["disabledExtensions"] = sorted(set(disabled) | set(closed_plugins))
        locked = page_config.get("lockedExtensions")
        locked = set(locked) if isinstance(locked, list) else {k for k, v in (locked or {}).items() if v}
        page_config["lockedExtensions"] = sorted(locked | set(closed_plugins))
        return page_config

    guarded._enclave_guard = True
    return guarded


def _coded_routes(base: str) -> list[tuple]:
    """jupyter_server's contents, sessions and kernels API routes, each API handler made to answer the
    guard's refusals with their code (:class:`.refusals.CodedErrors`). Taken before the core routes,
    so all of the contents API's are, in their order (its file route would otherwise take a
    checkpoint's or trust's path); the sessions' and kernels' API routes match only their own paths."""
    rules = []
    for module in (contents_handlers, sessions_handlers, kernels_handlers):
        for pattern, handler, *kwargs in module.default_handlers:
            if isinstance(handler, type) and issubclass(handler, APIHandler):
                handler = type(handler.__name__, (CodedErrors, handler), {"__module__": __name__})
            elif module is not contents_handlers:
                continue
            rules.append((url_path_join(base, pattern), handler, *kwargs))
    return rules


def _load_jupyter_server_extension(serverapp):
    config = EnclaveGuard(parent=serverapp)
    # The guard's refusals and notices in the language JupyterLab shows (the person's, from the hub).
    messages.set_locale_from_lab(serverapp)
    workspace = policy.load_workspace(config.workspace_file)
    _check_configuration(serverapp, workspace.guard)
    _require(config.exports_url.startswith(("http://", "https://")),
             f"EnclaveGuard.exports_url ($ENCLAVE_EXPORTS_URL) is not a URL: {config.exports_url!r}")
    audit = AuditTrail(config.audit_socket, workspace.user, workspace.workspace, serverapp.log)
    guard = Guard(
        workspace=workspace,
        workspace_file=config.workspace_file,
        audit=audit,
        egress=EgressBudget(audit, workspace.guard.egress_budgets, metered=config.egress_accounting),
        intake=Intake(config.exports_socket),
        exports_url=config.exports_url,
        packages=package_environment(),
    )
    # What was let through and not yet reported is charged within seconds, however quiet the server.
    PeriodicCallback(lambda: guard.egress.report_due("kernel_output"), BATCH_SECONDS * 1000).start()
    web_app = serverapp.web_app
    web_app.settings["enclave_guard"] = guard
    serverapp.contents_manager.guard = guard

    # The Lab page's CSP; jupyterhub-singleuser only sets a default when none is there.
    web_app.settings.setdefault("headers", {})["Content-Security-Policy"] = policy.CONTENT_SECURITY_POLICY

    base = serverapp.base_url
    rules = [(url_path_join(base, route), ClosedHandler, {"what": what})
             for route, what in policy.closed_routes(workspace.guard).items()]
    rules += [
        (url_path_join(base, "enclave/api/exports"), ExportsHandler),
        (url_path_join(base, "enclave/api/exports/checks"), ChecksHandler),
        (url_path_join(base, r"enclave/api/exports/([0-9a-f]{32})"), ExportRequestHandler),
        (url_path_join(base, r"enclave/api/exports/([0-9a-f]{32})/files"), ExportVersionsHandler),
        (url_path_join(base, r"enclave/api/exports/([0-9a-f]{32})/transitions"), ExportTransitionHandler),
        (url_path_join(base, "enclave/api/sealed-runs"), SealedRunsHandler),
        (url_path_join(base, "enclave/api/sealed-runs/releases"), SealedRunReleasesHandler),
        (url_path_join(base, r"enclave/api/sealed-runs/([0-9a-f]{32})/withdraw"), SealedRunWithdrawHandler),
        (url_path_join(base, "enclave/api/uploads"), UploadPolicyHandler),
        *_coded_routes(base),
    ]
    # Extension rules are inserted before the core ones, so these win over any core route.
    web_app.add_handlers(".*$", rules)

    # jupyterhub-singleuser sets its page_config_hook after extensions load: wrap it then too.
    web_app.settings["page_config_hook"] = _enforce_page_config(web_app.settings.get("page_config_hook"), workspace.guard)

    def rewrap():
        web_app.settings["page_config_hook"] = _enforce_page_config(web_app.settings.get("page_config_hook"), workspace.guard)

    serverapp.io_loop.add_callback(rewrap)
    serverapp.log.info(
        "Enclave guard loaded for %s/%s (user %s); audit records to %s; messages in %s",
        workspace.workspace, os.environ.get("JUPYTERHUB_SERVER_NAME", ""), workspace.user, config.audit_socket,
        messages.current_locale(),
    )

