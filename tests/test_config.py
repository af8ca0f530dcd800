"""JupyterHub configuration built from settings: authenticators, RBAC, sandboxes."""

from __future__ import annotations

from traitlets.config import Config

from enclave import rbac
from enclave.hub import configure
from enclave.settings import Settings


def _config(tmp_path, **settings) -> Config:
    c = Config()
    configure(c, Settings(home=tmp_path, **settings))
    return c


def test_native_accounts_are_the_default(tmp_path):
    c = _config(tmp_path)
    assert c.JupyterHub.authenticator_class == "enclave.accounts.EnclaveAuthenticator"
    assert c.EnclaveAuthenticator.manage_groups is True
    assert c.JupyterHub.hub_bind_url.startswith("http+unix://")
    assert c.Spawner.disable_user_config is True
    assert c.Spawner.server_token_scopes == rbac.SERVER_TOKEN_SCOPES
    user_role = next(r for r in c.JupyterHub.load_roles if r["name"] == "user")
    assert not any(s.split("!")[0] in ("shares", "users:shares", "tokens", "self") for s in user_role["scopes"])
    admin_role = next(r for r in c.JupyterHub.load_roles if r["name"] == "enclave-admin")
    assert not any(s.startswith("access:servers") or s == "admin:users" for s in admin_role["scopes"])
    assert [s["name"] for s in c.JupyterHub.services] == ["audit", "exports", "provisioning", "idle-culler"]


async def test_oidc_is_selectable_and_maps_idp_groups_to_roles(tmp_path):
    from enclave.oidc import EnclaveOAuthenticator

    c = _config(tmp_path, hub={"authenticator": "oidc", "oidc": {
        "client_id": "enclave", "client_secret": "s3cret",
        "authorize_url": "https://idp.example/auth", "token_url": "https://idp.example/token",
        "userdata_url": "https://idp.example/userinfo",
        "operator_groups": ["analysts"], "reviewer_groups": ["output-checkers"], "admin_groups": ["it"],
    }})
    assert c.JupyterHub.authenticator_class == "enclave.oidc.EnclaveOAuthenticator"
    auth = EnclaveOAuthenticator(config=c)
    assert auth.client_id == "enclave" and auth.enable_pkce and auth.manage_groups
    assert auth.oauth_callback_url == "http://localhost:8000/hub/oauth_callback"

    def state(*groups):
        return {"oauth_user": {"preferred_username": "li", "groups": list(groups)}}

    assert await auth.get_user_groups(state("analysts", "output-checkers", "staff")) == {"operator", "reviewer"}
    allowed = {"name": "li", "admin": None, "groups": sorted(await auth.get_user_groups(state("analysts"))),
               "auth_state": state("analysts")}
    assert await auth.check_allowed("li", allowed)
    outsider = {"name": "wu", "admin": None, "groups": [], "auth_state": state("staff")}
    assert not await auth.check_allowed("wu", outsider)
    assert auth.admin_groups == set()


def test_every_setting_is_documented_in_the_readme():
    from pydantic import BaseModel

    from enclave.settings import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()

    def keys(model, prefix=""):
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                yield from keys(annotation, f"{prefix}{name}.")
            else:
                yield prefix, name

    missing = [f"{p}{n}" for p, n in keys(Settings) if f"`{p}{n}`" not in readme and f"{n}`" not in readme
               and f", {n}" not in readme and f"`{p}{n}," not in readme]
    assert missing == []


def test_enclave_database_migrations_build_the_models_schema_and_downgrade(tmp_path):
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import inspect

    from enclave import db, migrate

    url = f"sqlite:///{tmp_path / 'enclave.sqlite'}"
    migrate.upgrade(url, db.MIGRATIONS)
    with db.engine_for(url).connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), db.Base.metadata) == []
    command.downgrade(migrate.alembic_config(url, db.MIGRATIONS), "base")
    assert set(inspect(db.engine_for(url)).get_table_names()) == {"alembic_version"}


def test_the_chinese_readme_gives_the_readmes_two_commands():
    """README.zh-CN.md is a short translation: its set-up commands must stay the README's."""
    import re

    from enclave.settings import REPO_ROOT

    def commands(name: str) -> list[str]:
        text = (REPO_ROOT / name).read_text(encoding="utf-8")
        block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
        return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]

    assert commands("README.md") == ["make demo", "make test"]
    assert commands("README.zh-CN.md") == commands("README.md")
