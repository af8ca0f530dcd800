"""The audit log's database: records and checkpoints, SQLite by default, PostgreSQL too.

The schema is created and changed only by the Alembic migrations in ``migrations/`` (run by the
audit service at start, through :mod:`enclave.migrate`).

A record row is ``(seq, entry, chain_hash)``: ``entry`` is the record's canonical encoding, the
exact text that was hashed. ``time``, ``actor``, ``action`` and ``workspace`` are columns the
database derives from ``entry`` (generated columns), indexed for queries: they cannot be written,
so they never disagree with the hashed text. On PostgreSQL ``entry`` has type ``json``, which keeps
the text exactly as given (``jsonb`` would reorder it); on SQLite it is text. Triggers refuse
``UPDATE`` and ``DELETE`` on both tables: a guard against mistakes, not against someone who can
drop them — that is what the hash chain and the signed checkpoints are for.

SQLite runs in WAL mode with ``synchronous=FULL``: a transaction is on disk when its commit returns,
which is when the writer acknowledges its records.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Computed,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.types import UserDefinedType

from .. import migrate

MIGRATIONS = Path(__file__).parent / "migrations"


class ExactJSON(UserDefinedType):
    """PostgreSQL's ``json`` type: validated, and kept byte for byte as given."""

    cache_ok = True

    def get_col_spec(self, **kw) -> str:
        return "JSON"


# Fields of the entry the database extracts for queries; `->>` reads the same in SQLite and PostgreSQL.
DERIVED = {"time": 27, "actor": 128, "action": 64, "workspace": 128}

metadata = MetaData()

records = Table(
    "audit_records", metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("entry", Text().with_variant(ExactJSON(), "postgresql"), nullable=False),
    Column("chain_hash", LargeBinary(32), nullable=False),
    *(Column(name, String(length), Computed(f"entry ->> '{name}'")) for name, length in DERIVED.items()),
    CheckConstraint("seq = CAST(entry ->> 'seq' AS BIGINT)", name="ck_audit_records_seq_in_entry"),
    Index("ix_audit_records_actor", "actor", "seq"),
    Index("ix_audit_records_workspace", "workspace", "seq"),
    Index("ix_audit_records_action", "action", "seq"),
    Index("ix_audit_records_time", "time", "seq"),
)

checkpoints = Table(
    "audit_checkpoints", metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("time", String(27), nullable=False),
    Column("root_hash", String(64), nullable=False),
    Column("chain_hash", String(64), nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("signature", String(88), nullable=False),
    # Not signed: the Merkle frontier at tree_size, so the writer can resume without rereading
    # the log (checked against root_hash before use).
    Column("frontier", LargeBinary, nullable=False),
)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _postgresql_setup(read_only: bool):
    def setup(dbapi_conn, _record) -> None:
        import psycopg.types.string

        # Read `json` columns as the text stored, not as parsed objects: the text is what was hashed.
        dbapi_conn.adapters.register_loader("json", psycopg.types.string.TextLoader)
        if read_only:
            with dbapi_conn.cursor() as cur:
                cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            dbapi_conn.commit()

    return setup


def sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def make_engine(url: str, read_only: bool = False, **kwargs) -> Engine:
    """An engine on the audit database; ``read_only`` for everything but the writer."""
    path = sqlite_path(url)
    if path is not None:
        if read_only:
            url = f"sqlite:///file:{path}?mode=ro&uri=true"
        else:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    elif engine.dialect.name == "postgresql":
        event.listen(engine, "connect", _postgresql_setup(read_only))
    return engine


def upgrade(url: str) -> None:
    """Bring the database to the newest migration (creating it if need be)."""
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    migrate.upgrade(url, MIGRATIONS)
