"""The export review service's own database.

Its schema is created and changed only by the Alembic migrations in ``migrations/``; the service
upgrades the database to the newest revision when it starts. Every write goes through
:meth:`Database.transaction`, so a failed step leaves nothing half-written, and every read through
:meth:`Database.snapshot`.

Changes of one export request are serialised: a write transaction reads the request it changes with
a row lock on PostgreSQL (``SELECT … FOR UPDATE``), and takes SQLite's write lock when it begins
(``BEGIN IMMEDIATE``), so what it decides from (the request's state, its votes) cannot change under
it before it commits. A transaction waits at most :data:`LOCK_WAIT_SECONDS` for another's lock.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Iterator

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
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
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
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
    # "sandbox": submitted by an operator from their sandbox; "sealed_run": made from a sealed run's
    # results (computed on the raw data): reviewed only by its appointed reviewers, and hidden from
    # the requester until it is decided.
    origin: Mapped[str] = mapped_column(String(16), default="sandbox", server_default="sandbox")
    files: Mapped[list["RequestFile"]] = relationship(
        back_populates="request", order_by="RequestFile.id", lazy="selectin"
    )
    events: Mapped[list["Event"]] = relationship(order_by="Event.id", lazy="selectin", viewonly=True)
    comments: Mapped[list["Comment"]] = relationship(order_by="Comment.id", lazy="selectin", viewonly=True)
    appointed: Mapped[list["AppointedReviewer"]] = relationship(lazy="selectin", viewonly=True)

    def current_files(self) -> list["RequestFile"]:
        return [f for f in self.files if f.superseded_by is None]


class AppointedReviewer(Base):
    """Someone the data holder appointed to review a sealed run's request (frozen when it is made);
    a request with appointed reviewers is reviewed by them alone, not by the workspace's reviewers."""

    __tablename__ = "appointed_reviewers"

    request_id: Mapped[str] = mapped_column(ForeignKey("export_requests.id"), primary_key=True)
    reviewer: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


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


class SealedRunPolicy(Base):
    """A workspace's sealed-run policy, set by the data holder of its sources: whether a run waits
    for the holder's approval, how many runs an operator may submit a day, who reviews their results
    (people who see results computed on the raw data), and the run's limits."""

    __tablename__ = "sealed_run_policies"

    workspace: Mapped[str] = mapped_column(String(40), primary_key=True)
    approval_required: Mapped[bool] = mapped_column(Boolean)
    runs_per_day: Mapped[int] = mapped_column(Integer)
    reviewers: Mapped[list] = mapped_column(JSON)
    # RunLimits' fields (enclave.sealed.runner.RunLimits) over [sealed_runs] limits.
    limits: Mapped[dict] = mapped_column(JSON)
    version: Mapped[int] = mapped_column(Integer)
    updated_by: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SealedRun(Base):
    """One sealed run of an operator's notebook (``enclave.sealed``): the frozen notebook and inputs
    (in the blob store, by hash), the outputs to keep, its state, and what came of it. ``outcome``
    (state, error, withheld outputs, provenance, duration) is for reviewers only; the operator is shown
    what ``enclave.sealed.workflow.shown_to_operator`` allows."""

    __tablename__ = "sealed_runs"
    __table_args__ = (
        Index("ix_sealed_runs_queue", "state", "submitted_at"),
        Index("ix_sealed_runs_requester", "workspace", "requester", "submitted_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace: Mapped[str] = mapped_column(String(40))
    requester: Mapped[str] = mapped_column(String(64))
    release: Mapped[str] = mapped_column(String(160))
    notebook_path: Mapped[str] = mapped_column(String(1024))
    notebook_sha256: Mapped[str] = mapped_column(String(64), index=True)
    # [{"path", "sha256", "size"}]: the files of the home the notebook needs.
    inputs: Mapped[list] = mapped_column(JSON)
    # Paths in the run's home to keep when it ends.
    outputs: Mapped[list] = mapped_column(JSON)
    limits: Mapped[dict] = mapped_column(JSON)
    policy_version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(20))
    # Why it was refused: {"code", "text", "params"} (the holder's reason, or the pre-run's error).
    refusal: Mapped[dict | None] = mapped_column(JSON)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When the run on the real data started: what the operator's view is computed from.
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[dict | None] = mapped_column(JSON)
    # The export request its results became.
    export_request_id: Mapped[str | None] = mapped_column(ForeignKey("export_requests.id"))


# -- engine and sessions --


def db_url(settings: Settings) -> str:
    return settings.exports.db_url or f"sqlite:///{settings.home / 'exports' / 'exports.sqlite'}"


# How long a transaction waits for another's lock (SQLite's write lock, a PostgreSQL row lock) before
# it gives up: far longer than any one change of a request holds it (signing a release included).
LOCK_WAIT_SECONDS = 15
# The execution option that marks the connections of read-only transactions (Database.snapshot).
READ_ONLY = "exports_read_only"


def _sqlite_connect(dbapi_conn, _record) -> None:
    # pysqlite's own transaction handling (which begins a transaction only before a write, after the
    # reads it was decided from) is turned off: _sqlite_begin begins every transaction.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={LOCK_WAIT_SECONDS * 1000}")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    """Write transactions take the database's write lock as they begin, before reading what they
    change (SQLAlchemy's pysqlite recipe); read-only ones stay deferred and never wait for writers."""
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    lock_wait = {"options": f"-c lock_timeout={LOCK_WAIT_SECONDS * 1000}"} if url.startswith("postgresql") else {}
    engine = create_engine(url, connect_args=lock_wait)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def waited_too_long(exc: OperationalError) -> bool:
    """Whether ``exc`` is a lock wait that timed out: SQLite still busy, PostgreSQL's lock_timeout."""
    return ((getattr(exc.orig, "sqlite_errorname", None) or "").startswith("SQLITE_BUSY")
            or getattr(exc.orig, "sqlstate", None) == "55P03")


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
        self._writes = sessionmaker(self.engine, expire_on_commit=False)
        reads = {READ_ONLY: True}
        if self.engine.dialect.name == "postgresql":
            # One snapshot for the whole read: a request's state, files, votes and releases as of one moment.
            reads.update(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        self._reads = sessionmaker(self.engine.execution_options(**reads), expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction, committed at the end of the block (rolled back if it raises).

        On SQLite it holds the database's write lock from its start; on PostgreSQL the export
        request it changes must be read with ``with_for_update=True``, which locks its row.
        """
        with self._writes.begin() as session:
            yield session

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A read-only transaction: one consistent view of the database, taking no write lock."""
        with self._reads.begin() as session:
            yield session
