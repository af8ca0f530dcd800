"""Masking: each column treated as its contract says, then suppression to k-anonymity/l-diversity.

Keyed values (pseudonyms, date offsets) come from HMAC-SHA256 under the data holder's key, with a
separate domain label for each use, so the same key gives the same pseudonym for the same entity
in every table and every run, and nothing in a release lets one recompute it without the key.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import identifiers, privacy
from .contract import Column, Contract, Table, quantile_bound

PSEUDONYM_HEX = 20  # 80 bits: collisions stay negligible well past a billion entities


class PseudonymKeyError(Exception):
    pass


def key_path(secrets_dir: Path, name: str) -> Path:
    return Path(secrets_dir) / f"pseudonym-{name}.key"


def load_or_create_key(secrets_dir: Path, name: str = "default") -> bytes:
    """The data holder's pseudonymisation key; created (0600) on first use, never copied anywhere."""
    path = key_path(secrets_dir, name)
    if path.exists():
        key = path.read_bytes()
        if len(key) < 32:
            raise PseudonymKeyError(f"pseudonym key {path} is shorter than 32 bytes")
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    # O_EXCL: two runs creating the key at once cannot end up with different keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_or_create_key(secrets_dir, name)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def _keyed(key: bytes, domain: bytes, values: pd.Series) -> tuple[np.ndarray, list[bytes]]:
    """HMAC-SHA256(key, domain NUL normalised value) of each distinct value, and row -> distinct index.

    Values are normalised as trimmed, case-folded text, so ' 11010519491231002x' and
    '11010519491231002X' (or the integer 42 and the text '42') get one pseudonym.
    """
    codes, uniques = pd.factorize(values)
    normalised = pd.Series(uniques, dtype=object).astype(str).str.strip().str.casefold().to_numpy()
    base = hmac.new(key, domain + b"\0", "sha256")  # the keyed state, copied for each value
    digests = []
    for v in normalised:
        h = base.copy()
        h.update(v.encode("utf-8"))
        digests.append(h.digest())
    return codes, digests


def pseudonymise(values: pd.Series, key: bytes) -> pd.Series:
    codes, digests = _keyed(key, b"pseudonym", values)
    table = np.array([d.hex()[:PSEUDONYM_HEX] for d in digests] + [None], dtype=object)
    return pd.Series(table[codes], index=values.index, dtype=object)  # code -1 (empty) -> None


def date_offsets(entities: pd.Series, key: bytes, max_days: int) -> pd.Series:
    """Days to shift each row's dates by: one offset per entity in [-max_days, max_days], never 0."""
    codes, digests = _keyed(key, b"date-shift", entities)
    span = 2 * max_days
    offs = np.array([int.from_bytes(d[:8], "big") % span for d in digests] + [0], dtype=np.int64)
    offs = np.where(offs[codes] < max_days, offs[codes] - max_days, offs[codes] - max_days + 1)
    offs[codes == -1] = 0
    return pd.Series(offs, index=entities.index)


def interval_label(lo: float, hi: float) -> str:
    """The one notation of every band in a release: ``[30, 45)``, ``[75, inf)``, ``(-inf, 0)``, ``[-5, 5)``.

    Bands are left-closed, right-open; an infinite end is open.
    """
    def fmt(x: float) -> str:
        if np.isinf(x):
            return "inf" if x > 0 else "-inf"
        return str(int(x)) if float(x).is_integer() else f"{x:g}"

    return f"{'(' if np.isinf(lo) else '['}{fmt(lo)}, {fmt(hi)})"


def band_labels(bins: list[float]) -> list[str]:
    return [interval_label(lo, hi) for lo, hi in zip(bins[:-1], bins[1:])]


def bands(values: pd.Series, bins: list[float]) -> pd.Series:
    cut = pd.cut(values.astype("float64"), bins=bins, right=False, labels=band_labels(bins))
    return cut.astype(object).where(cut.notna(), None)


@dataclass
class TableReport:
    rows_in: int
    rows_out: int = 0
    # The column naming the entity behind rows (None: each row is one); entities are counted by it.
    entity_column: str | None = None
    entities_in: int = 0
    entities_out: int = 0
    suppressed_rows: int = 0
    suppressed_entities: int = 0
    orphan_rows_removed: int = 0
    k: int | None = None
    l: int | None = None
    quasi_identifiers: list[str] = field(default_factory=list)
    sensitive: list[str] = field(default_factory=list)
    treatments: dict[str, str] = field(default_factory=dict)
    bounds: dict[str, dict[str, float | None]] = field(default_factory=dict)
    redacted: dict[str, dict[str, int]] = field(default_factory=dict)


def _derive(values: pd.Series, col: Column, name: str) -> dict[str, pd.Series]:
    uniques = pd.Series(values.dropna().unique())
    parsed = {u: identifiers.parse_resident_id(u) for u in uniques}
    out = {}
    for d in col.derive:
        if d == "birth_year_band":
            w = col.band_width

            def f(u: str) -> str:
                lo = parsed[u].birth_date.year // w * w
                return interval_label(lo, lo + w)
        elif d == "sex":
            def f(u: str) -> str:
                return parsed[u].sex
        else:
            def f(u: str) -> str:
                return parsed[u].region[: col.region_level]
        mapping = {u: f(u) for u in uniques}
        out[f"{name}_{d}"] = values.map(mapping).astype(object)
    return out


def redact_own_identifiers(text: pd.Series, direct: pd.DataFrame) -> int:
    """Replace, in place, each row's own direct-identifier values (a name, an address) in its text.

    Patterns catch numbers and e-mails; a person's name is only recognisable because the same
    row holds it. Returns how many rows were changed.
    """
    changed = 0
    if direct.empty:
        return 0
    cols = list(direct.columns)
    for idx, value, *ids in zip(text.index, text.to_numpy(), *(direct[c].to_numpy() for c in cols)):
        if not isinstance(value, str):
            continue
        new = value
        for c, v in zip(cols, ids):
            if isinstance(v, str) and len(v.strip()) >= 2 and v.strip() in new:
                new = new.replace(v.strip(), f"[{c}]")
        if new != value:
            text.at[idx] = new
            changed += 1
    return changed


def mask_column(
    name: str, col: Column, df: pd.DataFrame, key: bytes, is_key: bool, report: TableReport,
    direct: list[str] = (), shift_entity: str | None = None,
) -> dict[str, pd.Series]:
    """The released column(s) for one source column: none, one, or several (derived fields).

    ``shift_entity``: for treatment 'shift', the column whose entity shares one date offset
    (``Table.shift_entity``).
    """
    s = df[name]
    t = col.treatment
    report.treatments[name] = t
    if t == "drop":
        return {}
    if t == "pseudonymise":
        return {name: pseudonymise(s, key)}
    if t == "derive":
        out = _derive(s, col, name)
        return ({name: pseudonymise(s, key)} if is_key else {}) | out
    if t == "bands":
        return {name: bands(s, col.bins)}
    if t == "truncate":
        return {name: s.astype(object).where(s.isna(), s.astype(str).str[: col.keep])}
    if t == "top_bottom":
        lo = quantile_bound(col.bottom, s.dropna())
        hi = quantile_bound(col.top, s.dropna())
        report.bounds[name] = {"bottom": lo, "top": hi}
        clipped = s.astype("float64").clip(lower=lo, upper=hi)
        return {name: clipped.round().astype("Int64") if col.type == "integer" else clipped}
    if t == "year":
        return {name: s.dt.year.astype("Int64")}
    if t == "shift":
        if shift_entity is None:
            raise ValueError(f"column '{name}' is shifted but no entity column was given for its offsets")
        offsets = date_offsets(df[shift_entity], key, col.max_days)
        return {name: s + pd.to_timedelta(offsets, unit="D")}
    if t == "redact":
        uniques = s.dropna().unique()
        mapping = {u: identifiers.redact(u) for u in uniques}
        found = identifiers.scan_series(s)
        redacted = s.map(mapping).astype(object)
        own = redact_own_identifiers(redacted, df[[c for c in direct if c != name]])
        if own:
            found["own_direct_identifiers"] = own
        if found:
            report.redacted[name] = found
        return {name: redacted}
    return {name: s}  # keep


@dataclass
class Masked:
    tables: dict[str, pd.DataFrame]
    reports: dict[str, TableReport]
    # Every row treated, nothing suppressed: the real rows at the release's granularity.
    before_suppression: dict[str, pd.DataFrame]


def mask_tables(
    contract: Contract,
    tables: dict[str, pd.DataFrame],
    key: bytes,
    *,
    suppress: bool = True,
    progress: bool = True,
) -> Masked:
    """Apply every column's treatment; then (``suppress``) drop classes breaking k or l.

    k and l count entities when a table declares ``entity_column`` (see ``privacy``); missing
    sensitive values count towards l only with ``privacy.missing_counts_towards_l``. Rows of child
    tables whose parent row was suppressed are removed too, so keys still join.
    """
    out: dict[str, pd.DataFrame] = {}
    before: dict[str, pd.DataFrame] = {}
    reports: dict[str, TableReport] = {}
    steps = sum(len(t.columns) for t in contract.tables.values())
    with tqdm(total=steps, desc="masking", unit="col", disable=not progress or None) as bar:
        for tname, t in contract.tables.items():
            df = tables[tname]
            rep = reports[tname] = TableReport(rows_in=len(df))
            keys = _key_columns(t)
            direct = [c for c, col in t.columns.items() if col.role == "direct_identifier"]
            cols: dict[str, pd.Series] = {}
            for cname, col in t.columns.items():
                shift = t.shift_entity(cname) if col.treatment == "shift" else None
                cols.update(mask_column(cname, col, df, key, cname in keys, rep, direct, shift))
                bar.update()
            masked = pd.DataFrame(cols, index=df.index)
            rep.quasi_identifiers = [c for c in t.quasi_identifiers() if c in masked.columns]
            rep.sensitive = [c for c in t.sensitive() if c in masked.columns]
            rep.entity_column = t.entity()
            rep.entities_in = _entity_count(df, t)
            before[tname] = masked
            if suppress:
                result = privacy.suppress(
                    masked, rep.quasi_identifiers, rep.sensitive, contract.privacy.k, contract.privacy.l,
                    entities_of(t, df), contract.privacy.missing_counts_towards_l,
                )
                masked, rep.suppressed_rows = result.kept, result.suppressed_rows
                rep.suppressed_entities = result.suppressed_entities
            out[tname] = masked
    _drop_orphans(contract, out, reports)
    # Rows keep their source index (the release files are written without it), so gates can
    # compare each released row with its own raw row.
    for tname, df in out.items():
        rep, t = reports[tname], contract.tables[tname]
        ents = entities_of(t, tables[tname], df.index)
        rep.rows_out = len(df)
        rep.entities_out = _entity_count(tables[tname].loc[df.index], t)
        rep.k = privacy.k_anonymity(df, rep.quasi_identifiers, ents) if rep.quasi_identifiers else None
        rep.l = (privacy.l_diversity(df, rep.quasi_identifiers, rep.sensitive, ents,
                                     contract.privacy.missing_counts_towards_l) if rep.sensitive else None)
    return Masked(out, reports, before)


def entities_of(t: Table, raw: pd.DataFrame, index: pd.Index | None = None) -> pd.Series | None:
    """The raw entity of each row (of the rows at ``index``, e.g. a released table's), or None when
    the table declares no ``entity_column`` (each row is then its own entity)."""
    column = t.entity()
    if column is None:
        return None
    values = raw[column]
    return values if index is None else values.loc[index]


def _entity_count(raw: pd.DataFrame, t: Table) -> int:
    column = t.entity()
    return len(raw) if column is None else int(raw[column].nunique(dropna=False))


def _key_columns(t: Table) -> set[str]:
    return ({t.primary_key} if t.primary_key else set()) | {fk.column for fk in t.foreign_keys}


def _drop_orphans(contract: Contract, out: dict[str, pd.DataFrame], reports: dict[str, TableReport]) -> None:
    # Parents before children would need a topological order; repeating until stable is simpler
    # and the number of tables is small.
    changed = True
    while changed:
        changed = False
        for tname, t in contract.tables.items():
            for fk in t.foreign_keys:
                rt, rc = fk.references.split(".")
                df = out[tname]
                ok = df[fk.column].isin(out[rt][rc]) | df[fk.column].isna()
                if not ok.all():
                    reports[tname].orphan_rows_removed += int((~ok).sum())
                    out[tname] = df[ok]
                    changed = True
