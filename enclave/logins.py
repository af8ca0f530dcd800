"""Slowing down password guessing without letting strangers lock people out.

A lock-out per account lets anyone who knows a user name keep its owner out. Enclave throttles per
(client address, account) instead, worked out from the failures stored in Enclave's database
(:class:`enclave.db.LoginFailure`, so it survives hub restarts):

* After ``allowed_failures`` wrong passwords in a row from one client for one account, that client's
  next attempt for that account is refused without checking the password until a delay has passed
  since its last failure: ``first_delay`` after the first failure past the allowance, doubling with
  each further failure, at most ``max_delay``. A client that has not failed is never slowed down, and
  a client's failures are forgotten when it logs in.
* A distributed guesser spreads its attempts over many addresses, each staying under the
  allowance. Once one account has had ``failures_per_hour`` failures in the past hour, from all
  addresses together, every client that has failed for that account (in the past day, since it
  last logged in) is refused until the count falls below the ceiling again. A client that has not
  failed still has its password checked. The trade-off: the owner on a fresh address still gets in,
  and so does one guess from each address the guesser has not used yet (the guesser's rate is then
  bounded by the addresses it has, not by time); the owner on an address that failed during the
  attack waits for the hour to pass (or for an admin to clear the throttle, ``enclave user
  clear-throttle``).

The client address is the one the proxy saw (:func:`client_address`), never one a client states.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from . import db

HOUR = timedelta(hours=1)
# Failures older than this are forgotten: a guesser that slow gets nowhere, and the table stays small.
REMEMBERED = timedelta(days=1)
# Not (yet) in Enclave's settings: the authenticator's traitlets default to these.
FIRST_DELAY_SECONDS = 30
FAILURES_PER_HOUR = 30


def client_address(request) -> str:
    """The address a request came from, as configurable-http-proxy saw it.

    Every request reaches the hub through the proxy, which appends the peer it accepted the
    connection from to ``X-Forwarded-For``: the last entry is the proxy's own hop, whatever the
    client put before it. Tornado's ``remote_ip`` (JupyterHub 6.1.1 runs its server with
    ``xheaders=True``) takes that same entry, but prefers an ``X-Real-Ip`` header, which the proxy
    passes on untouched from the client: a stranger could name any address there.

    The hub listens on a unix socket, which the proxy (root) connects to, and which each sandbox's
    server reaches too, for the hub's API. What a sandbox sends is its own words, X-Forwarded-For
    included: its requests are one client, named by its uid, however many addresses it makes up.
    """
    peer_uid = _unix_peer_uid(request)
    if peer_uid not in (None, 0):
        return f"uid:{peer_uid}"
    forwarded = request.headers.get("X-Forwarded-For", "")
    last_hop = forwarded.rsplit(",", 1)[-1].strip()
    try:
        address = ipaddress.ip_address(last_hop)
    except ValueError:
        return "unknown"  # not through the proxy: every such request is one client
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def _unix_peer_uid(request) -> int | None:
    """The uid of the process at the other end of a unix-socket connection (SO_PEERCRED); None for
    a TCP connection or one already closed."""
    stream = getattr(request.connection, "stream", None)
    sock = getattr(stream, "socket", None)
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid


def _utc(moment: datetime) -> datetime:
    """SQLite hands back the UTC times it stores without their zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=db.utcnow().tzinfo)


@dataclass(frozen=True)
class Throttling:
    """The rule: see the module's docstring."""

    allowed_failures: int
    first_delay: timedelta
    max_delay: timedelta
    failures_per_hour: int

    @classmethod
    def from_settings(cls, settings) -> "Throttling":
        """The rule the hub applies (``accounts.allowed_failed_logins``; ``accounts.lockout_seconds``
        caps the delay), for the hub's authenticator and the admins' commands alike."""
        return cls(settings.accounts.allowed_failed_logins, timedelta(seconds=FIRST_DELAY_SECONDS),
                   timedelta(seconds=settings.accounts.lockout_seconds), FAILURES_PER_HOUR)

    def delay_after(self, failures: int) -> timedelta | None:
        """How long a client waits after its ``failures``-th failure in a row (None: not at all)."""
        if failures < self.allowed_failures:
            return None
        doublings = min(failures - self.allowed_failures, 32)
        return min(self.first_delay * 2 ** doublings, self.max_delay)


@dataclass(frozen=True)
class Throttle:
    """A client's failures for an account, and until when its attempts are refused (None: they are
    not; its next failure may change that)."""

    username: str
    client: str
    failures: int
    until: datetime | None


@dataclass(frozen=True)
class AccountFailures:
    """What the stored failures of one account say at one moment."""

    rule: Throttling
    now: datetime
    failed_at_by_client: dict[str, list[datetime]]  # oldest first

    @classmethod
    def load(cls, session: Session, rule: Throttling, username: str, now: datetime) -> "AccountFailures":
        session.execute(delete(db.LoginFailure).where(db.LoginFailure.failed_at < now - REMEMBERED))
        rows = session.execute(
            select(db.LoginFailure.client, db.LoginFailure.failed_at)
            .where(db.LoginFailure.username == username).order_by(db.LoginFailure.failed_at)).all()
        by_client: dict[str, list[datetime]] = {}
        for client, failed_at in rows:
            by_client.setdefault(client, []).append(_utc(failed_at))
        return cls(rule, now, by_client)

    def failures_of(self, client: str) -> int:
        return len(self.failed_at_by_client.get(client, []))

    @property
    def past_hour(self) -> list[datetime]:
        return sorted(t for times in self.failed_at_by_client.values() for t in times if t > self.now - HOUR)

    def ceiling_until(self) -> datetime | None:
        """While the account is past its hourly ceiling: when enough failures will have aged out."""
        recent = self.past_hour
        if len(recent) < self.rule.failures_per_hour:
            return None
        return recent[len(recent) - self.rule.failures_per_hour] + HOUR

    def client_until(self, client: str) -> datetime | None:
        times = self.failed_at_by_client.get(client, [])
        delay = self.rule.delay_after(len(times))
        return times[-1] + delay if delay is not None else None

    def refusal(self, client: str) -> str | None:
        """Why ``client`` may not try a password for the account now, if it may not."""
        until = self.client_until(client)
        if until is not None and until > self.now:
            return f"throttled until {until.isoformat()}: repeated failed logins from this client"
        ceiling = self.ceiling_until()
        if ceiling is not None and self.failures_of(client):
            return (f"throttled until {ceiling.isoformat()}: {len(self.past_hour)} failed logins for this"
                    " account in the past hour, and this client has failed")
        return None

    def throttle(self, username: str, client: str) -> Throttle:
        untils = [u for u in (self.client_until(client), self.ceiling_until() if self.failures_of(client) else None)
                  if u is not None and u > self.now]
        return Throttle(username, client, self.failures_of(client), max(untils, default=None))


def record_failure(session: Session, username: str, client: str, now: datetime) -> None:
    session.add(db.LoginFailure(username=username, client=client, failed_at=now))


def forget_client(session: Session, username: str, client: str) -> None:
    """A client that logged in starts afresh."""
    session.execute(delete(db.LoginFailure).where(
        db.LoginFailure.username == username, db.LoginFailure.client == client))


def throttles(settings) -> list[Throttle]:
    """Every client with failures on record, by account and client."""
    rule, now = Throttling.from_settings(settings), db.utcnow()
    with db.transaction(settings.enclave_db_url) as s:
        names = s.scalars(select(db.LoginFailure.username).distinct().order_by(db.LoginFailure.username)).all()
        found = []
        for username in names:
            failures = AccountFailures.load(s, rule, username, now)
            found += [failures.throttle(username, client) for client in sorted(failures.failed_at_by_client)]
        return found


def clear(session: Session, username: str, client: str | None = None) -> int:
    """Forget the account's failures (those of one client only, given ``client``); how many there were."""
    query = delete(db.LoginFailure).where(db.LoginFailure.username == username)
    if client is not None:
        query = query.where(db.LoginFailure.client == client)
    return session.execute(query).rowcount
