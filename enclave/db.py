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
from typing import Iterator

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from . import migrate
from .rbac import ACCOUNT_ROLES as ROLES
from .rbac import WORKSPACE_ROLES

# Workspace names become URL path segments and directory names; keep them boring.
WORKSPACE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$|^[a-z0-9]$")
# JupyterHub usernames are normalised to lower case; we also keep them path-safe.
USERNAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"

    username: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    password_hash: Mapped[str] = mapped_column(String(200))  # Argon2id, see enclave.accounts
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

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Overrides of [sandbox.limits] for this workspace's sandboxes (keys of LimitSettings).
    limits: Mapped[dict] = mapped_column(JSON, default=dict)
    # Settings for the guard in this workspace's servers (keys of enclave_guard.policy.GuardSettings).
    guard: Mapped[dict] = mapped_column(JSON, default=dict)
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

    workspace_name: Mapped[str] = mapped_column(
        ForeignKey("workspaces.name", ondelete="CASCADE"), primary_key=True
    )
    release: Mapped[str] = mapped_column(String(200), primary_key=True)
    attached_by: Mapped[str] = mapped_column(String(64))
    attached_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # A column view (table -> columns) when only some columns were granted; None = the whole release.
    columns: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    reason: Mapped[str] = mapped_column(String(500), default="")
    workspace: Mapped[Workspace] = relationship(back_populates="attachments")


MIGRATIONS = Path(__file__).parent / "db_migrations"
_factories: dict[str, sessionmaker[Session]] = {}


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


def engine_for(url: str) -> Engine:
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def session_factory(url: str) -> sessionmaker[Session]:
    if url not in _factories:
        migrate.upgrade(url, MIGRATIONS)
        _factories[url] = sessionmaker(engine_for(url), expire_on_commit=False)
    return _factories[url]


@contextmanager
def transaction(url: str) -> Iterator[Session]:
    """A session whose work is committed together, or not at all."""
    with session_factory(url).begin() as session:
        yield session
