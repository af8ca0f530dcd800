"""The operator's egress budget, as the server applies it: every byte it lets through to the browser
is charged to a ledger on the hub side, which says whether more may go.

The per-execution budgets bound one cell, one read, one terminal command; repetition they do not
bound: a script holding the operator's cookies can run cells in a loop, or read file after file,
and page a whole release out. The egress budget bounds that, per operator and workspace, over a
rolling hour and a rolling day (``egress_hour_mb``, ``egress_day_mb``). The windows are kept by
this sandbox's audit receiver (``enclave.sandbox.egress``), root's and on the hub side, so that
restarting the server, or anything the kernel or browser does, cannot reset them; the receiver also
records each notice and hold in the audit log.

Cost: asking the receiver is a round trip on a unix socket, so it is not done per message. The
receiver's answer carries an *allowance*, the bytes that may pass before a notice or hold could be
due; the server spends it locally and reports what it spent in batches (at most
:data:`BATCH_BYTES`, or :data:`BATCH_SECONDS` old, on a timer), asking again only when a message
does not fit. At most one batch goes uncharged if the server dies, and never more than the
allowance is let through.

A receiver that does not answer holds output (fail closed), as for audit records.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from .audit import AuditTrail, RecordNotTaken
from .messages import N_, Message
from .policy import MIB

BATCH_BYTES = 1024 * 1024
BATCH_SECONDS = 5.0


@dataclass(frozen=True)
class Decision:
    """Whether a message may go to the browser; if not, ``held`` says why (a :class:`Message`, shown
    in the operator's language). (A notice is not tied to one message: :meth:`EgressBudget.take_notice`
    gives it where it shows.)"""

    allowed: bool
    held: Message | None = None


ALLOWED = Decision(True)


def _mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


# The notice and the hold, by the window (the receiver's, enclave.sandbox.egress.WINDOWS) they are about.
_NOTICES = {
    "hour": N_("[Enclave: %(percent)s %% of your egress budget for this workspace's rolling hour is used"
               " (%(used)s of %(budget)s shown in the browser). At 100 %% further output is held until older"
               " output leaves the window (from %(frees_at)s UTC). Results leave through export review, not the"
               " screen.]"),
    "day": N_("[Enclave: %(percent)s %% of your egress budget for this workspace's rolling day is used"
              " (%(used)s of %(budget)s shown in the browser). At 100 %% further output is held until older"
              " output leaves the window (from %(frees_at)s UTC). Results leave through export review, not the"
              " screen.]"),
}
_HOLDS = {
    "hour": N_("[Enclave: output held: your egress budget for this workspace's rolling hour is spent (%(used)s of"
               " %(budget)s shown in the browser). Output shows again as older output leaves the window (from"
               " %(frees_at)s UTC); the code still runs and its files are kept. Results leave through export"
               " review.]"),
    "day": N_("[Enclave: output held: your egress budget for this workspace's rolling day is spent (%(used)s of"
              " %(budget)s shown in the browser). Output shows again as older output leaves the window (from"
              " %(frees_at)s UTC); the code still runs and its files are kept. Results leave through export"
              " review.]"),
}


def _window_params(reply: dict) -> dict:
    return {"window": reply["window"], "used": _mib(reply["used"]), "budget": _mib(reply["budget"]),
            "frees_at": reply["frees_at"]}


def notice_text(reply: dict) -> Message:
    return Message("guard.egress.notice", _NOTICES.get(reply["window"], _NOTICES["hour"]),
                   {"percent": reply["used"] * 100 // max(reply["budget"], 1), **_window_params(reply)})


def held_text(reply: dict) -> Message:
    if "window" not in reply:
        return Message("guard.egress.unchecked",
                       N_("[Enclave: output held: the egress budget cannot be checked just now (%(error)s); try"
                          " again in a moment.]"), {"error": reply.get("error", "no answer")})
    return Message("guard.egress.held", _HOLDS.get(reply["window"], _HOLDS["hour"]), _window_params(reply))


class EgressBudget:
    """This server's (or terminal relay's) side of the budget: a local allowance, batched reports."""

    def __init__(self, audit: AuditTrail, budgets: dict[str, int], metered: bool = True):
        self.audit = audit
        self.budgets = budgets
        self.metered = metered
        self._lock = threading.Lock()
        self._pending = 0  # let through, not yet reported
        self._allowance = 0  # may still let through without asking
        self._reported_at = time.monotonic()
        # A notice the receiver gave that the operator has not seen yet (a read cannot show it).
        self._notice: Message | None = None

    def admit(self, channel: str, size: int) -> Decision:
        """May ``size`` more bytes go to the browser on ``channel``? Charged if so."""
        if not self.metered:
            return ALLOWED
        with self._lock:
            if size <= self._allowance and self._pending + size <= BATCH_BYTES \
                    and time.monotonic() - self._reported_at < BATCH_SECONDS:
                self._allowance -= size
                self._pending += size
                return ALLOWED
            reply = self._report(channel, size)
        if reply.get("state") == "held":
            return Decision(False, held=held_text(reply))
        if reply.get("state") == "notice":
            self._notice = notice_text(reply)
        return ALLOWED

    def spend(self, channel: str, size: int) -> None:
        """Charge bytes that go to the browser whatever the budget (a status, a stand-in reply)."""
        if not self.metered:
            return
        with self._lock:
            self._pending += size
            self._allowance = max(0, self._allowance - size)
            if self._pending > BATCH_BYTES:
                self._report(channel, 0)

    def take_notice(self) -> Message | None:
        """The notice due to the operator, once."""
        notice, self._notice = self._notice, None
        return notice

    def report_due(self, channel: str) -> None:
        """Report what was let through and not yet reported, once it is :data:`BATCH_SECONDS` old
        (called on a timer: a quiet server's last batch, or a stopping one's, is not left unreported)."""
        if self.metered and self._pending and time.monotonic() - self._reported_at >= BATCH_SECONDS:
            with self._lock:
                self._report(channel, 0)

    def flush(self, channel: str) -> None:
        """Report what was let through and not yet reported (the relay is stopping)."""
        if self.metered and self._pending:
            with self._lock:
                self._report(channel, 0)

    def _report(self, channel: str, ask: int) -> dict:
        """Report the pending bytes, ask for ``ask`` more; called with the lock held."""
        request = {"egress": {"channel": channel, "spent": self._pending, "ask": ask, "budgets": self.budgets}}
        try:
            reply = self.audit.call(request)
        except RecordNotTaken as exc:
            self._allowance = 0
            return {"state": "held", "error": str(exc)}
        if "state" not in reply:
            self._allowance = 0
            return {"state": "held", "error": reply.get("error", "no answer")}
        self._pending = 0
        self._reported_at = time.monotonic()
        self._allowance = reply.get("allowance", 0)
        return reply
