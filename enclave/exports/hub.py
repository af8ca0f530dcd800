"""How JupyterHub runs the export review service (wired in by ``enclave.hub``)."""

from __future__ import annotations

import json
import os
import sys

from ..rbac import EXPORTS_SERVICE
from ..settings import Settings
from .service import SCOPE_ADMIN, SCOPE_REQUEST, SCOPE_REVIEW


def exports_service(settings: Settings) -> dict:
    """The ``c.JupyterHub.services`` entry: hub-managed, on a loopback port, run from the hub's venv.

    The service needs no role of its own: it asks ``/hub/api/user`` with each caller's token.
    Browser logins get a token limited to the service's custom scopes the user holds.
    """
    # Managed services do not inherit the hub's environment: pass on the settings file and overrides.
    environment = {k: v for k, v in os.environ.items() if k.startswith("ENCLAVE_")}
    environment["ENCLAVE_HOME"] = str(settings.home)
    # Its OAuth cookies host-only with the __Host- prefix, and Secure, as the hub's servers' are
    # (see enclave.hub.configure).
    environment["JUPYTERHUB_COOKIE_HOST_PREFIX_ENABLED"] = "1"
    environment["JUPYTERHUB_COOKIE_OPTIONS"] = json.dumps({"secure": True})
    if "ENCLAVE_CONFIG" in environment:  # it runs from "/": a relative path would point elsewhere
        environment["ENCLAVE_CONFIG"] = os.path.abspath(environment["ENCLAVE_CONFIG"])
    return {
        "name": EXPORTS_SERVICE,
        "url": f"http://127.0.0.1:{settings.exports.port}",
        # Isolated mode from "/": nothing a user can write is on the service's sys.path.
        "command": [sys.executable, "-I", "-m", "enclave.exports.app"],
        "cwd": "/",
        "environment": environment,
        "display": True,
        "info": {"description": "Review and release of outputs leaving workspaces"},
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": [SCOPE_REQUEST, SCOPE_REVIEW, SCOPE_ADMIN],
    }
