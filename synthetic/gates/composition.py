"""Composition: a masked release checked together with every earlier masked release of its source.

Two releases of one source combine: a person in age band 20-29 in one cut and 25-34 in another
is in 25-29 once the two are aligned, and a class of five people in each cut can shrink to one.
Before a masked release is published, each of its tables is joined, row by row, with the same
table of every earlier *published* masked release of the source (``synthetic.lineage`` keeps
their row ids), each row's class in this release is combined with its class in the earlier one
(so generalised bands are intersected), and the distinct entities of each combined class are
counted: the release is refused if any combined class has fewer than ``privacy.k`` entities.
The same is done with all earlier releases at once (an attacker holding every cut).

The check assumes the attacker can align the releases row by row. Shared kept measures or a
shared pseudonym key make that easy; per-release keys and shuffled rows make it harder, but
the check does not rely on them. It only combines rows present in both releases (an inner
join): rows suppressed in one release are left out of the combined classes, which counts fewer
entities per class, never more.

Rows join on the first row id both releases have (``synthetic.lineage``: primary key, entity and
occurrence, or raw row number within the same file content). Releases with no row id in common
(a new file version of a table with neither primary key nor entity column) cannot be aligned by
the check: its result says so, and passes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from enclave.i18n import N_

from .. import lineage, sources, store
from ..contract import Contract, Problem
from .base import GateResult, because, says

GATE = "composition_k"


def _fold(codes: np.ndarray, part: np.ndarray) -> np.ndarray:
    """Class codes of the combination of two classings of the same rows."""
    if len(codes) == 0:
        return codes
    combined, _ = pd.factorize(codes * (int(part.max()) + 2) + part)
    return combined.astype(np.int64)


def _entities_per_class(codes: np.ndarray, entity: np.ndarray) -> np.ndarray:
    """Distinct entities of each class (indexed by class code)."""
    ent_codes, uniques = pd.factorize(entity)
    if len(uniques) == len(entity):
        return np.bincount(codes)
    pairs = np.unique(codes * len(uniques) + ent_codes)
    return np.bincount(pairs // len(uniques), minlength=int(codes.max()) + 1)


def _judge(table: str, k: int, against: str | Problem, codes: np.ndarray, entity: np.ndarray,
           describe: Callable[[int], str] | None = None) -> GateResult:
    """The result over combined classes ``codes``; ``describe(i)`` names joined row i's class."""
    threshold = f">= {k}"
    if len(codes) == 0:
        return because(GATE, table, None, threshold, True, says(N_("with %(against)s: no rows in common"),
                                                                against=against))
    counts = _entities_per_class(codes, entity)
    low = counts < k
    worst = int(counts.min())
    if not low.any():
        return because(GATE, table, worst, threshold, True,
                       says(N_("with %(against)s: %(rows)s rows in common, every combined class >= %(k)s entities"),
                            against=against, rows=len(codes), k=k))
    rows_low = low[codes]
    entities_low = len(pd.unique(entity[rows_low]))
    alone = int((counts == 1).sum())
    example = ""
    if describe is not None:
        row = int(np.flatnonzero(codes == int(counts.argmin()))[0])
        example = (says(N_("; e.g. %(class)s: 1 entity"), **{"class": describe(row)}) if worst == 1 else
                   says(N_("; e.g. %(class)s: %(n)s entities"), n=worst, **{"class": describe(row)}))
    figures = {"against": against, "classes": int(low.sum()), "k": k, "rows": int(rows_low.sum()),
               "entities": entities_low, "alone": alone, "example": example}
    return because(
        GATE, table, worst, threshold, False,
        says(N_("with %(against)s: %(classes)s combined class(es) below k=%(k)s (quasi-identifier bands"
                " intersected): %(rows)s rows of %(entities)s entities, 1 entity alone in a class%(example)s;"
                " coarsen or align the bands with the earlier release's, or raise its k"), **figures)
        if alone == 1 else
        says(N_("with %(against)s: %(classes)s combined class(es) below k=%(k)s (quasi-identifier bands"
                " intersected): %(rows)s rows of %(entities)s entities, %(alone)s entities alone in a"
                " class%(example)s; coarsen or align the bands with the earlier release's, or raise its k"),
             **figures),
    )


def _describer(holder_dir, record: dict, etable: str, current: pd.DataFrame, qis: list[str],
               cur_pos: np.ndarray, prev_pos: np.ndarray) -> Callable[[int], str]:
    """Names the bands a joined row falls in, in both releases, for the columns generalised
    differently: which bands intersect, not who is in them (the detail reaches the audit log)."""
    def describe(i: int) -> str:
        shared = [c for c in qis if c in record["tables"][etable].get("quasi_identifiers", [])]
        prev = lineage.rows(holder_dir, record["release"], etable, columns=[f"qi.{c}" for c in shared])
        pairs = [(c, current[c].iloc[cur_pos[i]], prev[f"qi.{c}"].iloc[prev_pos[i]]) for c in shared]
        differ = [f"{c} {a} here and {b} in {record['release']}" for c, a, b in pairs if str(a) != str(b)]
        return ", ".join(differ) or f"the same values as in {record['release']}"

    return describe


def _earlier_table(record: dict, table: str, fingerprint: str) -> str | None:
    tables = record.get("tables", {})
    if table in tables:
        return table
    return next((t for t, info in tables.items() if info.get("fingerprint") == fingerprint), None)


def _join_kind(current: pd.DataFrame, fingerprint: str, info: dict) -> str | None:
    for kind in lineage.ROW_KINDS:
        if kind in current.columns and kind in info.get("row_ids", []):
            if kind != "row_number" or info.get("fingerprint") == fingerprint:
                return kind
    return None


def _align(current_ids: np.ndarray, earlier_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (in current, in earlier) of the rows both have (ids are unique in each)."""
    if len(earlier_ids) == 0 or len(current_ids) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    order = np.argsort(earlier_ids, kind="stable")
    sorted_ids = earlier_ids[order]
    pos = np.searchsorted(sorted_ids, current_ids)
    pos[pos == len(sorted_ids)] = 0
    hit = sorted_ids[pos] == current_ids
    return np.nonzero(hit)[0], order[pos[hit]]


def composition(released, contract: Contract, raw, holder_dir, release: str, secrets_dir=None,
                release_store=None, **_) -> list[GateResult]:
    """One result per table and earlier masked release, and per table for all of them together.

    With ``release_store``, a masked release of the source published without a lineage record (its
    recording failed) refuses the new one: it could not be combined, so it cannot be ruled out.
    """
    source = release.partition("@")[0]
    k = contract.privacy.k
    recorded = sources.releases(holder_dir, source)
    unrecorded = _unrecorded(release_store, source, {r["release"] for r in recorded})
    if unrecorded:
        return [because(GATE, None, None, f">= {k}", False,
                        says(N_("cannot combine with %(releases)s: published without a lineage record"),
                             releases=", ".join(unrecorded)))]
    earlier = [r for r in recorded if r.get("row_linked") and r["release"] != release]
    if not earlier:
        return [because(GATE, None, None, f">= {k}", True,
                        says(N_("no earlier published masked release of '%(source)s' to combine with"),
                             source=source))]
    key = lineage.lineage_key(holder_dir, secrets_dir)
    out: list[GateResult] = []
    for tname in contract.tables:
        current = lineage.released_rows(contract, tname, released[tname], raw[tname], key, values=False)
        qis = [c for c in contract.tables[tname].quasi_identifiers() if c in released[tname].columns]
        fingerprint = lineage.fingerprint(raw[tname])
        classes = current["class"].to_numpy()
        entity = current["entity"].to_numpy()
        in_all = np.ones(len(current), dtype=bool)
        parts: list[np.ndarray] = [classes]
        joined: list[str] = []
        for record in earlier:
            etable = _earlier_table(record, tname, fingerprint)
            if etable is None:
                continue
            info = record["tables"][etable]
            kind = _join_kind(current, fingerprint, info)
            if kind is None:
                out.append(because(
                    GATE, tname, None, f">= {k}", True,
                    says(N_("not combined with %(release)s: no row identity in common (another version of the"
                            " file, and neither release declares a primary key or entity column)"),
                         release=record["release"])))
                continue
            prev = lineage.rows(holder_dir, record["release"], etable, columns=[kind, "class"])
            cur_pos, prev_pos = _align(current[kind].to_numpy(), prev[kind].to_numpy())
            prev_class = np.full(len(current), -1, dtype=np.int64)
            prev_class[cur_pos] = prev["class"].to_numpy()[prev_pos]
            out.append(_judge(tname, k, record["release"], _fold(classes[cur_pos], prev_class[cur_pos]),
                              entity[cur_pos], _describer(holder_dir, record, etable, released[tname], qis,
                                                          cur_pos, prev_pos)))
            present = np.zeros(len(current), dtype=bool)
            present[cur_pos] = True
            in_all &= present
            parts.append(prev_class)
            joined.append(record["release"])
        if len(joined) >= 2:
            codes = parts[0][in_all]
            for part in parts[1:]:
                codes = _fold(codes, part[in_all])
            out.append(_judge(tname, k, says(N_("all of %(releases)s together"), releases=", ".join(joined)), codes,
                              entity[in_all]))
    if not out:
        return [because(GATE, None, None, f">= {k}", True,
                        says(N_("no earlier masked release of '%(source)s' has a table in common with this one"),
                             source=source))]
    return out


def _unrecorded(release_store, source: str, recorded: set[str]) -> list[str]:
    """Masked releases of ``source`` in the store that lineage does not know."""
    if release_store is None:
        return []
    out = []
    for name in store.releases(release_store):
        if name.partition("@")[0] != source or name in recorded:
            continue
        try:
            method = store.manifest(release_store, name).get("method")
        except store.StoreError:
            method = "masked"  # unreadable: assume the worst
        if method == "masked":
            out.append(name)
    return out
