"""How the hub's own services (review, audit, provisioning) know their callers: JupyterHub's
``HubOAuth``, asking the hub about a token again after :data:`RECHECK_SECONDS`.

``HubOAuth`` remembers a token's owner and scopes for five minutes by default. When an account is
disabled or expires, the hub revokes its tokens (``enclave.provisioning.lifecycle``); a service must
then stop taking them soon, not five minutes later."""

from __future__ import annotations

from jupyterhub.services.auth import HubOAuth
from traitlets import Integer

RECHECK_SECONDS = 10


class RevocableHubOAuth(HubOAuth):
    cache_max_age = Integer(RECHECK_SECONDS, help="Seconds a token's owner is remembered before the hub is asked again.")
