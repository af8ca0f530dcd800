"""What every gate returns, and what the gates share: released text values, key columns."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..contract import Contract

PSEUDONYM = re.compile(r"^[0-9a-f]{20}$")


@dataclass(frozen=True)
class GateResult:
    gate: str
    table: str | None
    value: float | int | None
    threshold: str
    passed: bool
    detail: str = ""

    def as_dict(self) -> dict:
        d = asdict(self)
        if isinstance(d["value"], float) and math.isnan(d["value"]):
            d["value"] = None
        return d


class GateFailure(Exception):
    def __init__(self, results: list[GateResult]):
        self.results = results
        self.manifest: dict | None = None
        failed = [r for r in results if not r.passed]
        lines = [
            f"  {r.gate}{f' [{r.table}]' if r.table else ''}: {r.value} (needs {r.threshold})"
            + (f" - {r.detail}" if r.detail else "")
            for r in failed
        ]
        super().__init__("release refused, gate(s) failed:\n" + "\n".join(lines))


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
