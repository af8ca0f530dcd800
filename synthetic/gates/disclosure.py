"""Disclosure gates for both methods: no direct identifier, no identifier pattern, no key material."""

from __future__ import annotations

import base64
import re

import pandas as pd

from enclave.i18n import N_

from .. import identifiers, masking
from ..contract import Contract
from .base import GateResult, Joined, ReleasedText, _keys, because, says

def no_identifier_patterns(text: ReleasedText, **_) -> list[GateResult]:
    out = []
    for tname in text.released:
        found: dict[str, int] = {}
        for c in text.columns(tname):
            candidates = text.not_pseudonyms(tname, c)
            candidates = candidates[candidates.str.contains(identifiers.ANY_CANDIDATE)]
            by_kind: dict[str, set[str]] = {}
            for v in candidates:
                for f in identifiers.find(v):
                    by_kind.setdefault(f.kind, set()).add(v)
            for kind, values in by_kind.items():
                found[f"{c}:{kind}"] = text.rows_with(tname, c, values)
        total = sum(found.values())
        detail = Joined([says(N_("%(found)s in %(n)s row(s)"), found=k, n=n) for k, n in found.items()], ", ")
        out.append(because("no_identifier_patterns", tname, total, "== 0", total == 0, detail))
    return out


def key_forms(key: bytes) -> list[str]:
    return [key.hex(), base64.b64encode(key).decode().rstrip("="), base64.urlsafe_b64encode(key).decode().rstrip("=")]


def no_key_material(text: ReleasedText, key: bytes, **_) -> list[GateResult]:
    """The pseudonymisation key, in any common text form, appears nowhere in a release."""
    rx = re.compile("|".join(re.escape(f) for f in key_forms(key)), re.IGNORECASE)
    out = []
    for tname in text.released:
        # Pseudonyms are 20 characters, shorter than any form of a 32-byte key.
        hits = [c for c in text.columns(tname) if text.not_pseudonyms(tname, c).str.contains(rx).any()]
        out.append(because("no_key_material", tname, len(hits), "== 0", not hits,
                           says(N_("key found in column(s) %(columns)s"), columns=str(hits)) if hits else None))
    return out


def no_direct_identifiers(
    released: dict[str, pd.DataFrame], text: ReleasedText, contract: Contract, raw: dict[str, pd.DataFrame],
    method: str, **_
) -> list[GateResult]:
    """Direct identifiers are released only as pseudonyms (synthetic keys are generated afresh),
    and no raw identifier value is left in any column."""
    out = []
    for tname, t in contract.tables.items():
        df = released[tname]
        problems = []
        raw_values: set[str] = set()  # a set of str: their hashes are kept, so each is hashed once
        for c, col in t.columns.items():
            if col.role != "direct_identifier":
                continue
            raw_values.update(map(str.strip, pd.Series(pd.unique(raw[tname][c].dropna())).astype(str)))
            if c in df.columns and method == "masked" and not text.is_pseudonym(tname, c).all():
                problems.append(says(N_("column '%(column)s' holds values that are not pseudonyms"), column=c))
        pseudonymised = {c for c, col in t.columns.items()
                         if col.treatment == "pseudonymise" or (col.treatment == "derive" and c in _keys(contract, tname))}
        for c in text.columns(tname):
            if method == "masked" and c in pseudonymised:
                continue  # HMAC outputs, checked above to be nothing but pseudonyms
            values = text.values(tname, c)
            leaked = values[[v.strip() in raw_values for v in values]]
            if len(leaked):
                problems.append(says(N_("column '%(column)s' holds %(n)s raw identifier value(s)"), column=c,
                                     n=text.rows_with(tname, c, leaked)))
        direct = [c for c, col in t.columns.items() if col.role == "direct_identifier"]
        if method == "masked":
            for c, col in t.columns.items():
                if col.role == "free_text" and c in df.columns:
                    n = _own_identifiers_in_text(df[c], raw[tname].loc[df.index, direct])
                    if n:
                        problems.append(says(N_("column '%(column)s' repeats its row's own identifiers in %(n)s"
                                                " row(s)"), column=c, n=n))
        out.append(because("no_direct_identifiers", tname, len(problems), "== 0", not problems, Joined(problems)))
    return out


def _own_identifiers_in_text(text: pd.Series, direct: pd.DataFrame) -> int:
    return masking.redact_own_identifiers(text.copy(), direct)
