"""The ``enclave`` command's way into the provisioning service: its root-only unix socket.

The CLI's listing and provisioning commands go through the running service instead of importing
the service layer (SQLAlchemy, pydantic, the audit client...), so that they start within issue #13's
budget (``benchmarks/cli.py``). This module uses the standard library and :mod:`enclave.i18n` alone
(which imports Babel only to translate): importing it imports no SQLAlchemy, pydantic or tornado,
and it reads no settings.

    from enclave.provisioning.client import ProvisioningError, call, path

    workspaces = call("GET", "/workspaces")                     # the JSON the API answers
    ws = call("POST", "/workspaces", {"name": "census", "purpose": "人口普查分析"})
    call("POST", path("workspaces", "census", "members"), {"user": "alice", "role": "operator"})
    call("DELETE", path("workspaces", "census", "releases", "people@1"))
    try:
        call("GET", path("workspaces", "beta"))
    except ProvisioningError as exc:                             # the service's refusal, with its code:
        print(exc.code, exc.message.render("zh_CN"))             # workspace.unknown 不存在名为 'beta' 的工作空间

Paths are those of the OpenAPI document (``GET /openapi.json`` on the socket, or
``/services/provisioning/api/openapi.json`` through the hub), without the ``/api`` prefix; build
them with :func:`path`, which quotes each segment. The socket serves one operation more, which the
HTTP API deliberately does not (an admin's token must not take over another account and act under
its name; root on the hub host can do anything anyway): ``PUT /accounts/{username}/password`` with
``{"password": ...}``, or ``{}`` for a generated one, answered once as ``{"name", "password"}``
(``enclave user set-password``; :data:`enclave.provisioning.openapi.CLI_ONLY_PATHS`).

``POST /apply`` takes a whole declarative file (``{"file": name, "text": ..., "dry_run": bool}``,
at most :data:`APPLY_BODY_LIMIT`; every other body at most 64 KiB); its refusal, 422, names every
problem, in :attr:`ProvisioningError.answer` (``problems``) as well as in the message. The request is made as the OS user who ran the
command (``SUDO_USER``, else the login name), recorded as such (source ``cli``) in the audit log.

A refusal is a :class:`ProvisioningError` whose ``message`` is the service's refusal as an
:class:`enclave.i18n.Message`, rebuilt from the ``code``, ``text`` and ``params`` of its JSON answer:
the command shows it in its user's language with its stable code, and decides on the code, never on
the English. A refusal the service gave no code (an HTTP error: authentication, an unknown route, a
body the schema refuses) is the code ``provisioning.refused`` around the service's English words.

Only root can connect: the socket is in ``$ENCLAVE_HOME/run/provisioning``, mode 0700, owned by
root. The service runs while the hub runs; when it does not, :func:`call` raises
:class:`ServiceNotRunning`, and :func:`service_for_the_while` starts one for the while (the ``enclave``
command does: first-time setup runs before any hub). The socket's home is ``ENCLAVE_HOME``, else
the ``home`` of the settings file (``ENCLAVE_CONFIG``, default ``./var/enclave.toml``), else
``./var``: as the settings find it, read without loading them.
"""

from __future__ import annotations

import contextlib
import getpass
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from ..i18n import N_, Message

if TYPE_CHECKING:  # only the type: loading the settings is the slow path's alone
    from ..settings import Settings

# The header naming who runs the command (enclave.provisioning.app.ACTOR_HEADER).
ACTOR_HEADER = "X-Enclave-Actor"
DEFAULT_TIMEOUT = 120.0
# The body of ``POST /apply`` (a whole declarative file, as JSON), at most; the service refuses more.
APPLY_BODY_LIMIT = 4 * 2**20
# How long a service started for the while may take to answer, and to stop; how long a command
# waits for another one's service for the while to be done.
START_TIMEOUT = 60.0
LOCK_TIMEOUT = 120.0


class ProvisioningError(Exception):
    """The service refused the request, or could not be reached. ``message``: why, as a message
    with a stable code (see the module's docstring); ``str()``: the service's error as it wrote it
    (English). ``status``: the HTTP status it answered; ``answer``: the JSON body of its refusal."""

    def __init__(self, message: Message, status: int | None = None, answer: dict | None = None,
                 words: str | None = None) -> None:
        super().__init__(words if words is not None else str(message))
        self.message = message
        self.status = status
        self.answer = answer or {}

    @property
    def code(self) -> str:
        return self.message.code

    @classmethod
    def answered(cls, status: int, reason: str, answer) -> ProvisioningError:
        """The service's refusal: its JSON answer's message with a code, or its words under
        ``provisioning.refused`` when it gave none."""
        refusal = answer if isinstance(answer, dict) else {}
        code, text, params, words = (refusal.get(key) for key in ("code", "text", "params", "error"))
        if isinstance(code, str) and isinstance(text, str) and isinstance(params, dict):
            message = Message(code, text, params)
        elif isinstance(words, str) and words:
            message = Message("provisioning.refused", N_("the provisioning service refused: %(words)s"), {"words": words})
        else:  # no JSON refusal: a proxy's answer, a service that broke
            message = Message("provisioning.refused", N_("the provisioning service answered %(status)s %(reason)s"),
                              {"status": status, "reason": reason})
        return cls(message, status, refusal, words if isinstance(words, str) and words else str(message))


class ServiceNotRunning(ProvisioningError):
    """Nothing serves the socket: the request was not sent (so it may be sent again)."""


def enclave_home() -> Path:
    """Where Enclave's state is, as :mod:`enclave.settings` finds it (the environment beats the
    settings file), without loading the settings: ``ENCLAVE_HOME``, else the settings file's
    ``home``, else ``./var``. A settings file that cannot be read is left to the settings to name."""
    home = os.environ.get("ENCLAVE_HOME")
    if home is None:
        config = Path(os.environ.get("ENCLAVE_CONFIG") or Path("var") / "enclave.toml")
        try:
            with config.open("rb") as f:
                import tomllib  # only when there is a settings file

                home = tomllib.load(f).get("home")
        except (OSError, ValueError):
            home = None
    return Path(home if isinstance(home, str) else "var").expanduser().resolve()


def socket_path(home: str | os.PathLike | None = None) -> Path:
    """The service's CLI socket under ``home`` (default: :func:`enclave_home`), made absolute."""
    home = Path(home).expanduser().resolve() if home is not None else enclave_home()
    return home / "run" / "provisioning" / "cli.sock"


def path(*segments: str) -> str:
    """An API path from its segments, each quoted (a release's ``@``, a purpose's Chinese)."""
    return "/" + "/".join(quote(s, safe="@") for s in segments)


def actor() -> str:
    """Who runs the command: the user who ran ``sudo``, else the login name."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (the services' root-only sockets for the ``enclave`` command)."""

    def __init__(self, socket_file: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_file = socket_file

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        try:
            self.sock.connect(str(self.socket_file))
        except OSError:
            self.sock.close()
            self.sock = None
            raise


def call(method: str, api_path: str, body: dict | None = None, *, home: str | os.PathLike | None = None,
         as_user: str | None = None, timeout: float = DEFAULT_TIMEOUT):
    """``method`` ``api_path`` (``/workspaces/census``) with the JSON ``body``; the JSON answered.
    Raises :class:`ProvisioningError` with the service's error text when it refuses."""
    where = socket_path(home)
    connection = UnixHTTPConnection(where, timeout)
    payload = json.dumps(body, ensure_ascii=False).encode() if body is not None else None
    headers = {ACTOR_HEADER: as_user or actor(), "Accept": "application/json"}
    if payload is not None:
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, "/api" + api_path, body=payload, headers=headers)
        response = connection.getresponse()
        raw = response.read()
    except (FileNotFoundError, ConnectionRefusedError):  # no socket, or one nobody serves: nothing was sent
        raise ServiceNotRunning(Message("provisioning.not_running", N_(
            "the provisioning service is not running (no socket %(socket)s): start the hub"), {"socket": str(where)})) from None
    except PermissionError:
        raise ProvisioningError(Message("provisioning.root_only", N_(
            "only root may reach the provisioning service (%(socket)s): run with sudo"), {"socket": str(where)})) from None
    except OSError as exc:
        raise ProvisioningError(Message("provisioning.no_answer", N_(
            "the provisioning service did not answer at %(socket)s: %(reason)s"),
            {"socket": str(where), "reason": exc.strerror or str(exc)})) from None
    finally:
        connection.close()
    try:
        answer = json.loads(raw) if raw else None
    except ValueError:
        answer = None
    if response.status >= 400:
        raise ProvisioningError.answered(response.status, response.reason, answer)
    return answer


def reachable(where: Path) -> bool:
    """Whether a service answers connections on the socket ``where``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(where))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def service_for_the_while(settings: Settings, timeout: float = START_TIMEOUT):
    """The provisioning service while the block runs, for a command run while the hub is not (the
    first accounts and workspaces are made before any hub starts): ``python -I -m
    enclave.provisioning.app --cli-only`` on the CLI's socket alone (no HTTP port, no JupyterHub),
    with the audit service beside it (the hub's if it runs, else one started for the while, see
    :func:`enclave.audit.client.audit_service`); both are stopped on leaving the block. Nothing is
    started if a service answers on the socket by then.

    One command at a time starts one (a lock in the socket's folder): another command waits until
    the first is done, then starts its own. The service stops with the command even when the
    command is killed (it is the command's child, see :func:`enclave.services.stop_with_parent`).
    A hub that starts meanwhile takes the socket over: its service binds the path anew, this one
    keeps serving what it already accepted and, stopping, leaves the hub's socket in place.

    This is the slow path: it loads the settings (the caller's), and starts two processes.
    """
    import fcntl

    from ..audit.client import AuditError, audit_service
    from ..services import PARENT_PID, settings_environment

    where = socket_path(settings.home)
    where.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.ExitStack() as stack:
        lock = stack.enter_context((where.parent / "for-the-while.lock").open("a"))
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ProvisioningError(Message("provisioning.busy", N_(
                        "another enclave command has been running the provisioning service for over %(seconds)s s:"
                        " try again once it is done"), {"seconds": f"{LOCK_TIMEOUT:.0f}"})) from None
                time.sleep(0.05)
        if reachable(where):  # the hub started, or the command before this one's service is still there
            yield
            return
        env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "LANG")}, **settings_environment(settings),
               PARENT_PID: str(os.getpid())}
        log = stack.enter_context(tempfile.TemporaryFile())
        # Started first, so that its imports overlap the audit service's start.
        service = subprocess.Popen([sys.executable, "-I", "-m", "enclave.provisioning.app", "--cli-only"], env=env,
                                   cwd="/", stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        try:
            stack.enter_context(audit_service(settings, timeout=timeout))
        except AuditError as exc:
            _stop(service, timeout)
            raise ProvisioningError(Message("audit.unavailable", N_(
                "nothing was changed: the audit log cannot record it (%(reason)s)"), {"reason": str(exc)})) from None
        stack.callback(_stop, service, timeout)  # before the audit service stops
        deadline = time.monotonic() + timeout
        while not reachable(where):
            if service.poll() is not None or time.monotonic() > deadline:
                _stop(service, timeout)
                log.seek(0)
                said = log.read().decode(errors="replace").strip().splitlines()
                if said:
                    raise ProvisioningError(Message("provisioning.did_not_start", N_(
                        "the provisioning service did not start: %(reason)s"), {"reason": said[-1]})) from None
                raise ProvisioningError(Message("provisioning.did_not_start", N_(
                    "the provisioning service did not start: no output"))) from None
            time.sleep(0.02)
        yield


def _stop(service: subprocess.Popen, timeout: float) -> None:
    if service.poll() is None:
        service.terminate()
    try:
        service.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        service.kill()
        service.wait()
