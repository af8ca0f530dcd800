"""Reading the audit log: queries, streams of records, exports and inclusion proofs.

Everything here opens the database read-only (SQLite ``mode=ro``; PostgreSQL read-only
transactions): reads never go through the audit service, and can never write.

Queries select on the columns the database derives from each record (actor, workspace, action,
time), each indexed together with ``seq``. Time bounds become ``seq`` bounds first: the writer's
clock never goes backwards, so records are in time order when they are in ``seq`` order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TextIO

from sqlalchemy import select

from ..settings import Settings
from . import merkle, models
from .actions import actions_matching
from .checkpoints import LOG_ID, Checkpoint
from .records import GENESIS, parse_time, timestamp

MAX_PAGE = 1000
_STREAM_BATCH = 20_000


class NoAuditLog(Exception):
    """There is no audit database to read (the audit service has never run with these settings)."""


class BadQuery(ValueError):
    """A query the reader cannot run; the message says why."""


class AuditReader:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        url = settings.audit_db_url
        path = models.sqlite_path(url)
        if path is not None and not path.exists():
            raise NoAuditLog(f"no audit log at {path}: the audit service has not run with these settings")
        self.engine = models.make_engine(url, read_only=True)

    def close(self) -> None:
        self.engine.dispose()

    # -- queries --

    def query(self, user: str | None = None, workspace: str | None = None, action: str | None = None,
              since: str | None = None, until: str | None = None, after: int | None = None,
              limit: int = 100, newest_first: bool = False) -> dict:
        """One page of records matching every filter given; ``next`` continues after the page.

        ``action`` is a name or a prefix ending in ``.*``; ``since`` is inclusive, ``until`` exclusive.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise BadQuery(f"limit must be between 1 and {MAX_PAGE}")
        r = models.records.c
        conditions = []
        if user:
            conditions.append(r.actor == user)
        if workspace:
            conditions.append(r.workspace == workspace)
        if action:
            names = actions_matching(action)
            if not names:
                raise BadQuery(f"no action matches {action!r} (see docs/audit.md)")
            conditions.append(r.action == names[0] if len(names) == 1 else r.action.in_(names))
        if after is not None:
            conditions.append(r.seq < after if newest_first else r.seq > after)
        with self.engine.connect() as c:
            bounds = self._seq_range(c, since, until)
            if bounds is None:
                return {"records": [], "next": None}
            lo, hi = bounds
            if lo is not None:
                conditions.append(r.seq >= lo)
            if hi is not None:
                conditions.append(r.seq <= hi)
            order = r.seq.desc() if newest_first else r.seq
            rows = c.execute(select(r.seq, r.entry).where(*conditions).order_by(order).limit(limit + 1)).all()
        page = [json.loads(entry) for _, entry in rows[:limit]]
        return {"records": page, "next": rows[limit - 1].seq if len(rows) > limit else None}

    @staticmethod
    def _seq_range(c, since: str | None, until: str | None) -> tuple[int | None, int | None] | None:
        """The seq bounds of [since, until) (None: open on that side), or None when no record is in it."""
        r = models.records.c
        try:
            since_text = timestamp(parse_time(since)) if since else None
            until_text = timestamp(parse_time(until)) if until else None
        except ValueError as exc:
            raise BadQuery(str(exc)) from None
        lo = hi = None
        if since_text:
            lo = c.execute(select(r.seq).where(r.time >= since_text).order_by(r.time, r.seq).limit(1)).scalar()
            if lo is None:
                return None
        if until_text:
            hi = c.execute(select(r.seq).where(r.time < until_text).order_by(r.time.desc(), r.seq.desc())
                           .limit(1)).scalar()
            if hi is None:
                return None
        if lo is not None and hi is not None and lo > hi:
            return None
        return lo, hi

    def checkpoints(self) -> list[Checkpoint]:
        cp = models.checkpoints.c
        with self.engine.connect() as c:
            rows = c.execute(select(cp.tree_size, cp.time, cp.root_hash, cp.chain_hash, cp.key_id, cp.signature)
                             .order_by(cp.tree_size)).all()
        return [Checkpoint(*row) for row in rows]

    def chain_hash_before(self, seq: int) -> bytes:
        if seq <= 1:
            return GENESIS
        with self.engine.connect() as c:
            stored = c.execute(select(models.records.c.chain_hash).where(models.records.c.seq == seq - 1)).scalar()
        if stored is None:
            raise BadQuery(f"record {seq - 1} is not in the log")
        return bytes(stored)

    # -- streaming, for verification, export and proofs --

    def stream(self, first: int = 1, last: int | None = None) -> Iterator[tuple[int, bytes, bytes]]:
        """(seq, entry, chain hash) in ``seq`` order, read in large batches straight from the driver.

        The entry comes as the UTF-8 bytes that were hashed.
        """
        as_bytes = {"postgresql": "convert_to(entry::text, 'UTF8')"}.get(self.engine.dialect.name, "CAST(entry AS BLOB)")
        sql = f"SELECT seq, {as_bytes}, chain_hash FROM audit_records WHERE seq >= ?"
        params: tuple = (first,)
        if last is not None:
            sql += " AND seq <= ?"
            params += (last,)
        sql += " ORDER BY seq"
        raw = self.engine.raw_connection()
        try:
            if self.engine.dialect.name == "postgresql":
                # A server-side cursor: a million rows arrive batch by batch, not all at once.
                cursor = raw.driver_connection.cursor(name="audit_stream")
                sql = sql.replace("?", "%s")
            else:
                cursor = raw.cursor()
            cursor.execute(sql, params)
            while batch := cursor.fetchmany(_STREAM_BATCH):
                yield from batch
            cursor.close()
        finally:
            raw.close()

    def export(self, out: TextIO, since: str | None = None, until: str | None = None) -> int:
        """Write the log (or the records in [since, until)) as JSON Lines; return the records written.

        Line 1 says where the export starts: ``{"audit_export": {...}}`` with the chain hash before
        its first record. Each record line is the record's canonical entry with a ``chain_hash``
        member added. Each checkpoint follows the record it seals, as ``{"checkpoint": {...}}``.
        """
        with self.engine.connect() as c:
            bounds = self._seq_range(c, since, until)
        partial = bool(since or until)
        if bounds is None:
            first = last = 0
        else:
            first, last = bounds[0] or 1, bounds[1] or self.last_seq()
        empty = first == 0 or first > last
        cps = self.checkpoints()
        header = {"log": LOG_ID, "first_seq": max(first, 1), "last_seq": last, "complete": not partial,
                  "previous_chain_hash": (GENESIS if empty else self.chain_hash_before(first)).hex()}
        out.write(json.dumps({"audit_export": header}) + "\n")
        sealing = {cp.tree_size: cp for cp in cps if first <= cp.tree_size <= last}
        written = 0
        if not empty:
            for seq, entry, chain_hash in self.stream(first, last):
                out.write(f'{entry[:-1].decode()},"chain_hash":"{chain_hash.hex()}"}}\n')
                written += 1
                cp = sealing.get(seq)
                if cp is not None:
                    out.write(json.dumps({"checkpoint": cp.to_json()}) + "\n")
        if not partial:
            # Checkpoints beyond the last record (a truncated log) go along, so the export shows it.
            for cp in cps:
                if cp.tree_size > last:
                    out.write(json.dumps({"checkpoint": cp.to_json()}) + "\n")
        return written

    def last_seq(self) -> int:
        with self.engine.connect() as c:
            return c.execute(select(models.records.c.seq).order_by(models.records.c.seq.desc()).limit(1)).scalar() or 0

    def prove(self, seq: int) -> dict:
        """An inclusion proof of record ``seq`` against the newest checkpoint.

        Checked by :func:`enclave.audit.verify.check_inclusion` with the audit public key alone.
        """
        newest = self._newest_checkpoint()
        if not 1 <= seq <= newest.tree_size:
            raise BadQuery(f"record {seq} is not covered by the newest checkpoint (tree size {newest.tree_size});"
                           " the next checkpoint will cover it")
        leaves, record = self._leaves(newest, wanted=seq)
        return {"record": record, "leaf_index": seq - 1, "tree_size": newest.tree_size,
                "inclusion_proof": [h.hex() for h in merkle.inclusion_proof(leaves, seq - 1)],
                "checkpoint": newest.to_json()}

    def prove_consistency(self, old_size: int) -> dict:
        """A consistency proof: the newest checkpoint's tree extends the one of checkpoint ``old_size``.

        Whoever kept an older checkpoint checks with :func:`enclave.audit.verify.check_consistency`
        that nothing it covered was changed since.
        """
        older = {cp.tree_size: cp for cp in self.checkpoints()}.get(old_size)
        if older is None:
            raise BadQuery(f"there is no checkpoint at tree size {old_size}")
        newest = self._newest_checkpoint()
        leaves, _ = self._leaves(newest)
        return {"old_checkpoint": older.to_json(), "checkpoint": newest.to_json(),
                "consistency_proof": [h.hex() for h in merkle.consistency_proof(leaves, old_size)]}

    def _newest_checkpoint(self) -> Checkpoint:
        cps = self.checkpoints()
        if not cps:
            raise BadQuery("the log has no checkpoint yet")
        return cps[-1]

    def _leaves(self, checkpoint: Checkpoint, wanted: int | None = None) -> tuple[list[bytes], dict | None]:
        """The Merkle leaves of the records ``checkpoint`` covers (and record ``wanted``, parsed)."""
        leaves, record = [], None
        for seq, entry, _ in self.stream(1, checkpoint.tree_size):
            leaves.append(merkle.leaf_hash(entry))
            if seq == wanted:
                record = json.loads(entry)
        if len(leaves) != checkpoint.tree_size or merkle.root(leaves).hex() != checkpoint.root_hash:
            raise BadQuery(f"the records do not match checkpoint {checkpoint.tree_size}: run 'enclave audit verify'")
        return leaves, record
