"""The hub's own services (the review service, the audit service): how JupyterHub runs them, and
what they share as processes."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from .settings import Settings


def settings_environment(settings: Settings) -> dict[str, str]:
    """The environment a process of the hub side needs to read the same settings: the settings file
    and ``ENCLAVE_*`` overrides (managed services do not inherit the hub's environment), with paths
    made absolute, since these processes run from "/"."""
    environment = {k: v for k, v in os.environ.items() if k.startswith("ENCLAVE_")}
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
    environment = settings_environment(settings)
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


async def stop_when_orphaned(stop: asyncio.Event, every: float = 1.0) -> None:
    """Set ``stop`` once the process that started this one is gone.

    JupyterHub stops its managed services when it stops; when it is killed (``kill -9``) they would
    outlive it, holding their port, socket or writer lock, and the services of the restarted hub
    could not start. A service gone orphan stops as if asked to, finishing what it was doing.
    """
    parent = os.getppid()
    while not stop.is_set():
        if os.getppid() != parent:
            stop.set()
            return
        await asyncio.sleep(every)
