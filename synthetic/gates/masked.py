"""Gates of masked releases: k-anonymity, l-diversity, suppression, uniqueness of kept measures.

Every count is over entities when a table declares ``entity_column`` (the person or firm behind
its rows), over rows otherwise; see ``synthetic.privacy``. A released row keeps its raw row's index,
so a row's entity is read from the raw table (the entity column itself may be dropped or
pseudonymised in the release).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import masking, privacy
from ..contract import Contract, Table
from .base import GateResult


def _entities(t: Table, raw: pd.DataFrame, df: pd.DataFrame) -> pd.Series | None:
    return masking.entities_of(t, raw, df.index)


def _counted(t: Table) -> str:
    return f"distinct '{t.entity()}' entities" if t.entity() else "rows (one entity per row)"


def k_anonymity(released, contract: Contract, raw, **_) -> list[GateResult]:
    out = []
    for tname, t in contract.tables.items():
        df = released[tname]
        qis = [c for c in t.quasi_identifiers() if c in df.columns]
        if qis:
            k = privacy.k_anonymity(df, qis, _entities(t, raw[tname], df))
            out.append(GateResult("k_anonymity", tname, k, f">= {contract.privacy.k}", k >= contract.privacy.k,
                                  f"over {qis}, counting {_counted(t)}"))
    return out


def l_diversity(released, contract: Contract, raw, **_) -> list[GateResult]:
    out = []
    missing = contract.privacy.missing_counts_towards_l
    for tname, t in contract.tables.items():
        df = released[tname]
        qis = [c for c in t.quasi_identifiers() if c in df.columns]
        sens = [c for c in t.sensitive() if c in df.columns]
        if qis and sens:
            l = privacy.l_diversity(df, qis, sens, _entities(t, raw[tname], df), missing)
            held = f"values held by {_counted(t)}"
            out.append(GateResult(
                "l_diversity", tname, l, f">= {contract.privacy.l}", l >= contract.privacy.l,
                f"of {sens}: distinct {held}; missing values {'count' if missing else 'do not count'}",
            ))
    return out


def suppression(released, contract: Contract, raw, key, real=None, **_) -> list[GateResult]:
    """The share of entities that lost rows (to suppression or as orphans of suppressed parents).

    A refusal explains itself: how many entities k and l each took, and for each quasi-identifier
    how many entities would be suppressed if it were dropped (the one to coarsen first).
    ``real``, the masked tables before suppression, is re-computed when not given.
    """
    out = []
    limit = contract.privacy.max_suppressed
    unsuppressed = real  # the masked tables before suppression, when the pipeline has them
    for tname, t in contract.tables.items():
        df, source = released[tname], raw[tname]
        lost = ~source.index.isin(df.index)
        entities = masking.entities_of(t, source)
        ents = privacy.entity_codes(entities, len(source))
        total = privacy.count_entities(ents, np.ones(len(source), dtype=bool))
        lost_entities = privacy.count_entities(ents, lost)
        share = lost_entities / total
        detail = f"{int(lost.sum())} of {len(source)} rows"
        if t.entity():
            detail += f", {lost_entities} of {total} {_counted(t)}"
        passed = share <= limit
        if not passed:
            if unsuppressed is None:
                unsuppressed = masking.mask_tables(contract, raw, key, suppress=False, progress=False).tables
            detail += "; " + _causes(contract, t, unsuppressed[tname], entities)
        out.append(GateResult("suppressed_share", tname, round(share, 4), f"<= {limit}", passed, detail))
    return out


def _causes(contract: Contract, t: Table, before: pd.DataFrame, entities: pd.Series | None) -> str:
    """Why suppression took so much: entities lost to k and to l, and what dropping each QI would give."""
    p = contract.privacy
    qis = [c for c in t.quasi_identifiers() if c in before.columns]
    sens = [c for c in t.sensitive() if c in before.columns]
    if not qis:
        return "rows were lost as orphans of suppressed parent rows"
    found = privacy.breaches(before, qis, sens, p.k, p.l, entities, p.missing_counts_towards_l)
    parts = [f"classes with fewer than k={p.k} entities: {found.by_k} entities"]
    parts += [f"classes with l < {p.l} on '{s}': {n} entities" for s, n in found.by_l.items()]
    if len(qis) > 1:
        without = {
            q: privacy.breaches(before, [c for c in qis if c != q], sens, p.k, p.l, entities,
                                p.missing_counts_towards_l).bad_entities
            for q in qis
        }
        ranked = sorted(without.items(), key=lambda kv: kv[1])
        parts.append("suppressed if a quasi-identifier were dropped (or coarsened): "
                     + ", ".join(f"without '{q}' {n} of {found.entities}" for q, n in ranked))
    return "; ".join(parts)


def unique_entities(released, contract: Contract, raw, **_) -> list[GateResult]:
    """Share of entities unique on the quasi-identifiers plus the released measures.

    Gated on the share without the measures marked ``uniqueness_accepted``; the detail gives the
    share with every measure, the share each measure gives alone (added to the quasi-identifiers),
    and the accepted measures with their reasons.
    """
    out = []
    limit = contract.privacy.max_unique_share
    for tname, t in contract.tables.items():
        df = released[tname]
        measures = [c for c, col in t.columns.items() if col.role == "measure" and c in df.columns]
        if not measures:
            continue
        qis = [c for c in t.quasi_identifiers() if c in df.columns]
        accepted = {c: t.columns[c].uniqueness_accepted for c in measures if t.columns[c].uniqueness_accepted}
        gated = [c for c in measures if c not in accepted]
        ents = privacy.entity_codes(_entities(t, raw[tname], df), len(df))
        by_qis = privacy.class_codes(df, qis)
        codes = by_qis
        for m in gated:
            codes = privacy.refine(codes, df[m])
        share = privacy.uniqueness_of(codes, ents)
        alone = {m: privacy.uniqueness_of(privacy.refine(by_qis, df[m]), ents).share for m in measures}
        making = sorted((m for m in gated if alone[m] > limit), key=lambda m: -alone[m])
        parts = [f"{share.unique} of {share.entities} {_counted(t)} unique on {qis + gated}"]
        if accepted:
            for m in accepted:
                codes = privacy.refine(codes, df[m])
            every = privacy.uniqueness_of(codes, ents)
            parts.append(f"with the accepted measures too: {every.share:.1%}")
        if making:
            parts.append("measures making entities unique (share if only it were added): "
                         + ", ".join(f"'{m}' {alone[m]:.1%}" for m in making)
                         + "; coarsen them (bands, top_bottom), make them quasi-identifiers,"
                           " or accept them with a written uniqueness_accepted reason")
        elif share.share > limit:
            parts.append(f"no measure alone does it, their combination does: coarsen some of {gated}")
        if accepted:
            parts.append("accepted: " + "; ".join(f"'{m}' ({alone[m]:.1%}): {r}" for m, r in accepted.items()))
        out.append(GateResult("unique_entities", tname, round(share.share, 4), f"<= {limit}",
                              share.share <= limit, "; ".join(parts)))
    return out
