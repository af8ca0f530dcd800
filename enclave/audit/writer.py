"""The audit log's one writer: appends records in batches and seals them with signed checkpoints.

Only the audit service creates a :class:`Writer`, and :meth:`Writer.open` first takes an exclusive
lock that the process holds until it exits — an advisory lock in PostgreSQL, a ``flock`` on a file
next to the SQLite database. A second writer therefore cannot start while one runs (it gets
:class:`WriterBusy`), and the operating system or the database releases the lock when the writer
dies, even by ``kill -9``. Nothing else in Enclave inserts into the log; readers open it read-only.

:meth:`Writer.append` seals a batch (sequence numbers, times, chain hashes, Merkle leaves) and
inserts it in one transaction; the writer's state moves on only once that transaction committed,
so a record is acknowledged only when it is on disk and a failed batch leaves nothing behind.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from datetime import UTC, datetime

from sqlalchemy import insert, select

from ..settings import Settings
from . import checkpoint_copy_path, checkpoints, merkle, models
from .records import GENESIS, Submitted, chain, timestamp

log = logging.getLogger("enclave.audit")

# Any 64-bit number will do, as long as nothing else in the database uses it.
POSTGRESQL_LOCK_KEY = 0x656E636C61756474  # "enclaudt"


class WriterBusy(Exception):
    """Another audit writer holds the log."""


class AuditLogDamaged(Exception):
    """The log, its checkpoints or its key do not allow the writer to continue it safely.

    Appending on top of a log that does not verify would seal the damage under a new checkpoint,
    so the service refuses to start; ``enclave audit verify`` gives the whole picture.
    """


class WriterLock:
    """Held for as long as the writer runs; released by the kernel or the database when it dies.

    A new writer waits up to ``wait`` seconds for it: a service of a restarted hub may start while
    the one before it (orphaned by a killed hub) is still sealing its last checkpoint."""

    def __init__(self, url: str, engine, wait: float = 0.0) -> None:
        self._file = None
        self._connection = None
        deadline = time.monotonic() + wait
        path = models.sqlite_path(url)
        if path is not None:
            lock_path = path.with_name(path.name + ".writer-lock")
            self._file = open(lock_path, "a")
            while not self._try(lambda: fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)):
                if time.monotonic() > deadline:
                    self._file.close()
                    raise WriterBusy(f"another audit writer holds {lock_path}: only one audit service may run"
                                     " per audit log")
                time.sleep(0.2)
        else:
            self._connection = engine.connect()
            while not self._try_advisory_lock():
                if time.monotonic() > deadline:
                    self._connection.close()
                    raise WriterBusy("another audit writer holds the audit database's writer lock (PostgreSQL"
                                     f" advisory lock {POSTGRESQL_LOCK_KEY}): only one audit service may run per"
                                     " audit log")
                time.sleep(0.2)

    @staticmethod
    def _try(take) -> bool:
        try:
            take()
        except BlockingIOError:
            return False
        return True

    def _try_advisory_lock(self) -> bool:
        held = self._connection.exec_driver_sql(f"SELECT pg_try_advisory_lock({POSTGRESQL_LOCK_KEY})").scalar()
        self._connection.commit()
        return bool(held)

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._connection is not None:
            self._connection.close()


class Writer:
    """The log's state (size, chain hash, Merkle frontier, newest checkpoint) and its only inserts."""

    def __init__(self, settings: Settings, engine, lock: WriterLock) -> None:
        self.settings = settings
        self.engine = engine
        self._lock = lock
        self.copy_path = checkpoint_copy_path(settings)
        self.key = None
        self.size = 0
        self.chain_hash = GENESIS
        self.frontier = merkle.Frontier()
        self.last_time = ""
        self.sealed_size = 0  # tree size of the newest checkpoint
        self._state_unknown = False
        # The writer's own connection, for its lifetime (each batch is one transaction on it).
        self._connection = engine.connect()
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._insert_records = f"INSERT INTO audit_records (seq, entry, chain_hash) VALUES ({mark}, {mark}, {mark})"

    @classmethod
    def open(cls, settings: Settings, wait: float = 0.0) -> "Writer":
        """Take the writer lock (waiting up to ``wait`` seconds for it), migrate the database, check
        the log's tail and resume it."""
        settings.audit_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        url = settings.audit_db_url
        engine = models.make_engine(url)
        lock = WriterLock(url, engine, wait)
        writer = None
        try:
            models.upgrade(url)
            writer = cls(settings, engine, lock)
            writer._resume()
        except BaseException:
            if writer is not None:
                writer.close()
            else:
                lock.release()
                engine.dispose()
            raise
        return writer

    def close(self) -> None:
        self._connection.close()
        self.engine.dispose()
        self._lock.release()

    # -- resuming: the newest checkpoint, then the records after it --

    def _resume(self) -> None:
        private_path, public_path = checkpoints.key_paths(self.settings)
        with self.engine.connect() as c:
            stored = [_checkpoint(row) for row in c.execute(
                select(models.checkpoints).order_by(models.checkpoints.c.tree_size))]
        if private_path.exists():
            self.key = checkpoints.load_key(self.settings)
            public = self.key.public_key()
            if not public_path.exists() or public_path.read_bytes() != checkpoints.public_pem(public):
                raise AuditLogDamaged(f"{public_path} is missing or is not the public half of {private_path}")
        elif stored:
            raise AuditLogDamaged(f"the audit signing key {private_path} is missing, but the log has checkpoints"
                                  f" signed by key {stored[-1][0].key_id}: restore the key; a new one is never made"
                                  " for an existing log")
        else:
            self.key = checkpoints.create_key(self.settings)
            log.info("created the audit signing key %s", private_path)
        self._reconcile_copy([cp for cp, _ in stored])
        self._load_state(stored[-1] if stored else None)

    def _load_state(self, newest: tuple[checkpoints.Checkpoint, bytes] | None) -> None:
        public = self.key.public_key()
        size, chain_hash, frontier = 0, GENESIS, merkle.Frontier()
        if newest is not None:
            cp, packed = newest
            problem = checkpoints.signature_problem(public, cp)
            if problem:
                raise AuditLogDamaged(f"the newest checkpoint (tree size {cp.tree_size}) is {problem}")
            frontier = merkle.Frontier.unpack(cp.tree_size, packed)
            if frontier.root().hex() != cp.root_hash:
                raise AuditLogDamaged(f"the stored Merkle frontier of checkpoint {cp.tree_size} does not match its root")
            size, chain_hash = cp.tree_size, bytes.fromhex(cp.chain_hash)
        with self.engine.connect() as c:
            if size:
                sealed = c.execute(select(models.records.c.chain_hash).where(models.records.c.seq == size)).scalar()
                if sealed is None:
                    raise AuditLogDamaged(f"record {size} is missing, but the newest checkpoint covers it:"
                                          " the log was truncated")
                if bytes(sealed) != chain_hash:
                    raise AuditLogDamaged(f"record {size}'s chain hash differs from the one its checkpoint signed")
            last_entry = ""
            rows = c.execute(select(models.records.c.seq, models.records.c.entry, models.records.c.chain_hash)
                             .where(models.records.c.seq > size).order_by(models.records.c.seq))
            for seq, entry, stored_hash in rows:
                if seq != size + 1:
                    raise AuditLogDamaged(f"record {size + 1} is missing: after record {size} comes record {seq}")
                data = entry.encode()
                chain_hash = chain(chain_hash, data)
                if chain_hash != bytes(stored_hash):
                    raise AuditLogDamaged(f"record {seq} does not match its chain hash (edited, inserted or reordered)")
                frontier.append(merkle.leaf_hash(data))
                size, last_entry = seq, entry
            if size and not last_entry:
                last_entry = c.execute(select(models.records.c.entry).where(models.records.c.seq == size)).scalar()
        self.size, self.chain_hash, self.frontier = size, chain_hash, frontier
        self.last_time = json.loads(last_entry)["time"] if last_entry else ""
        self.sealed_size = newest[0].tree_size if newest else 0

    def _reconcile_copy(self, stored: list[checkpoints.Checkpoint]) -> None:
        """The second copy must hold the database's checkpoints, and nothing else.

        The writer appends to it after the database commit, so a crash can leave it short of the
        newest checkpoint, or with half a line: both are repaired here. Anything else is damage.
        """
        data = self.copy_path.read_bytes() if self.copy_path.exists() else b""
        if data and not data.endswith(b"\n"):
            log.warning("dropping an interrupted last line of %s", self.copy_path)
            os.truncate(self.copy_path, data.rfind(b"\n") + 1)
        copy, problems = checkpoints.read_copy(self.copy_path)
        if problems:
            raise AuditLogDamaged("; ".join(problems))
        in_database = {cp.tree_size: cp for cp in stored}
        for cp in copy:
            if in_database.get(cp.tree_size) != cp:
                raise AuditLogDamaged(f"checkpoint {cp.tree_size} of {self.copy_path} is not in the database as it"
                                      " is in the copy")
        copied = set(copy)
        lagging = [cp for cp in stored if cp not in copied]
        if lagging and lagging != stored[-1:]:
            raise AuditLogDamaged(f"{self.copy_path} lacks checkpoint {lagging[0].tree_size}")
        for cp in lagging:
            checkpoints.append_to_copy(self.copy_path, cp)

    # -- appending --

    def append(self, batch: list[Submitted]) -> list[int]:
        """Seal and insert ``batch`` in one transaction; return the records' sequence numbers."""
        if self._state_unknown:
            self._resume_after_failure()
        seq, chain_hash, frontier, last_time = self.size, self.chain_hash, self.frontier.copy(), self.last_time
        rows = []
        for record in batch:
            seq += 1
            # The writer's clock, never going backwards: a step back stamps the last time again.
            last_time = max(timestamp(datetime.now(UTC)), last_time)
            entry = record.entry(seq, last_time)
            chain_hash = chain(chain_hash, entry)
            frontier.append(merkle.leaf_hash(entry))
            rows.append((seq, entry.decode(), chain_hash))
        try:
            with self._connection.begin():
                # Straight to the driver's executemany: this runs for every batch of the log.
                self._connection.exec_driver_sql(self._insert_records, rows)
        except Exception:
            # Whether the commit happened is not known: take the state from the database next time.
            self._state_unknown = True
            raise
        first = self.size + 1
        self.size, self.chain_hash, self.frontier, self.last_time = seq, chain_hash, frontier, last_time
        return list(range(first, seq + 1))

    def _resume_after_failure(self) -> None:
        with self.engine.connect() as c:
            newest = c.execute(select(models.checkpoints).order_by(models.checkpoints.c.tree_size.desc()).limit(1)).first()
        self._load_state(_checkpoint(newest) if newest else None)
        self._state_unknown = False

    def checkpoint(self) -> checkpoints.Checkpoint | None:
        """Sign the tree head over every record so far (if any came since the last checkpoint)."""
        if self.size == self.sealed_size or self._state_unknown:
            return None
        moment = max(timestamp(datetime.now(UTC)), self.last_time)
        cp = checkpoints.sign(self.key, self.size, moment, self.frontier.root(), self.chain_hash)
        with self._connection.begin():
            self._connection.execute(insert(models.checkpoints), {**cp.to_json(), "frontier": self.frontier.packed()})
        checkpoints.append_to_copy(self.copy_path, cp)
        self.sealed_size = cp.tree_size
        return cp


def _checkpoint(row) -> tuple[checkpoints.Checkpoint, bytes]:
    m = row._mapping
    cp = checkpoints.Checkpoint(m["tree_size"], m["time"], m["root_hash"], m["chain_hash"], m["key_id"], m["signature"])
    return cp, bytes(m["frontier"])
