"""The export review service's own database.

Its schema is created and changed only by the Alembic migrations in ``migrations/``; the service
upgrades the database to the newest revision when it starts. Every write goes through
:func:`transaction`, so a failed step leaves nothing half-written.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Iterator

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker
from sqlalchemy.types import TypeDecorator

from .. import migrate
from ..settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware datetimes in and out, whatever the backend keeps (SQLite keeps naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class ReviewPolicy(Base):
    """A workspace's review policy; ``version`` increases at every change and is recorded on requests."""

    __tablename__ = "review_policies"

    workspace: Mapped[str] = mapped_column(String(40), primary_key=True)
    approvals_required: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ExportRequest(Base):
    __tablename__ = "export_requests"
    __table_args__ = (
        Index("ix_requests_queue", "workspace", "state", "submitted_at"),
        Index("ix_requests_requester", "requester", "submitted_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(40))
    requester: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    context: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    approvals_required: Mapped[int] = mapped_column(Integer)
    policy_version: Mapped[str] = mapped_column(String(64))
    # Releases attached to the workspace at submission: what the outputs were computed from.
    datasets: Mapped[list] = mapped_column(JSON)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    files: Mapped[list["RequestFile"]] = relationship(
        back_populates="request", order_by="RequestFile.id", lazy="selectin"
    )
    events: Mapped[list["Event"]] = relationship(order_by="Event.id", lazy="selectin", viewonly=True)
    comments: Mapped[list["Comment"]] = relationship(order_by="Comment.id", lazy="selectin", viewonly=True)

    def current_files(self) -> list["RequestFile"]:
        return [f for f in self.files if f.superseded_by is None]


class RequestFile(Base):
    """One version of one file of a request; content is frozen (by hash) when it is submitted."""

    __tablename__ = "request_files"
    __table_args__ = (UniqueConstraint("request_id", "name", "version", name="uq_file_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("export_requests.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))
    checks: Mapped[list] = mapped_column(JSON)
    check_status: Mapped[str] = mapped_column(String(8))
    provenance: Mapped[dict] = mapped_column(JSON)
    superseded_by: Mapped[int | None] = mapped_column(Integer)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    request: Mapped[ExportRequest] = relationship(back_populates="files")
    votes: Mapped[list["Vote"]] = relationship(order_by="Vote.id", lazy="selectin")
    release: Mapped["Release | None"] = relationship(lazy="selectin", uselist=False)


class Vote(Base):
    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("file_id", "reviewer", name="uq_vote_per_reviewer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("request_files.id"), index=True)
    reviewer: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Comment(Base):
    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("export_requests.id"), index=True)
    file_id: Mapped[int | None] = mapped_column(ForeignKey("request_files.id"))
    author: Mapped[str] = mapped_column(String(64))
    # 'private': reviewers only; 'public': the requester sees it too.
    visibility: Mapped[str] = mapped_column(String(8))
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Event(Base):
    """The audit record of a request: every transition, vote, comment, view and download."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("export_requests.id"), index=True)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str | None] = mapped_column(String(16))
    detail: Mapped[dict] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Release(Base):
    """A released file: the bytes handed out (watermarked, metadata stripped) and their signed manifest."""

    __tablename__ = "releases"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    file_id: Mapped[int] = mapped_column(ForeignKey("request_files.id"), unique=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    manifest: Mapped[dict] = mapped_column(JSON)
    signature: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str] = mapped_column(String(64))
    released_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DownloadLink(Base):
    __tablename__ = "download_links"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"))
    username: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


# -- engine and sessions --


def db_url(settings: Settings) -> str:
    return settings.exports.db_url or f"sqlite:///{settings.home / 'exports' / 'exports.sqlite'}"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def upgrade(url: str) -> None:
    """Bring the database to the newest migration (creating it if need be)."""
    migrate.upgrade(url, MIGRATIONS)


class Database:
    """Sessions on the service's database, migrated on first use."""

    def __init__(self, url: str, migrate: bool = True) -> None:
        if migrate:
            upgrade(url)
        self.url = url
        self.engine = make_engine(url)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._factory.begin() as session:
            yield session
