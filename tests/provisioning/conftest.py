"""A real Enclave hub (``enclave.hub.configure``: the audit, review and provisioning services, the
login page, roles) with the token-minting harness of ``tests/audit/services_hub.py``, over real
SQLite, started once for the package.

Accounts (each logged in once, which gives JupyterHub their role groups):

    adam: admin          olga: operator        rita: reviewer       dual: operator and reviewer
    hana: data holder    hugo: data holder (of nothing the tests ask for)

Release ``people@1`` is in the store; its source is registered by the tests, through the API.
"""

from __future__ import annotations

import pandas as pd
import pytest
import requests
from enclave_testing import free_port, wait_for

from enclave import accounts
from enclave.settings import Settings

from audit.services_hub import ServicesHub, publish  # tests/ is on sys.path (tests/conftest.py)

PASSWORD = "provisioning-test-password"
ACCOUNTS = {"adam": ["admin"], "olga": ["operator"], "rita": ["reviewer"], "dual": ["operator", "reviewer"],
            "hana": ["holder"], "hugo": ["holder"]}
PEOPLE = pd.DataFrame({"region": ["north", "south"] * 15, "age": list(range(30, 60)),
                       "income": [3000 + 10 * i for i in range(30)]})


class API:
    """The provisioning API through the proxy, with one token."""

    def __init__(self, base: str, token: str | None) -> None:
        self.base = base
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"token {token}"

    def request(self, method: str, path: str, body=None, expect: int | None = None, **kw) -> requests.Response:
        r = self.http.request(method, self.base + path, json=body, timeout=60, **kw)
        if expect is not None:
            assert r.status_code == expect, (method, path, r.status_code, r.text)
        return r

    def get(self, path: str, expect: int = 200):
        return self.request("GET", path, expect=expect).json()

    def post(self, path: str, body=None, expect: int = 200):
        return self.request("POST", path, body, expect=expect).json()

    def put(self, path: str, body, expect: int = 200):
        return self.request("PUT", path, body, expect=expect).json()

    def delete(self, path: str, expect: int = 200):
        return self.request("DELETE", path, expect=expect).json()


class ProvisioningHub(ServicesHub):
    """The package's hub; ``api(user)``: the API with a token of ``user``'s (all their scopes)."""

    @property
    def base(self) -> str:
        return self.service_url("provisioning") + "/api"

    def api(self, user: str | None) -> API:
        return API(self.base, self.token(user, ["inherit"]) if user else None)


@pytest.fixture(scope="package")
def hub(tmp_path_factory) -> ProvisioningHub:
    home = tmp_path_factory.mktemp("provisioning")
    hub = ProvisioningHub(home=home, env_overrides={"ENCLAVE_AUDIT__PORT": str(free_port()),
                                                    "ENCLAVE_PROVISIONING__PORT": str(free_port()),
                                                    "ENCLAVE_SANDBOX__IDLE_TIMEOUT": "0"})
    settings = Settings(home=home)
    settings.hub_dir.mkdir(parents=True, exist_ok=True)
    for name, roles in ACCOUNTS.items():
        accounts.add_user(settings, name, roles, PASSWORD)
    publish(settings, "people@1", {"people": PEOPLE})
    try:
        hub.start()

        def provisioning_up():
            try:
                return requests.get(hub.base + "/openapi.json", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(provisioning_up, 60, "the provisioning service")
        for name in ACCOUNTS:
            hub.login(name, PASSWORD)  # JupyterHub gives each account its role groups at login
        yield hub
    finally:
        hub.stop()


@pytest.fixture(scope="package")
def apis(hub) -> dict[str, API]:
    """Each account's API client, and ``None``'s: no token at all."""
    return {name: hub.api(name) for name in [*ACCOUNTS, None]}
