"""An audit record: its fields, what the writer accepts, and the canonical encoding that is hashed.

A source hands over ``source``, ``actor``, ``action``, ``outcome``, ``workspace``, ``sandbox`` and
``detail``; the writer adds ``seq`` (1, 2, …) and ``time`` (its own clock, UTC). The stored record
*is* its canonical encoding (the ``entry``), so there is no second copy of a field that could
disagree with what was hashed.

Canonical encoding: the record as JSON with keys sorted (by code point), separators ``,`` and
``:`` with no spaces, non-ASCII characters as themselves (Chinese text stays as it is), encoded as
UTF-8 — ``json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``. Values
are limited so that every JSON implementation reads them back exactly and writes them out the same
way: no floating-point numbers (send a decimal string such as ``"0.25"``, or an integer in a
smaller unit), integers within ±(2**53 − 1), text that is valid Unicode. For these values the
encoding is the one RFC 8785 (JSON Canonicalization Scheme) defines, except that RFC 8785 orders
keys by UTF-16 code units: the two differ only for keys mixing characters above U+FFFF with
characters in U+E000–U+FFFF.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from .actions import ACTIONS, OUTCOMES, SOURCES

# h_0, the chain hash before the first record.
GENESIS = bytes(32)
# The detail object's canonical encoding may not be longer than this: a source with more to say
# (a very long cell) records the text's SHA-256 and the start of the text.
MAX_DETAIL_BYTES = 64 * 1024
MAX_NAME_CHARS = 128
MAX_DEPTH = 8
MAX_SAFE_INTEGER = 2**53 - 1
# Fields a source hands over, and those the writer sets.
SUBMITTED_FIELDS = ("source", "actor", "action", "outcome", "workspace", "sandbox", "detail")
WRITER_FIELDS = ("seq", "time")
RECORD_FIELDS = WRITER_FIELDS + SUBMITTED_FIELDS


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class BadRecord(ValueError):
    """A record the writer refuses; the message names the field and the problem."""


@dataclass(frozen=True)
class Submitted:
    """A record as a source handed it over, checked, waiting for its ``seq`` and ``time``."""

    source: str
    actor: str
    action: str
    outcome: str
    workspace: str | None
    sandbox: str | None
    detail: dict
    detail_json: str  # canonical(detail), as text: computed once, when the record is checked

    def sealed(self, seq: int, time: str) -> dict:
        return {"seq": seq, "time": time, "source": self.source, "actor": self.actor, "action": self.action,
                "outcome": self.outcome, "workspace": self.workspace, "sandbox": self.sandbox,
                "detail": self.detail}

    def entry(self, seq: int, time: str) -> bytes:
        """``canonical(self.sealed(seq, time))``, assembled field by field in key order.

        The writer's hot path: the detail was encoded when the record was checked, and each string
        goes through the very function ``json.dumps(..., ensure_ascii=False)`` uses for strings.
        A test holds the two equal.
        """
        return _ENTRY.format(
            _quote(self.action), _quote(self.actor), self.detail_json, _quote(self.outcome),
            _quote_or_null(self.sandbox), seq, _quote(self.source), _quote(time), _quote_or_null(self.workspace),
        ).encode()


_ENTRY = ('{{"action":{},"actor":{},"detail":{},"outcome":{},"sandbox":{},"seq":{},"source":{},"time":{},'
          '"workspace":{}}}')
_quote = json.encoder.encode_basestring


def _quote_or_null(text: str | None) -> str:
    return "null" if text is None else _quote(text)


def without_floats(value):
    """``value`` with every float written as its shortest decimal string (``1.0`` -> ``"1.0"``), the
    way to hand numbers such as CPU shares or thresholds to the log."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {k: without_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_floats(v) for v in value]
    return value


def canonical(value) -> bytes:
    """The canonical encoding (see the module's docstring) of a checked record or checkpoint:
    ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` in UTF-8."""
    return _CANONICAL.encode(value).encode()


# What json.dumps builds for those arguments, built once.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain(previous: bytes, entry: bytes) -> bytes:
    """h_i = SHA-256(h_{i-1} || canonical(record_i))."""
    return hashlib.sha256(previous + entry).digest()


def timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a ``Z``: fixed width, so text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """A record's ``time`` (or a query bound: a date, or a date and time; UTC unless it says)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRecord(f"{text!r} is not an ISO 8601 date or time (e.g. 2026-03-01 or 2026-03-01T08:00:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _name(field: str, value, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise BadRecord(f"{field} must be a non-empty string, not {value!r}")
    if len(value) > MAX_NAME_CHARS:
        raise BadRecord(f"{field} is longer than {MAX_NAME_CHARS} characters")
    if _CONTROL.search(value):
        raise BadRecord(f"{field} contains a control character: {value!r}")
    _valid_text(field, value)
    return value


def _valid_text(path: str, text: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise BadRecord(f"{path} is not valid Unicode text (it holds a lone surrogate)") from None


def _plain_json(value, depth: int = 0) -> bool:
    """Detail values: JSON without floats, with integers every JSON reader keeps exact.

    The quick yes or no; :func:`_explain` finds what is wrong when it is no.
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
    if depth >= MAX_DEPTH:
        return False
    if kind is dict:
        return all(type(key) is str and _plain_json(item, depth + 1) for key, item in value.items())
    if kind is list:
        return all(_plain_json(item, depth + 1) for item in value)
    return False


def _explain(path: str, value, depth: int) -> None:
    """Raise :class:`BadRecord` naming the first value of ``value`` the log does not accept."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise BadRecord(f"{path} is an integer beyond ±(2**53 - 1), which not every JSON reader keeps exact;"
                            " send it as a string")
        return
    if isinstance(value, float):
        raise BadRecord(f"{path} is a floating-point number ({value!r}); the audit log refuses floats because"
                        " their text form is not canonical: send a decimal string or an integer")
    if isinstance(value, str):
        _valid_text(path, value)
        return
    if depth >= MAX_DEPTH:
        raise BadRecord(f"{path} is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        for i, item in enumerate(value):
            _explain(f"{path}[{i}]", item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise BadRecord(f"{path} has a key that is not a string: {key!r}")
            _valid_text(f"{path} key {key!r}", key)
            _explain(f"{path}.{key}", item, depth + 1)
        return
    raise BadRecord(f"{path} is a {type(value).__name__}, which JSON cannot hold")


def check(submitted) -> Submitted:
    """Check a record as a source handed it over; raise :class:`BadRecord` naming the problem."""
    if not isinstance(submitted, dict):
        raise BadRecord(f"a record must be a JSON object, not {type(submitted).__name__}")
    set_by_writer = [f for f in WRITER_FIELDS if f in submitted]
    if set_by_writer:
        raise BadRecord(f"{' and '.join(set_by_writer)} are set by the audit service, not by the source")
    unknown = sorted(set(submitted) - set(SUBMITTED_FIELDS))
    if unknown:
        raise BadRecord(f"unknown field(s) {', '.join(unknown)}; a record has {', '.join(SUBMITTED_FIELDS)}")

    action_name = submitted.get("action")
    if not isinstance(action_name, str):
        raise BadRecord(f"action must be a string, not {action_name!r}")
    action = ACTIONS.get(action_name)
    if action is None:
        raise BadRecord(f"unknown action {action_name!r}: the audit log records only the actions listed in"
                        " enclave/audit/actions.py (docs/audit.md)")
    source = submitted.get("source")
    if source not in SOURCES:
        raise BadRecord(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    outcome = submitted.get("outcome", "ok")
    if outcome not in OUTCOMES:
        raise BadRecord(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
    actor = _name("actor", submitted.get("actor"), required=True)
    workspace = _name("workspace", submitted.get("workspace"), required=False)
    sandbox = _name("sandbox", submitted.get("sandbox"), required=False)
    if action.where == "hub" and (workspace or sandbox):
        raise BadRecord(f"{action_name} happens outside workspaces: workspace and sandbox must be null")
    if action.where in ("workspace", "sandbox") and workspace is None:
        raise BadRecord(f"{action_name} needs the workspace it happened in")
    if action.where == "sandbox" and sandbox is None:
        raise BadRecord(f"{action_name} needs the sandbox it happened in")
    if action.where == "workspace" and sandbox is not None:
        raise BadRecord(f"{action_name} is not done in a sandbox: sandbox must be null")

    detail = submitted.get("detail", {})
    if not isinstance(detail, dict):
        raise BadRecord(f"detail must be a JSON object, not {type(detail).__name__}")
    missing = [k for k in action.required if k not in detail]
    if missing:
        raise BadRecord(f"{action_name} needs detail key(s) {', '.join(missing)}")
    extra = sorted(set(detail) - set(action.keys))
    if extra:
        allowed = ", ".join(action.keys) or "none"
        raise BadRecord(f"{action_name} does not record detail key(s) {', '.join(extra)} (it records: {allowed})")
    try:
        if not _plain_json(detail):
            raise ValueError
        detail_json = canonical(detail)  # raises UnicodeEncodeError for a lone surrogate
    except (ValueError, UnicodeEncodeError):
        _explain("detail", detail, 0)
        raise BadRecord("detail holds a value the audit log cannot encode canonically") from None
    if len(detail_json) > MAX_DETAIL_BYTES:
        raise BadRecord(f"detail is {len(detail_json)} bytes once encoded; the cap is {MAX_DETAIL_BYTES} bytes")
    return Submitted(source, actor, action_name, outcome, workspace, sandbox, detail, detail_json.decode())


def check_sealed(record: dict) -> None:
    """A record as read back from an export: the writer's fields, then the source's checks."""
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object")
    seq, time = record.get("seq"), record.get("time")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise BadRecord(f"seq must be a positive integer, not {seq!r}")
    if not isinstance(time, str) or len(time) != 27 or not time.endswith("Z"):
        raise BadRecord(f"time must look like 2026-03-01T08:00:00.000000Z, not {time!r}")
    parse_time(time)
    check({k: v for k, v in record.items() if k not in WRITER_FIELDS})
