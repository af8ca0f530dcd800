"""How JupyterHub runs the provisioning service (wired in by ``enclave.hub``).

Admins (``custom:workspaces:admin``) and data holders (``custom:sources:consent``) reach it; both
roles hold ``access:services!service=provisioning`` (``enclave.rbac``). Operators and reviewers do
not, and are refused before anything they send is looked at.

An admin's token for the service also carries the hub scopes ``read:servers`` and ``delete:servers``
(admins hold them; holders do not, so theirs lack them): the admin pages list a workspace's running
sandboxes and stop them through JupyterHub's API with the admin's own token, so JupyterHub decides
and the stop is the admin's.
"""

from __future__ import annotations

from ..rbac import PROVISIONING_SERVICE
from ..services import hub_service
from ..settings import Settings
from .app import SCOPE_ADMIN, SCOPE_CONSENT


def provisioning_service(settings: Settings) -> dict:
    """The ``c.JupyterHub.services`` entry of the provisioning service."""
    return hub_service(PROVISIONING_SERVICE, "enclave.provisioning.app", settings.provisioning.port, settings,
                       description="Provisioning: accounts, workspaces, sources and data holders' consents",
                       scopes=[SCOPE_ADMIN, SCOPE_CONSENT, "read:servers", "delete:servers"])
