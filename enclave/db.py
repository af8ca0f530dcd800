"""Enclave's own database: accounts' roles, failed logins, workspaces, their members and attached
releases.

The schema is built by Alembic migrations (``enclave/db_migrations``). Every write goes through
:func:`transaction`, so a failed command leaves nothing half-written.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Callable, Iterator

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from . import migrate
from .rbac import ACCOUNT_ROLES as ROLES
from .rbac import WORKSPACE_ROLES

ACCOUNT_STATES = ("active", "disabled")
# active: sandboxes start; frozen: none start, running ones are stopped, no new export requests
# (an admin unfreezes); archived: final, homes kept read-only for the retention period, then deleted.
WORKSPACE_STATES = ("active", "frozen", "archived")
# An attachment waits for the data holder's consent before its release is mounted.
ATTACHMENT_STATUSES = ("awaiting_consent", "attached")
# The languages a person may choose (enclave.i18n.LOCALES, in the order the migration wrote them).
LANGUAGES = ("zh_CN", "en")

# Workspace names become URL path segments and directory names; keep them boring.
WORKSPACE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$|^[a-z0-9]$")
# JupyterHub usernames are normalised to lower case; we also keep them path-safe.
USERNAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime | None) -> datetime | None:
    """A stored moment in UTC (SQLite gives back naive datetimes for what was stored in UTC)."""
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso(moment: datetime | None) -> str | None:
    """A moment as records and answers show it: ISO 8601 in UTC, to the second (None stays None)."""
    return as_utc(moment).isoformat(timespec="seconds") if moment is not None else None


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (CheckConstraint(f"state IN {ACCOUNT_STATES}", name="known_account_state"),)

    username: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    password_hash: Mapped[str] = mapped_column(String(200))  # Argon2id, see enclave.accounts
    state: Mapped[str] = mapped_column(String(16), default="active")
    state_reason: Mapped[str] = mapped_column(String(500), default="")
    # After this moment the account is treated as disabled (logins refused, sandboxes stopped).
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    roles: Mapped[list["AccountRole"]] = relationship(
        back_populates="account", cascade="all, delete-orphan", lazy="selectin"
    )

    @property
    def role_names(self) -> set[str]:
        return {r.role for r in self.roles}


class AccountRole(Base):
    __tablename__ = "account_roles"
    __table_args__ = (CheckConstraint(f"role IN {ROLES}", name="known_role"),)

    username: Mapped[str] = mapped_column(
        ForeignKey("accounts.username", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    account: Mapped[Account] = relationship(back_populates="roles")


class LoginFailure(Base):
    """A wrong password for an account from one client: login throttling is worked out from these
    (enclave.logins), so that it follows the client, not the account. A client's failures are
    forgotten when it logs in, and all of them after a day."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("login_failures_by_client", "username", "client", "failed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(ForeignKey("accounts.username", ondelete="CASCADE"))
    # The address the proxy saw the attempt come from (enclave.logins.client_address).
    client: Mapped[str] = mapped_column(String(64))
    failed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class Workspace(Base):
    __tablename__ = "workspaces"

    __table_args__ = (CheckConstraint(f"state IN {WORKSPACE_STATES}", name="known_workspace_state"),)

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The approved scenario of use (应用场景): what the workspace's data may be used for.
    purpose: Mapped[str] = mapped_column(Text, default="")
    # The data holder whose sources the workspace uses; they consent to each attachment.
    holder: Mapped[str | None] = mapped_column(ForeignKey("accounts.username"), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="active")
    state_reason: Mapped[str] = mapped_column(String(500), default="")
    state_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # At this moment the workspace is frozen (by the provisioning service's lifecycle).
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Whether one account may be both operator and reviewer here (never of its own requests).
    operators_may_review: Mapped[bool] = mapped_column(Boolean, default=False)
    # Overrides of [sandbox.limits] for this workspace's sandboxes (keys of LimitSettings).
    limits: Mapped[dict] = mapped_column(JSON, default=dict)
    # Settings for the guard in this workspace's servers (keys of enclave_guard.policy.GuardSettings).
    guard: Mapped[dict] = mapped_column(JSON, default=dict)
    # Overrides of [exports] for this workspace's export requests (enclave.workspaces.EXPORT_POLICY_KEYS):
    # approvals, check thresholds, caps. The version goes up at each change; requests record it.
    export_policy: Mapped[dict] = mapped_column(JSON, default=dict)
    export_policy_version: Mapped[int] = mapped_column(Integer, default=0)
    members: Mapped[list["Membership"]] = relationship(
        back_populates="workspace", cascade="all, delete-orphan", lazy="selectin"
    )
    attachments: Mapped[list["Attachment"]] = relationship(
        back_populates="workspace", cascade="all, delete-orphan", lazy="selectin"
    )

    def members_with(self, role: str) -> set[str]:
        return {m.username for m in self.members if m.role == role}


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (CheckConstraint(f"role IN {WORKSPACE_ROLES}", name="known_member_role"),)

    workspace_name: Mapped[str] = mapped_column(
        ForeignKey("workspaces.name", ondelete="CASCADE"), primary_key=True
    )
    username: Mapped[str] = mapped_column(
        ForeignKey("accounts.username", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    workspace: Mapped[Workspace] = relationship(back_populates="members")


class Attachment(Base):
    """A release made available (read-only, under /data) to a workspace's sandboxes."""

    __tablename__ = "attachments"
    __table_args__ = (CheckConstraint(f"status IN {ATTACHMENT_STATUSES}", name="known_attachment_status"),)

    workspace_name: Mapped[str] = mapped_column(
        ForeignKey("workspaces.name", ondelete="CASCADE"), primary_key=True
    )
    release: Mapped[str] = mapped_column(String(200), primary_key=True)
    attached_by: Mapped[str] = mapped_column(String(64))
    attached_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # A column view (table -> columns) when only some columns were granted; None = the whole release.
    columns: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    reason: Mapped[str] = mapped_column(String(500), default="")
    status: Mapped[str] = mapped_column(String(20), default="awaiting_consent")
    consented_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    consented_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    workspace: Mapped[Workspace] = relationship(back_populates="attachments")


class Source(Base):
    """A data holder's source: every release ``<source>@<version>`` of it is theirs to consent to."""

    __tablename__ = "sources"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(ForeignKey("accounts.username"))
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LanguagePreference(Base):
    """The language a person reads Enclave in, chosen on the hub's home page (enclave.languages).
    Keyed by user name, not by account: users of an identity provider have no Enclave account."""

    __tablename__ = "language_preferences"
    __table_args__ = (CheckConstraint(f"language IN {LANGUAGES}", name="known_language"),)

    username: Mapped[str] = mapped_column(String(255), primary_key=True)
    language: Mapped[str] = mapped_column(String(16))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


MIGRATIONS = Path(__file__).parent / "db_migrations"
_factories: dict[str, tuple[sessionmaker[Session], sessionmaker[Session]]] = {}
# How long a transaction waits for another's lock before it fails.
LOCK_WAIT_SECONDS = 15
_READ_ONLY = "enclave_read_only"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # pysqlite's own transaction handling (which begins a transaction only before the first write,
    # after the reads it was decided from) is turned off: _sqlite_begin begins every transaction.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={LOCK_WAIT_SECONDS * 1000}")
    cur.close()


def _sqlite_begin(conn) -> None:
    """A change takes SQLite's write lock as it begins, before it reads what it decides from (the
    last admin, a member's other role), so two admins acting at once are serialised; reads stay
    deferred and never wait for a writer."""
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READ_ONLY) else "BEGIN IMMEDIATE")


def engine_for(url: str) -> Engine:
    lock_wait = {"options": f"-c lock_timeout={LOCK_WAIT_SECONDS * 1000}"} if url.startswith("postgresql") else {}
    engine = create_engine(url, future=True, connect_args=lock_wait)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def session_factory(url: str, read_only: bool = False) -> sessionmaker[Session]:
    if url not in _factories:
        migrate.upgrade(url, MIGRATIONS)
        engine = engine_for(url)
        reads = {_READ_ONLY: True}
        if engine.dialect.name == "postgresql":
            reads.update(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        _factories[url] = (sessionmaker(engine, expire_on_commit=False),
                           sessionmaker(engine.execution_options(**reads), expire_on_commit=False))
    return _factories[url][read_only]


@contextmanager
def transaction(url: str, session: Session | None = None) -> Iterator[Session]:
    """A change: committed together, or not at all. On SQLite it holds the write lock from its
    start; on PostgreSQL a change locks the rows it decides from (``with_for_update``). Given
    ``session`` (a transaction already open, such as ``enclave apply``'s over a whole file), the work
    joins it instead: it commits or rolls back with the rest."""
    if session is not None:
        yield session
        return
    with session_factory(url).begin() as session:
        yield session


@contextmanager
def snapshot(url: str, session: Session | None = None) -> Iterator[Session]:
    """A read: one consistent view of the database, taking no write lock (or ``session``'s view)."""
    if session is not None:
        yield session
        return
    with session_factory(url, read_only=True).begin() as session:
        yield session


def after_commit(session: Session, effect: Callable[[], None]) -> None:
    """Run ``effect`` once ``session``'s transaction has committed (files that must not change
    unless the database did)."""
    event.listen(session, "after_commit", lambda _session: effect(), once=True)


def after_rollback(session: Session, undo: Callable[[], None]) -> None:
    """Run ``undo`` if ``session``'s transaction is rolled back (files written inside it)."""
    event.listen(session, "after_rollback", lambda _session: undo(), once=True)
