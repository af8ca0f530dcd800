"""The egress budget's ledger: how many bytes one operator has pulled to the browser from one
workspace, over the past hour and the past day, kept on the hub side.

The per-execution budgets bound one cell, one read or one terminal command; they do not bound
repetition. This ledger does: every byte the guard lets through to the browser (kernel and terminal
output after trimming, every contents-API read) is charged here, against rolling windows of an hour
and a day whose sizes are the workspace's guard settings (``egress_hour_mb``, ``egress_day_mb``).
At :data:`NOTICE_SHARE` of a window the guard shows a notice, at all of it further output is held
until older output has left the window and its use is back under the notice mark; each is an audit
record (``egress.notice``, ``egress.held``), at most once per window's length.

Where it lives, and why: each sandbox's audit receiver (:mod:`.receiver`, run by the root
supervisor) keeps the ledger of the (operator, workspace) its spec names, never one the server
claims. The operator's kernel and browser cannot reach the receiver's socket, and the ledger's
database is root's (``$ENCLAVE_HOME/egress/egress.sqlite``, mode 0600), so neither restarting the
server nor anything written in the home resets the windows.

What it costs: the window is kept in memory as per-minute buckets of the past day; the guard
reports in batches (see ``enclave_guard.egress``), and each report is one in-memory update plus one
small SQLite upsert (WAL, ``synchronous=NORMAL``: no fsync per commit). ``benchmarks/guard_overhead.py``
measures it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

# Rolling windows, by name, in seconds.
WINDOWS = {"hour": 3600, "day": 86400}
BUCKET_SECONDS = 60
# The share of a window at which the operator is told, once per window.
NOTICE_SHARE = 0.8
DATABASE = "egress.sqlite"


def ledger_dir(audit_socket: str | Path) -> Path:
    """``$ENCLAVE_HOME/egress``, from the audit service's socket the supervisor's spec names
    (``$ENCLAVE_HOME/run/audit/audit.sock``: the run directory is always ``$ENCLAVE_HOME/run``)."""
    return Path(audit_socket).parents[2] / "egress"


@dataclass(frozen=True)
class Verdict:
    """The ledger's answer to one charge.

    ``state``: ``allowed``, ``notice`` (allowed, and the window named has just passed
    :data:`NOTICE_SHARE`) or ``held`` (the bytes asked for would pass the window's budget; they were
    not charged). ``allowance``: bytes the guard may let through before it must ask again (before
    the next notice or hold could be due). ``record``: whether this notice or hold is the first of
    its window's length, to be recorded in the audit log.
    """

    state: str
    allowance: int
    window: str = ""
    used: int = 0
    budget: int = 0
    frees_at: str = ""
    record: bool = False

    def as_reply(self) -> dict:
        reply = {"state": self.state, "allowance": self.allowance}
        if self.window:
            reply |= {"window": self.window, "used": self.used, "budget": self.budget, "frees_at": self.frees_at}
        return reply


class EgressLedger:
    """The windows of one (operator, workspace): in memory, written through to SQLite."""

    def __init__(self, path: Path, user: str, workspace: str):
        self.user, self.workspace = user, workspace
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        path.chmod(0o600)
        # Opened before the event loop that uses it runs (the supervisor's spec is read first).
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.execute("CREATE TABLE IF NOT EXISTS buckets (user TEXT, workspace TEXT, minute INTEGER,"
                        " bytes INTEGER, PRIMARY KEY (user, workspace, minute))")
        # When each window last gave a notice or a hold its audit record.
        self.db.execute("CREATE TABLE IF NOT EXISTS marks (user TEXT, workspace TEXT, window TEXT, kind TEXT,"
                        " at REAL, PRIMARY KEY (user, workspace, window, kind))")
        oldest = self._minute() - WINDOWS["day"] // BUCKET_SECONDS
        self.db.execute("DELETE FROM buckets WHERE minute <= ?", (oldest,))
        self.buckets: dict[int, int] = dict(self.db.execute(
            "SELECT minute, bytes FROM buckets WHERE user = ? AND workspace = ?", (user, workspace)))
        self.marks: dict[tuple[str, str], float] = {
            (window, kind): at for window, kind, at in self.db.execute(
                "SELECT window, kind, at FROM marks WHERE user = ? AND workspace = ?", (user, workspace))}

    @classmethod
    def open(cls, directory: Path, user: str, workspace: str) -> EgressLedger:
        return cls(directory / DATABASE, user, workspace)

    def _minute(self) -> int:
        return int(time.time() // BUCKET_SECONDS)

    def used(self, window: str) -> int:
        """Bytes charged in the window, up to now."""
        since = self._minute() - WINDOWS[window] // BUCKET_SECONDS
        return sum(b for minute, b in self.buckets.items() if minute > since)

    def _frees_at(self, window: str) -> str:
        """When the oldest bytes still in the window leave it."""
        since = self._minute() - WINDOWS[window] // BUCKET_SECONDS
        oldest = min((m for m in self.buckets if m > since), default=self._minute())
        at = (oldest + 1) * BUCKET_SECONDS + WINDOWS[window]
        return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M")

    def _due(self, window: str, kind: str) -> bool:
        """A notice or hold is recorded at most once per its window's length."""
        return time.time() - self.marks.get((window, kind), float("-inf")) >= WINDOWS[window]

    def charge(self, spent: int, ask: int, budgets: dict[str, int]) -> Verdict:
        """Charge ``spent`` bytes (already let through), then ``ask`` bytes if every window has room
        for them; say what the guard does next."""
        self._add(spent)
        used = {w: self.used(w) for w in budgets}
        # Full: no room for what is asked; or held within the window's length and not yet back
        # under the notice mark, so that a hold is not a stutter of small outputs that still fit.
        full = [w for w, budget in budgets.items()
                if used[w] + ask > budget or (not self._due(w, "held") and used[w] >= NOTICE_SHARE * budget)]
        if full:
            window = full[0]
            verdict = Verdict("held", 0, window, used[window], budgets[window], self._frees_at(window),
                              record=self._due(window, "held"))
            self._mark(verdict, "held")
            return verdict
        self._add(ask)
        used = {w: u + ask for w, u in used.items()}
        noticed = [w for w, budget in budgets.items() if used[w] >= NOTICE_SHARE * budget and self._due(w, "notice")]
        if not noticed:
            return Verdict("allowed", self._allowance(used, budgets))
        window = noticed[0]
        verdict = Verdict("notice", 0, window, used[window], budgets[window], self._frees_at(window), record=True)
        self._mark(verdict, "notice")
        return replace(verdict, allowance=self._allowance(used, budgets))

    def _allowance(self, used: dict[str, int], budgets: dict[str, int]) -> int:
        """Bytes before the next event is due: a window's notice while it has none, else its hold."""
        room = [(int(NOTICE_SHARE * budget) if self._due(w, "notice") else budget) - used[w]
                for w, budget in budgets.items()]
        return max(0, min(room, default=0))

    def _add(self, size: int) -> None:
        if size <= 0:
            return
        minute = self._minute()
        self.buckets[minute] = self.buckets.get(minute, 0) + size
        self.db.execute("INSERT INTO buckets VALUES (?, ?, ?, ?) ON CONFLICT (user, workspace, minute)"
                        " DO UPDATE SET bytes = excluded.bytes",
                        (self.user, self.workspace, minute, self.buckets[minute]))
        oldest = minute - WINDOWS["day"] // BUCKET_SECONDS
        for old in [m for m in self.buckets if m <= oldest]:
            del self.buckets[old]

    def _mark(self, verdict: Verdict, kind: str) -> None:
        if not verdict.record:
            return
        at = time.time()
        self.marks[(verdict.window, kind)] = at
        self.db.execute("INSERT INTO marks VALUES (?, ?, ?, ?, ?) ON CONFLICT (user, workspace, window, kind)"
                        " DO UPDATE SET at = excluded.at", (self.user, self.workspace, verdict.window, kind, at))

