"""What every gate returns, and what the gates share: released text values, key columns."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from enclave.i18n import Message, N_

from ..contract import Contract, Problem


def says(text: str, **params) -> Problem:
    """A gate's detail (or a part of it): an English ``text`` marked with ``N_`` and its ``params``
    (messages among them shown in the same locale), under the code ``gate.detail``."""
    return Problem("gate.detail", text, params)

PSEUDONYM = re.compile(r"^[0-9a-f]{20}$")


@dataclass(frozen=True)
class GateResult:
    gate: str
    table: str | None
    value: float | int | None
    threshold: str
    passed: bool
    detail: str = ""
    # The detail as a message, for the holder's language (the command's refusal, the report): its
    # English is ``detail``. See :func:`because`.
    reason: object = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict:
        """The result as the manifest keeps it: the English ``detail``, and the ``reason`` as plain
        JSON (:func:`reason_as_json`) that the report shows in the holder's language; no ``reason``
        for a result without one."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "reason"}
        if isinstance(d["value"], float) and math.isnan(d["value"]):
            d["value"] = None
        if self.reason is not None:
            d["reason"] = reason_as_json(self.reason)
        return d


def reason_as_json(value):
    """A gate's reason, or one of its params, in plain JSON values that render as the reason did:
    a message as ``{"code", "text", "params"}`` (its English text with ``%(name)s`` placeholders),
    parts joined (:class:`Joined`) as ``{"code": "gate.detail", "parts", "separator"}``, a list as
    a list, numpy numbers as Python's, and anything else (non-finite numbers among them) as text.
    ``synthetic.report.gate_reason`` reads it back."""
    if isinstance(value, Joined):
        return {"code": "gate.detail", "parts": [reason_as_json(p) for p in value.parts],
                "separator": value.separator}
    if isinstance(value, Message):
        return {"code": value.code, "text": value.text,
                "params": {str(k): reason_as_json(v) for k, v in value.params.items()}}
    if isinstance(value, list | tuple):
        return [reason_as_json(v) for v in value]
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        # str() as "%s" writes it (np.float32(0.1) is "0.1", float() of it 0.10000000149011612)
        return float(str(value)) if math.isfinite(value) else str(value)
    return str(value)


def verdicts(gates: list[dict]) -> list[dict]:
    """A manifest's gate results as the audit log keeps them: the verdicts alone. A gate's detail
    and reason may name values of the data, which stay on the holder's side."""
    return [{k: g[k] for k in ("gate", "table", "value", "threshold", "passed")} for g in gates]


def because(gate: str, table: str | None, value, threshold: str, passed: bool, reason=None) -> GateResult:
    """A gate's result whose detail is ``reason``: a message (:class:`synthetic.contract.Problem`,
    :class:`Joined`), in English in the manifest, in the holder's language where it is shown."""
    return GateResult(gate, table, value, threshold, passed, str(reason) if reason else "", reason)


class Joined:
    """Parts of a detail (messages, or text as it is) joined as the locale joins clauses: ``"; "``
    or ``", "`` in English, ``"；"`` or ``"，"`` in Chinese."""

    def __init__(self, parts, separator: str = "; ") -> None:
        self.parts, self.separator = list(parts), separator

    def __bool__(self) -> bool:
        return bool(self.parts)

    def render(self, locale: str = "en") -> str:
        separator = self.separator if locale == "en" else {"; ": "；", ", ": "，"}[self.separator]
        return separator.join(p.render(locale) if hasattr(p, "render") else str(p) for p in self.parts)

    def __str__(self) -> str:
        return self.render()


class GateFailure(Exception):
    """A release refused: the gates that failed, each with its code (``gate.k_anonymity``,
    ``gate.analysis`` for every declared analysis); ``str()`` is in English, :meth:`render` in a
    locale, each gate's reason included."""

    code = "release.gates_failed"

    def __init__(self, results: list[GateResult]):
        self.results = results
        self.manifest: dict | None = None
        self.failed = [r for r in results if not r.passed]
        super().__init__(self._text("en", codes=False))

    def render(self, locale: str = "en") -> str:
        """The refusal in ``locale``, each failed gate on a line of its own with its code."""
        return self._text(locale, codes=True)

    def _text(self, locale: str, codes: bool) -> str:
        lines = [Message(self.code, N_("release refused, gate(s) failed:")).render(locale)]
        for r in self.failed:
            line = Message(gate_code(r.gate), N_("%(gate)s%(table)s: %(value)s (needs %(threshold)s)"),
                           {"gate": r.gate, "table": f" [{r.table}]" if r.table else "", "value": r.value,
                            "threshold": r.threshold}).render(locale)
            said = r.reason.render(locale) if r.reason is not None else r.detail
            detail = f" - {said}" if said else ""
            lines.append(f"  {line}{detail}" + (f" [{gate_code(r.gate)}]" if codes else ""))
        return "\n".join(lines)


def gate_code(gate: str) -> str:
    """A gate's stable code: ``gate.k_anonymity``; ``gate.analysis`` for ``analysis:<name>``."""
    return f"gate.{gate.partition(':')[0]}"


def _string_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if df[c].dtype == object or isinstance(df[c].dtype, pd.StringDtype)]


class ReleasedText:
    """Distinct text values of each released column, computed once and shared by the gates.

    Gates look at distinct values, not rows: a million-row pseudonym column is hashed once, and
    low-cardinality columns cost almost nothing.
    """

    def __init__(self, released: dict[str, pd.DataFrame]) -> None:
        self.released = released
        self._values: dict[tuple[str, str], pd.Series] = {}
        self._pseudonym: dict[tuple[str, str], np.ndarray] = {}

    def columns(self, table: str) -> list[str]:
        return _string_columns(self.released[table])

    def values(self, table: str, column: str) -> pd.Series:
        k = (table, column)
        if k not in self._values:
            self._values[k] = pd.Series(pd.unique(self.released[table][column].dropna())).astype(str)
        return self._values[k]

    def is_pseudonym(self, table: str, column: str) -> np.ndarray:
        k = (table, column)
        if k not in self._pseudonym:
            v = self.values(table, column)
            self._pseudonym[k] = v.str.fullmatch(PSEUDONYM.pattern.strip("^$")).to_numpy(dtype=bool)
        return self._pseudonym[k]

    def not_pseudonyms(self, table: str, column: str) -> pd.Series:
        # A value of exactly 20 lower-case hex characters cannot hold an identifier: candidates
        # must be bounded by non-alphanumerics, so only the whole value could be one, and no kind
        # is 20 hex characters long.
        return self.values(table, column)[~self.is_pseudonym(table, column)]

    def rows_with(self, table: str, column: str, values) -> int:
        return int(self.released[table][column].astype(str).isin(list(values)).sum())


def _keys(contract: Contract, tname: str) -> list[str]:
    t = contract.tables[tname]
    return ([t.primary_key] if t.primary_key else []) + [fk.column for fk in t.foreign_keys]


def _comparable(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return df.drop(columns=[k for k in keys if k in df.columns])
