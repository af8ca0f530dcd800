"""The guard's rules, as data: what the operator's server lets through to the browser and back.

Everything the guard enforces is read from here: the per-workspace settings (with their defaults and
bounds), the file types the contents API serves or accepts, the output MIME allow-list and HTML
sanitiser rules, the kernel messages that may pass in each direction, the closed routes, the
JupyterLab plugins that are disabled and locked, and the Content-Security-Policy of the pages.
``docs/security-model.md`` explains each rule and names the test that attacks it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path


def N_(text: str) -> str:
    """Marks a text for translation, as :func:`enclave_guard.messages.N_` does (this module is loaded
    on its own too, by the tests: it imports nothing of the package)."""
    return text


# -- per-workspace settings -------------------------------------------------------------------

WORKSPACE_FILE = "/run/enclave/workspace.json"
EXPORTS_SOCKET = "/run/enclave/exports/intake.sock"
# This sandbox's receiver of audit records, on the hub side (mounted into the server only).
AUDIT_SOCKET = "/run/enclave/audit/receiver.sock"

MIB = 1024 * 1024
KIB = 1024


class GuardSettingsError(ValueError):
    """The workspace's ``guard`` settings hold a key or value the guard cannot use."""


@dataclass(frozen=True)
class AcroThresholds:
    """ACRO's disclosure-control parameters (names as in ACRO's ``default.yaml``)."""

    safe_threshold: int = 10
    safe_dof_threshold: int = 10
    safe_nk_n: int = 2
    safe_nk_k: float = 0.9
    safe_pratio_p: float = 0.1
    check_missing_values: bool = False
    zeros_are_disclosive: bool = True


@dataclass(frozen=True)
class GuardSettings:
    """The ``guard`` object of ``/run/enclave/workspace.json``; every key is optional."""

    # Largest code/text file or notebook the browser may upload or save, in MiB.
    upload_max_mb: float = 1.0
    # Largest notebook or text file whose content the contents API returns, in MiB.
    read_max_mb: float = 5.0
    # Output budgets on the kernel channel (and on saved notebooks): one message, one execution.
    output_message_max_kb: int = 512
    output_cell_max_kb: int = 2048
    # Budget of one kernel connection for what no request's budget holds: messages under a parent
    # the browser never sent, and the minimal replies that stand in for answers once their
    # request's budget is spent. Past it the guard closes the connection (see kernel_channel).
    output_connection_max_kb: int = 512
    # Largest file that may be submitted for export review, in MiB.
    export_max_mb: float = 16.0
    # The operator's egress budget in this workspace, in MiB per rolling hour and per rolling day:
    # every byte let through to the browser (kernel and terminal output, contents reads) counts, in
    # a ledger kept on the hub side. At 80 % a notice; at 100 % output is held (see egress.py). The
    # demo walk (data, tables, a chart, a model summary) shows about 62 kB: these are some 250 and
    # 1000 such walks (docs/security-model.md, "The egress budget").
    egress_hour_mb: float = 16.0
    egress_day_mb: float = 64.0
    # Terminals, each in a sandbox of its own beside the kernels' (same view: home and /data),
    # with input recorded and output held to the per-execution budget (an "execution" is a line).
    terminals: bool = False
    acro: AcroThresholds = field(default_factory=AcroThresholds)

    @property
    def upload_max_bytes(self) -> int:
        return int(self.upload_max_mb * MIB)

    @property
    def read_max_bytes(self) -> int:
        return int(self.read_max_mb * MIB)

    @property
    def output_message_max_bytes(self) -> int:
        return self.output_message_max_kb * KIB

    @property
    def output_cell_max_bytes(self) -> int:
        return self.output_cell_max_kb * KIB

    @property
    def output_connection_max_bytes(self) -> int:
        return self.output_connection_max_kb * KIB

    @property
    def export_max_bytes(self) -> int:
        return int(self.export_max_mb * MIB)

    @property
    def egress_budgets(self) -> dict[str, int]:
        """Bytes per rolling window, by the windows' names in the hub-side ledger."""
        return {"hour": int(self.egress_hour_mb * MIB), "day": int(self.egress_day_mb * MIB)}


# Bounds on each numeric setting: a workspace may tighten or loosen within these, never beyond.
_BOUNDS = {
    "upload_max_mb": (0.0, 20.0),
    "read_max_mb": (0.1, 50.0),
    "output_message_max_kb": (1, 16 * 1024),
    "output_cell_max_kb": (1, 64 * 1024),
    "output_connection_max_kb": (64, 16 * 1024),
    "export_max_mb": (0.001, 1024.0),
    "egress_hour_mb": (0.1, 10 * 1024.0),
    "egress_day_mb": (0.1, 100 * 1024.0),
}


def _check_type(where: str, value, expected: type):
    ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise GuardSettingsError(f"guard setting '{where}' must be {expected.__name__}, got {value!r}")
    return value


def parse_guard_settings(raw: dict | None) -> GuardSettings:
    """Validate a ``guard`` object; unknown keys and out-of-range values are errors naming the key."""
    raw = dict(raw or {})
    known = {f.name: f for f in fields(GuardSettings)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise GuardSettingsError(f"unknown guard setting(s): {', '.join(unknown)}")
    values = {}
    for name, value in raw.items():
        if name == "acro":
            values["acro"] = parse_acro(value)
            continue
        expected = bool if name == "terminals" else int if name.endswith("_kb") else float
        _check_type(name, value, expected)
        if expected is bool:
            values[name] = value
            continue
        low, high = _BOUNDS[name]
        if not low <= value <= high:
            raise GuardSettingsError(f"guard setting '{name}' must be within [{low}, {high}], got {value!r}")
        values[name] = value
    settings = GuardSettings(**values)
    if settings.output_message_max_kb > settings.output_cell_max_kb:
        raise GuardSettingsError("guard setting 'output_message_max_kb' exceeds 'output_cell_max_kb'")
    if settings.egress_hour_mb > settings.egress_day_mb:
        raise GuardSettingsError("guard setting 'egress_hour_mb' exceeds 'egress_day_mb'")
    if settings.egress_hour_mb * MIB < settings.output_cell_max_bytes:
        raise GuardSettingsError("guard setting 'egress_hour_mb' is less than one execution's budget"
                                 " ('output_cell_max_kb')")
    return settings


def parse_acro(raw) -> AcroThresholds:
    if not isinstance(raw, dict):
        raise GuardSettingsError(f"guard setting 'acro' must be an object, got {raw!r}")
    known = {f.name: f.type for f in fields(AcroThresholds)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise GuardSettingsError(f"unknown guard setting(s): {', '.join('acro.' + k for k in unknown)}")
    types = {"int": int, "float": float, "bool": bool}
    for name, value in raw.items():
        _check_type(f"acro.{name}", value, types[known[name]])
    return AcroThresholds(**raw)


@dataclass(frozen=True)
class Workspace:
    """What the server knows of its workspace (``/run/enclave/workspace.json``)."""

    user: str
    workspace: str
    releases: tuple[str, ...]
    guard: GuardSettings


def load_workspace(path: str | Path) -> Workspace:
    """Read the workspace file written by the hub; a missing or bad file stops the server."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise GuardSettingsError(f"workspace file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise GuardSettingsError(f"cannot read workspace file {path}: {exc}") from None
    for key in ("user", "workspace"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise GuardSettingsError(f"workspace file {path}: '{key}' must be a non-empty string")
    releases = data.get("releases", [])
    if not isinstance(releases, list) or not all(isinstance(r, str) for r in releases):
        raise GuardSettingsError(f"workspace file {path}: 'releases' must be a list of names")
    return Workspace(
        user=data["user"],
        workspace=data["workspace"],
        releases=tuple(releases),
        guard=parse_guard_settings(data.get("guard")),
    )


# -- files ------------------------------------------------------------------------------------

NOTEBOOK_SUFFIX = ".ipynb"
# Code and prose the browser may open, edit, save and upload. Data formats (.csv, .parquet,
# .xlsx, …) are deliberately absent: data reaches the operator only through a kernel, whose
# output is budgeted, and leaves only through export review.
TEXT_SUFFIXES = frozenset({
    ".py", ".r", ".jl", ".sql", ".sh",
    ".md", ".txt", ".rst",
    ".toml", ".yaml", ".yml", ".cfg", ".ini",
})


def suffix_of(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return ("." + name.rsplit(".", 1)[-1].lower()) if "." in name.lstrip(".") else ""


def is_text_path(path: str) -> bool:
    return suffix_of(path) in TEXT_SUFFIXES


def is_notebook_path(path: str) -> bool:
    return suffix_of(path) == NOTEBOOK_SUFFIX


# -- kernel outputs ---------------------------------------------------------------------------

# MIME types an output may carry to the browser. Everything else is removed from the bundle:
# application/javascript and text/markdown (scripts and links), application/pdf (a viewer with a
# download button), image/svg+xml (scripts and links inside SVG), widget and JSON payloads.
# text/html passes only after sanitising (below).
OUTPUT_MIME_ALLOWED = frozenset({"text/plain", "text/html", "image/png", "image/jpeg"})

# HTML sanitiser (nh3/ammonia) allow-list: enough for tables (pandas) and formatted text, and
# nothing that links, loads, submits or runs: no <a>, <img>, <form>, <script>, <style>,
# no style/href/src attributes, no URL schemes at all.
HTML_TAGS = frozenset({
    "table", "thead", "tbody", "tfoot", "tr", "th", "td", "caption", "colgroup", "col",
    "div", "span", "p", "br", "hr", "b", "i", "em", "strong", "code", "pre", "sub", "sup",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "small", "blockquote",
})
HTML_ATTRIBUTES = {
    "*": frozenset({"class"}),
    "table": frozenset({"border"}),
    "td": frozenset({"colspan", "rowspan", "align"}),
    "th": frozenset({"colspan", "rowspan", "align"}),
}

# Kernel messages, by direction and channel. Anything not listed is dropped and logged.
# In: no debugger, no comms (a comm lets kernel code push arbitrary data to the page).
INCOMING_MESSAGES = frozenset({
    "execute_request", "inspect_request", "complete_request", "history_request",
    "is_complete_request", "comm_info_request", "kernel_info_request", "shutdown_request",
    "interrupt_request", "input_reply",
})
OUTGOING_MESSAGES = {
    "iopub": frozenset({
        "status", "execute_input", "stream", "display_data", "execute_result",
        "update_display_data", "error", "clear_output",
    }),
    "shell": frozenset({
        "execute_reply", "inspect_reply", "complete_reply", "history_reply", "is_complete_reply",
        "comm_info_reply", "kernel_info_reply", "shutdown_reply", "interrupt_reply",
    }),
    "control": frozenset({"kernel_info_reply", "shutdown_reply", "interrupt_reply"}),
    "stdin": frozenset({"input_request"}),
}
# Every message to the browser counts, whole, against the budget of the request it answers (its
# parent): the per-execution budget for an execution, one message's budget for any other request
# (completion, help, history, kernel info…: a reply, not output). Requests are remembered per
# kernel, the newest REMEMBERED_REQUESTS of them; a message under any other parent counts against
# its connection's budget (output_connection_max_kb).
EXECUTION_REQUESTS = frozenset({"execute_request"})
REMEMBERED_REQUESTS = 1024
# Messages that reach the browser however large, as minimal stand-ins when over budget: JupyterLab
# waits for each request's reply and for the "idle" status that ends it, and the kernel waits for
# the answer to its input_request. Every other message is output, dropped over budget.
NEVER_DROPPED = frozenset({"status"}).union(*(OUTGOING_MESSAGES[c] for c in ("shell", "control", "stdin")))
# Part of an execution's budget its output may not use, kept for the reply and status messages
# that end it (about 1.5 KiB), so that output filling a cell never has them replaced.
ANSWER_RESERVE_BYTES = 4 * KIB

# -- routes -----------------------------------------------------------------------------------

# Server routes that are closed outright (relative to the base URL; tornado anchors them), and what
# they are, in the words of the refusal (translated where it is shown: .handlers.ClosedHandler).
# /files/ is also removed at its source (ContentsManager.files_handler_class = None).
CLOSED_ROUTES = {
    r"files/.*": N_("file downloads"),
    r"view/.*": N_("file views"),
    r"nbconvert/.*": N_("notebook conversion"),
    r"api/nbconvert.*": N_("notebook conversion"),
    r"api/events": N_("client-sent events"),
    r"proxy/.*": N_("proxied ports"),
    r"lab/api/extensions.*": N_("the extension manager"),
    r"lab/api/plugins.*": N_("the plugin manager"),
}

# Closed as well unless the workspace enables terminals.
TERMINAL_ROUTES = {
    r"api/terminals.*": N_("terminals"),
    r"terminals/.*": N_("terminals"),
}


def closed_routes(settings: GuardSettings) -> dict[str, str]:
    return CLOSED_ROUTES | ({} if settings.terminals else TERMINAL_ROUTES)


# Server extensions that may load. Any other enabled extension (say, a package that ships a
# jupyter_server_config.d file) stops the server. enclave_singleuser is the hub launcher itself.
SERVER_EXTENSIONS = frozenset({"enclave_guard", "enclave_singleuser", "jupyterlab"})
TERMINAL_EXTENSION = "jupyter_server_terminals"


def server_extensions(settings: GuardSettings) -> frozenset[str]:
    return SERVER_EXTENSIONS | ({TERMINAL_EXTENSION} if settings.terminals else set())


# -- JupyterLab --------------------------------------------------------------------------------

# Disabled and locked on every page load (server-side page config), whatever labconfig says.
# IDs checked against JupyterLab 4.6.6; a package name disables all of its plugins.
DISABLED_LAB_PLUGINS = (
    "@jupyterlab/docmanager-extension:download",
    "@jupyterlab/docmanager-extension:open-browser-tab",
    "@jupyterlab/filebrowser-extension:download",
    "@jupyterlab/filebrowser-extension:open-browser-tab",
    "@jupyterlab/filebrowser-extension:share-file",
    "@jupyterlab/filebrowser-extension:open-url",
    "@jupyterlab/notebook-extension:export",
    "@jupyterlab/notebook-extension:copy-output",
    "@jupyterlab/apputils-extension:print",
    "@jupyterlab/extensionmanager-extension",
    "@jupyterlab/pluginmanager-extension",
    "@jupyterlab/javascript-extension",
    "@jupyterlab/pdf-extension",
    "@jupyterlab/htmlviewer-extension",
    "@jupyterlab/debugger-extension",
    # Asks to fetch news from the Internet, which the sandbox cannot reach and the CSP blocks.
    "@jupyterlab/apputils-extension:announcements",
    # Asks the closed api/nbconvert for export formats whenever a notebook opens (an uncaught
    # "notebook conversion are closed" error), to offer raw cells' formats.
    "@jupyterlab/notebook-extension:update-raw-mimetype",
    # Language servers: the jupyter_lsp server extension does not load (lsp/status answers 404).
    # The notebook's and editor's LSP plugins require the LSP extension's services, so go with it.
    "@jupyterlab/lsp-extension",
    "@jupyterlab/notebook-extension:language-server",
    "@jupyterlab/fileeditor-extension:language-server",
    # Lab workspaces (layouts): "Export Workspace…" downloads a file through the browser (and came
    # first when searching "export"); importing reads one from the home. Not Enclave's workspaces.
    "@jupyterlab/workspaces-extension",
    # Settings > Language: the display language is the person's choice on the hub's home page (the
    # server's app settings, enclave.sandbox.policy.lab_overrides); a choice made here would be kept
    # in Lab's user settings and win over it for good. The translator itself (…:translator) stays.
    "@jupyterlab/translation-extension:plugin",
)

TERMINAL_LAB_PLUGINS = ("@jupyterlab/terminal-extension",)


def disabled_lab_plugins(settings: GuardSettings) -> tuple[str, ...]:
    return DISABLED_LAB_PLUGINS + (() if settings.terminals else TERMINAL_LAB_PLUGINS)


# The Lab page's Content-Security-Policy. JupyterLab needs inline styles and 'unsafe-eval'
# (its JSON-schema validator compiles schemas); everything that could carry data elsewhere is
# held to this origin: fetch/XHR/websocket, form posts, frames, workers, base URL.
CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self' 'unsafe-inline' 'unsafe-eval'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "form-action 'self'",
    "frame-src 'self'",
    "worker-src 'self' blob:",
    "object-src 'none'",
    "base-uri 'self'",
    "frame-ancestors 'self'",
))
