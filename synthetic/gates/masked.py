"""Gates of masked releases: k-anonymity, l-diversity, suppression, uniqueness of kept measures.

Every count is over entities when a table declares ``entity_column`` (the person or firm behind
its rows), over rows otherwise; see ``synthetic.privacy``. A released row keeps its raw row's index,
so a row's entity is read from the raw table (the entity column itself may be dropped or
pseudonymised in the release).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from enclave.i18n import N_

from .. import masking, privacy
from ..contract import Contract, Table
from .base import GateResult, Joined, because, says


def _entities(t: Table, raw: pd.DataFrame, df: pd.DataFrame) -> pd.Series | None:
    return masking.entities_of(t, raw, df.index)


def _counted(t: Table):
    return says(N_("distinct '%(entity)s' entities"), entity=t.entity()) if t.entity() else \
        says(N_("rows (one entity per row)"))


def k_anonymity(released, contract: Contract, raw, **_) -> list[GateResult]:
    out = []
    for tname, t in contract.tables.items():
        df = released[tname]
        qis = [c for c in t.quasi_identifiers() if c in df.columns]
        if qis:
            k = privacy.k_anonymity(df, qis, _entities(t, raw[tname], df))
            out.append(because("k_anonymity", tname, k, f">= {contract.privacy.k}", k >= contract.privacy.k,
                               says(N_("over %(columns)s, counting %(counted)s"), columns=str(qis),
                                    counted=_counted(t))))
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
            held = says(N_("values held by %(counted)s"), counted=_counted(t))
            out.append(because(
                "l_diversity", tname, l, f">= {contract.privacy.l}", l >= contract.privacy.l,
                says(N_("of %(columns)s: distinct %(held)s; missing values count"), columns=str(sens), held=held)
                if missing else
                says(N_("of %(columns)s: distinct %(held)s; missing values do not count"), columns=str(sens),
                     held=held),
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
        lost_rows = says(N_("%(lost)s of %(rows)s rows"), lost=int(lost.sum()), rows=len(source))
        if t.entity():
            lost_rows = says(N_("%(lost)s of %(rows)s rows, %(lost_entities)s of %(total)s %(counted)s"),
                             lost=int(lost.sum()), rows=len(source), lost_entities=lost_entities, total=total,
                             counted=_counted(t))
        detail = Joined([lost_rows])
        passed = share <= limit
        if not passed:
            if unsuppressed is None:
                unsuppressed = masking.mask_tables(contract, raw, key, suppress=False, progress=False).tables
            detail.parts.append(_causes(contract, t, unsuppressed[tname], entities))
        out.append(because("suppressed_share", tname, round(share, 4), f"<= {limit}", passed, detail))
    return out


def _causes(contract: Contract, t: Table, before: pd.DataFrame, entities: pd.Series | None):
    """Why suppression took so much: entities lost to k and to l, and what dropping each QI would give."""
    p = contract.privacy
    qis = [c for c in t.quasi_identifiers() if c in before.columns]
    sens = [c for c in t.sensitive() if c in before.columns]
    if not qis:
        return says(N_("rows were lost as orphans of suppressed parent rows"))
    found = privacy.breaches(before, qis, sens, p.k, p.l, entities, p.missing_counts_towards_l)
    parts = [says(N_("classes with fewer than k=%(k)s entities: %(n)s entities"), k=p.k, n=found.by_k)]
    parts += [says(N_("classes with l < %(l)s on '%(column)s': %(n)s entities"), l=p.l, column=s, n=n)
              for s, n in found.by_l.items()]
    if len(qis) > 1:
        without = {
            q: privacy.breaches(before, [c for c in qis if c != q], sens, p.k, p.l, entities,
                                p.missing_counts_towards_l).bad_entities
            for q in qis
        }
        ranked = sorted(without.items(), key=lambda kv: kv[1])
        parts.append(says(N_("suppressed if a quasi-identifier were dropped (or coarsened): %(dropped)s"),
                          dropped=Joined([says(N_("without '%(column)s' %(n)s of %(entities)s"), column=q, n=n,
                                               entities=found.entities) for q, n in ranked], ", ")))
    return Joined(parts)


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
        parts = [says(N_("%(unique)s of %(entities)s %(counted)s unique on %(columns)s"), unique=share.unique,
                      entities=share.entities, counted=_counted(t), columns=str(qis + gated))]
        if accepted:
            for m in accepted:
                codes = privacy.refine(codes, df[m])
            every = privacy.uniqueness_of(codes, ents)
            parts.append(says(N_("with the accepted measures too: %(share)s"), share=f"{every.share:.1%}"))
        if making:
            parts.append(says(N_("measures making entities unique (share if only it were added): %(measures)s;"
                                 " coarsen them (bands, top_bottom), make them quasi-identifiers, or accept them"
                                 " with a written uniqueness_accepted reason"),
                              measures=", ".join(f"'{m}' {alone[m]:.1%}" for m in making)))
        elif share.share > limit:
            parts.append(says(N_("no measure alone does it, their combination does: coarsen some of %(columns)s"),
                              columns=str(gated)))
        if accepted:
            parts.append(says(N_("accepted: %(accepted)s"),
                              accepted="; ".join(f"'{m}' ({alone[m]:.1%}): {r}" for m, r in accepted.items())))
        out.append(because("unique_entities", tname, round(share.share, 4), f"<= {limit}",
                           share.share <= limit, Joined(parts)))
    return out
