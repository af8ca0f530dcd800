"""The hub's own services (the review service, the audit service): how JupyterHub runs them, and
what they share as processes."""

from __future__ import annotations

import ctypes
import json
import os
import runpy
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the idle culler runs through this module: it imports no more than it needs
    from .settings import Settings

# Set in the environment of the processes the hub starts: the hub's pid (see stop_with_parent).
PARENT_PID = "ENCLAVE_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def settings_environment(settings: Settings) -> dict[str, str]:
    """The environment a process of the hub side needs to read the same settings: the settings file
    and ``ENCLAVE_*`` overrides (managed services do not inherit the hub's environment), with paths
    made absolute, since these processes run from "/"."""
    environment = {k: v for k, v in os.environ.items() if k.startswith("ENCLAVE_") and k != PARENT_PID}
    environment["ENCLAVE_HOME"] = str(settings.home)
    if "ENCLAVE_CONFIG" in environment:
        environment["ENCLAVE_CONFIG"] = os.path.abspath(environment["ENCLAVE_CONFIG"])
    return environment


def hub_service(name: str, module: str, port: int, settings: Settings, *, description: str,
                scopes: list[str], display: bool = True) -> dict:
    """The ``c.JupyterHub.services`` entry of one of the hub's own services: hub-managed, HTTP on a
    loopback port, run from the hub's environment in isolated mode from "/" (nothing a user can
    write is on its sys.path). It inherits the hub's umask of 077 (``enclave.host_state``): what it
    writes in the state directory is root's alone from the first write.

    The service needs no role of its own: it asks ``/hub/api/user`` with each caller's token, and a
    browser login gets a token limited to the service's custom ``scopes`` the user holds. Its OAuth
    cookies are host-only with the ``__Host-`` prefix, and Secure, as the hub's servers' are (see
    ``enclave.hub.configure``).
    """
    environment = {**settings_environment(settings), **hub_child_environment()}
    environment["JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED"] = "1"
    environment["JUPYTERHUB_COOKIE_OPTIONS"] = json.dumps({"secure": True})
    return {
        "name": name,
        "url": f"http://127.0.0.1:{port}",
        "command": [sys.executable, "-I", "-m", module],
        "cwd": "/",
        "environment": environment,
        "display": display,
        "info": {"description": description},
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": scopes,
    }


def json_api_document(title: str, description: str, prefix: str, schemas: dict, paths: dict) -> dict:
    """The OpenAPI document of a service's JSON API under ``{prefix}api``: callers authenticate with
    a JupyterHub token (or the service's OAuth cookie, which the document cannot describe), and
    errors are ``{"status", "error"}``."""
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1", "description": description},
        "servers": [{"url": prefix.rstrip("/") + "/api"}],
        "components": {
            "securitySchemes": {"hubToken": {"type": "apiKey", "in": "header", "name": "Authorization",
                                             "description": "'token <JupyterHub API token>'"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"status": {"type": "integer"}, "error": {"type": "string"}}},
                **schemas,
            },
        },
        "security": [{"hubToken": []}],
        "paths": paths,
    }


def error_message(exc: BaseException | None) -> str | None:
    """The message a tornado ``HTTPError`` was raised with, as written. Tornado keeps it as a format
    string (a message without arguments has its '%' doubled), so it is formatted, not read."""
    message = getattr(exc, "log_message", None)
    return message % getattr(exc, "args", ()) if message else None


def hub_child_environment() -> dict[str, str]:
    """What a process the hub starts needs in its environment to stop with the hub."""
    return {PARENT_PID: str(os.getpid())}


def stop_with_parent() -> None:
    """Have this process sent SIGTERM when the process that started it ends, as if asked to stop.

    JupyterHub stops its managed services when it stops; when it is killed (``kill -9``) they would
    outlive it, holding their port, socket or writer lock, and the services of the restarted hub
    could not start. The kernel signals the orphan at once (``PR_SET_PDEATHSIG``); a parent that
    passed its pid (``ENCLAVE_PARENT_PID``) and is already gone by the time this runs is noticed here.
    (The kernel watches the thread that started the process: the hub starts its services from its
    event loop's, the main thread.) Call it once the process's SIGTERM handler is in place.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    expected = os.environ.get(PARENT_PID)
    if expected and os.getppid() != int(expected):
        os.kill(os.getpid(), signal.SIGTERM)


def run_module_as_hub_child(argv: list[str]) -> None:
    """Run ``python -m <module> <args>`` (``argv``) as a process of the hub: it stops with the hub
    (:func:`stop_with_parent`) and on SIGINT, even when the hub was started with SIGINT ignored (a
    background job of a shell), which Python would otherwise pass on to it. For programs that are
    not ours, such as the idle culler, which JupyterHub stops with SIGINT."""
    if not argv:
        raise SystemExit("usage: python -m enclave.services <module> [arguments]")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stop_with_parent()
    sys.argv = argv
    try:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
    except KeyboardInterrupt:  # asked to stop before the program set up its own handling of SIGINT
        raise SystemExit(0) from None


if __name__ == "__main__":
    run_module_as_hub_child(sys.argv[1:])
