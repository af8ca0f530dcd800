"""How JupyterHub runs the export review service (wired in by ``enclave.hub``)."""

from __future__ import annotations

from ..rbac import EXPORTS_SERVICE
from ..services import hub_service
from ..settings import Settings
from .service import SCOPE_ADMIN, SCOPE_REQUEST, SCOPE_REVIEW


def exports_service(settings: Settings) -> dict:
    """The ``c.JupyterHub.services`` entry of the review service."""
    return hub_service(EXPORTS_SERVICE, "enclave.exports.app", settings.exports.port, settings,
                       description="Review and release of outputs leaving workspaces",
                       scopes=[SCOPE_REQUEST, SCOPE_REVIEW, SCOPE_ADMIN])
