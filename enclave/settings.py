"""Enclave settings: one schema, read from ``enclave.toml`` with ``ENCLAVE_*`` environment overrides.

Where things live:

* ``ENCLAVE_HOME`` (default ``./var``) holds all state: databases, secrets, homes, the release store
  and the sandboxes' runtime directories.
* ``ENCLAVE_CONFIG`` (default ``$ENCLAVE_HOME/enclave.toml``) is the settings file; it is optional.
* Any setting can be overridden from the environment as ``ENCLAVE_<SECTION>__<KEY>``, for example
  ``ENCLAVE_HUB__PORT=9000`` or ``ENCLAVE_SANDBOX__LIMITS__MEMORY_MB=4096``.

An unknown key or a bad value stops start-up with a message that names the key.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .i18n import N_
from .refusals import Refusal

REPO_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(Refusal):
    """The settings file or environment holds a value Enclave cannot use (a stable code and its text)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OIDCSettings(_Section):
    """GenericOAuthenticator against an OpenID Connect provider (production)."""

    client_id: str = ""
    client_secret: str = ""
    authorize_url: str = ""
    token_url: str = ""
    userdata_url: str = ""
    oauth_callback_url: str = ""
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    # IdP group names that map onto Enclave roles.
    admin_groups: list[str] = ["enclave-admins"]
    operator_groups: list[str] = ["enclave-operators"]
    reviewer_groups: list[str] = ["enclave-reviewers"]
    holder_groups: list[str] = ["enclave-holders"]
    scope: list[str] = ["openid", "profile", "groups"]


class HubSettings(_Section):
    # Where the proxy listens.
    ip: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # The address people use. The hub is at this host name; each user's servers and each service
    # are on host names of their own under it (alice.<host>, exports--service.<host>), so they do
    # not share an origin. Empty means http://localhost:<port> (browsers resolve *.localhost to
    # loopback). In production: https://<name>, with wildcard DNS and a certificate for it and *.<name>.
    public_url: str = ""
    # TLS at the proxy (PEM files); both or neither.
    ssl_cert: str = ""
    ssl_key: str = ""
    # JupyterHub's own database; empty means SQLite under $ENCLAVE_HOME/hub.
    db_url: str = ""
    authenticator: Literal["native", "oidc"] = "native"
    oidc: OIDCSettings = OIDCSettings()
    # Proxy REST API, on loopback only (sandboxes have no network at all).
    proxy_api_port: int = Field(8001, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("public_url")
    @classmethod
    def _public_url_has_a_host_name(cls, value: str) -> str:
        if not value:
            return value
        url = urlparse(value)
        if url.scheme not in ("http", "https") or not url.hostname or url.path not in ("", "/"):
            raise ValueError("must be http(s)://<host name>[:port], with no path")
        try:
            ipaddress.ip_address(url.hostname)
        except ValueError:
            return value.rstrip("/")
        raise ValueError("must be a host name, not an IP address: user servers get host names under it")

    @model_validator(mode="after")
    def _tls_files_together(self) -> "HubSettings":
        if bool(self.ssl_cert) != bool(self.ssl_key):
            raise ValueError("ssl_cert and ssl_key go together")
        return self


class AccountSettings(_Section):
    min_password_length: int = Field(12, ge=8)
    allowed_failed_logins: int = Field(5, ge=1)
    lockout_seconds: int = Field(600, ge=1)


class LimitSettings(_Section):
    """Per-sandbox limits; a workspace may override each of them."""

    memory_mb: int = Field(2048, ge=256)
    pids: int = Field(256, ge=32)
    cpus: float = Field(1.0, gt=0)
    # Files a sandbox may create in its home, in MiB (RLIMIT_FSIZE caps a single file).
    max_file_mb: int = Field(1024, ge=1)
    # The hard quota of each (operator, workspace) home, in MiB: the size of its disk image, taken
    # from the state directory's filesystem when the home is first started (enclave.sandbox.home_image).
    disk_mb: int = Field(4096, ge=32)
    # The size of a sandbox's /tmp (a tmpfs: memory, counted against memory_mb), in MiB.
    tmp_mb: int = Field(256, ge=16)


class SandboxSettings(_Section):
    # How sandboxes are made from the sandbox policy: bubblewrap on the host (the hub's host binds
    # its /usr and the operators' environment, python_env), or Docker containers of `image`
    # (enclave/sandbox/docker.py; images/build.sh builds it).
    backend: Literal["bubblewrap", "docker"] = "bubblewrap"
    image: str = "enclave/sandbox"
    # Docker backend: the hub asks the launcher (enclave/sandbox/launcher.py, a container of its own
    # holding the Docker socket) to run each server's supervisor, instead of running it itself. The
    # container deployment (docker-compose.yml) sets it, so sandboxes outlive the hub's container.
    launcher: bool = False
    # The operator's Python environment (mounted read-only at /opt/enclave/env).
    python_env: Path = REPO_ROOT / ".venv-sandbox"
    bwrap: str = "bwrap"
    # Host uids for sandboxes are uid_base + the server's id; each (user, workspace) gets its own.
    uid_base: int = Field(200_000, ge=1000)
    limits: LimitSettings = LimitSettings()
    start_timeout: int = Field(60, ge=5)
    # Idle sandboxes are stopped by jupyterhub-idle-culler after this many seconds (0 = never).
    idle_timeout: int = Field(3600, ge=0)
    cull_every: int = Field(300, ge=1)


class ExportSettings(_Section):
    """The export review service (``enclave.exports``); per-workspace approvals live in its database."""

    # The service's HTTP port on loopback; the proxy routes /services/exports/ to it.
    port: int = Field(8010, ge=1, le=65535)
    # The service's own database; empty means SQLite under $ENCLAVE_HOME/exports.
    db_url: str = ""
    # Default review policy of a workspace until an admin sets one.
    approvals_required: int = Field(2, ge=1, le=10)
    max_file_mb: int = Field(16, ge=1, le=1024)
    max_files_per_request: int = Field(20, ge=1, le=200)
    max_csv_rows: int = Field(5000, ge=1)
    # Disclosure-control thresholds (ACRO's defaults).
    min_cell_count: int = Field(10, ge=1)
    round_base: int = Field(5, ge=1)
    nk_n: int = Field(2, ge=1)
    nk_k: float = Field(0.90, gt=0, le=1)
    p_ratio: float = Field(0.10, gt=0, le=1)
    # Download links of released files expire after this many seconds.
    link_ttl_seconds: int = Field(600, ge=10)


class SealedRunSettings(_Section):
    """Sealed runs (``enclave.sealed``), run by the export review service: an operator's notebook on
    the real data, its results leaving only through review. Each workspace's data holder sets its own
    policy (approval, runs per day, reviewers, limits); these are the defaults until they do."""

    # Runs at once on this host; each holds its slot for its whole time limit (enclave.sealed.workflow).
    slots: int = Field(1, ge=1, le=64)
    approval_required: bool = True
    # Runs an operator may submit in one workspace in 24 hours.
    runs_per_day: int = Field(3, ge=0, le=1000)
    # A run's limits (enclave.sealed.runner.RunLimits).
    seconds: int = Field(600, ge=5, le=86_400)
    memory_mb: int = Field(2048, ge=128)
    disk_mb: int = Field(512, ge=16)
    cpus: float = Field(1.0, gt=0)
    # The notebook and its inputs together, as submitted.
    max_input_mb: int = Field(16, ge=1, le=1024)


class AuditSettings(_Section):
    """The audit log (``enclave.audit``): one hash-chained, append-only log on the hub side."""

    # The audit log's database; empty means SQLite under $ENCLAVE_HOME/audit.
    db_url: str = ""
    # The audit service's query API (HTTP on loopback; the proxy routes /services/audit/ to it).
    # Appends go over a unix socket under $ENCLAVE_HOME/run/audit, never over HTTP.
    port: int = Field(8011, ge=1, le=65535)
    # A signed checkpoint (tree head) after this many records, or this many seconds, whichever
    # comes first; and always when the audit service stops.
    checkpoint_every_records: int = Field(1000, ge=1)
    checkpoint_every_seconds: int = Field(60, ge=1)


class ProvisioningSettings(_Section):
    """The provisioning service (``enclave.provisioning``): the REST API admins and data holders use."""

    # The service's HTTP port on loopback; the proxy routes /services/provisioning/ to it. (The
    # ``enclave`` command reaches it over the root-only socket $ENCLAVE_HOME/run/provisioning/cli.sock.)
    port: int = Field(8012, ge=1, le=65535)


class WorkspacesSettings(_Section):
    """The lifecycle of workspaces and accounts on running sandboxes (``enclave.provisioning.lifecycle``)."""

    # How often the hub enforces workspaces' and accounts' states on running sandboxes: freezing the
    # expired, stopping the sandboxes of frozen and archived workspaces and of unusable accounts.
    lifecycle_interval_seconds: int = Field(10, ge=1, le=3600)
    # How long an archived workspace's homes are kept (read-only: nothing starts there) before they
    # are deleted, with a record.
    archive_retention_days: int = Field(90, ge=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ENCLAVE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    home: Path = Path("var")
    # Enclave's own database (accounts' roles, workspaces, attachments); empty means SQLite in home.
    db_url: str = ""
    hub: HubSettings = HubSettings()
    accounts: AccountSettings = AccountSettings()
    sandbox: SandboxSettings = SandboxSettings()
    exports: ExportSettings = ExportSettings()
    sealed_runs: SealedRunSettings = SealedRunSettings()
    audit: AuditSettings = AuditSettings()
    provisioning: ProvisioningSettings = ProvisioningSettings()
    workspaces: WorkspacesSettings = WorkspacesSettings()

    @model_validator(mode="after")
    def _absolute_home(self) -> "Settings":
        self.home = self.home.expanduser().resolve()
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file; explicit arguments beat both.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, _config_path()))

    # -- derived locations (state that can be derived is never configured twice) --

    @cached_property
    def enclave_db_url(self) -> str:
        return self.db_url or f"sqlite:///{self.home / 'enclave.sqlite'}"

    @cached_property
    def hub_db_url(self) -> str:
        return self.hub.db_url or f"sqlite:///{self.home / 'hub' / 'jupyterhub.sqlite'}"

    @cached_property
    def audit_db_url(self) -> str:
        return self.audit.db_url or f"sqlite:///{self.audit_dir / 'audit.sqlite'}"

    @property
    def audit_dir(self) -> Path:
        """The audit log's database (SQLite default) and its checkpoints' second copy."""
        return self.home / "audit"

    @property
    def hub_dir(self) -> Path:
        return self.home / "hub"

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    @property
    def holder_dir(self) -> Path:
        """The data holder's records: registered sources, release lineage, the release log and the
        reports of refused releases. Never mounted into a sandbox."""
        return self.home / "holder"

    @property
    def homes_dir(self) -> Path:
        return self.home / "homes"

    @property
    def home_images_dir(self) -> Path:
        """The homes' disk images: root's, never bound into a sandbox."""
        return self.home / "home-images"

    def operator_home(self, user: str, workspace: str) -> tuple[Path, Path]:
        """(the home's path, where its image is mounted; its disk image) of ``user`` in ``workspace``."""
        return self.homes_dir / user / workspace, self.home_images_dir / user / f"{workspace}.ext4"

    @property
    def release_store(self) -> Path:
        return self.home / "releases"

    @property
    def run_dir(self) -> Path:
        """Sockets and per-sandbox runtime directories."""
        return self.home / "run"

    @property
    def hub_socket(self) -> Path:
        return self.run_dir / "hub" / "hub.sock"

    @property
    def public_url(self) -> str:
        return self.hub.public_url or f"http://localhost:{self.hub.port}"

    def service_url(self, name: str) -> str:
        """Where people reach a hub-managed service: on a host name of its own (JupyterHub's
        subdomain hook, as the hub itself names it), under the public URL."""
        from jupyterhub.utils import subdomain_hook_idna

        url = urlparse(self.public_url)
        host = subdomain_hook_idna(name, url.hostname, "service") + (f":{url.port}" if url.port else "")
        return f"{url.scheme}://{host}/services/{name}/"


def _config_path() -> Path:
    if "ENCLAVE_CONFIG" in os.environ:
        return Path(os.environ["ENCLAVE_CONFIG"])
    home = Path(os.environ.get("ENCLAVE_HOME", "var"))
    return home / "enclave.toml"


def load_settings(**overrides) -> Settings:
    """Read and validate settings; raise SettingsError naming each bad key."""
    path = _config_path()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown setting '{key}'")
            else:
                problems.append(f"setting '{key}': {err['msg']} (got {err.get('input')!r})")
        raise SettingsError("settings.invalid", N_("invalid Enclave settings (%(path)s): %(problems)s"), path=str(path),
                            problems="; ".join(problems)) from None
    except Exception as exc:  # a TOML syntax error, for one
        if isinstance(exc, SettingsError):
            raise
        raise SettingsError("settings.unreadable", N_("cannot read Enclave settings %(path)s: %(reason)s"), path=str(path),
                            reason=str(exc)) from None


def load_settings_or_exit(**overrides) -> Settings:
    try:
        return load_settings(**overrides)
    except SettingsError as exc:
        print(f"enclave: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
