"""Privacy and utility gates: a release is published only when every gate passes.

``MASKED_GATES`` and ``SYNTHETIC_GATES`` list the gates, in the order they run, with the contract
setting each threshold comes from. Each gate is a small function returning one result per table
(or one for the release); nothing here decides anything else.
"""

from __future__ import annotations

import base64
import math
import re
import warnings
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import pandas as pd

from . import identifiers, masking, privacy
from .contract import Contract

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


# -- gates shared by both methods -------------------------------------------------------------


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
        detail = ", ".join(f"{k} in {n} row(s)" for k, n in found.items())
        out.append(GateResult("no_identifier_patterns", tname, total, "== 0", total == 0, detail))
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
        out.append(GateResult("no_key_material", tname, len(hits), "== 0", not hits,
                              f"key found in column(s) {hits}" if hits else ""))
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
        raw_parts = []
        for c, col in t.columns.items():
            if col.role != "direct_identifier":
                continue
            raw_parts.append(pd.Series(pd.unique(raw[tname][c].dropna())).astype(str).str.strip())
            if c in df.columns and method == "masked" and not text.is_pseudonym(tname, c).all():
                problems.append(f"column '{c}' holds values that are not pseudonyms")
        raw_values = pd.Index(pd.unique(pd.concat(raw_parts))) if raw_parts else pd.Index([])
        pseudonymised = {c for c, col in t.columns.items()
                         if col.treatment == "pseudonymise" or (col.treatment == "derive" and c in _keys(contract, tname))}
        for c in text.columns(tname):
            if method == "masked" and c in pseudonymised:
                continue  # HMAC outputs, checked above to be nothing but pseudonyms
            values = text.values(tname, c)
            leaked = values[values.str.strip().isin(raw_values)]
            if len(leaked):
                problems.append(f"column '{c}' holds {text.rows_with(tname, c, leaked)} raw identifier value(s)")
        direct = [c for c, col in t.columns.items() if col.role == "direct_identifier"]
        if method == "masked":
            for c, col in t.columns.items():
                if col.role == "free_text" and c in df.columns:
                    n = _own_identifiers_in_text(df[c], raw[tname].loc[df.index, direct])
                    if n:
                        problems.append(f"column '{c}' repeats its row's own identifiers in {n} row(s)")
        out.append(GateResult("no_direct_identifiers", tname, len(problems), "== 0", not problems, "; ".join(problems)))
    return out


def _own_identifiers_in_text(text: pd.Series, direct: pd.DataFrame) -> int:
    return masking.redact_own_identifiers(text.copy(), direct)


# -- masked releases --------------------------------------------------------------------------


def k_anonymity(released, contract: Contract, **_) -> list[GateResult]:
    out = []
    for tname, t in contract.tables.items():
        qis = [c for c in t.quasi_identifiers() if c in released[tname].columns]
        if qis:
            k = privacy.k_anonymity(released[tname], qis)
            out.append(GateResult("k_anonymity", tname, k, f">= {contract.privacy.k}", k >= contract.privacy.k,
                                  f"over {qis}"))
    return out


def l_diversity(released, contract: Contract, **_) -> list[GateResult]:
    out = []
    for tname, t in contract.tables.items():
        df = released[tname]
        qis = [c for c in t.quasi_identifiers() if c in df.columns]
        sens = [c for c in t.sensitive() if c in df.columns]
        if qis and sens:
            l = privacy.l_diversity(df, qis, sens)
            out.append(GateResult("l_diversity", tname, l, f">= {contract.privacy.l}", l >= contract.privacy.l,
                                  f"of {sens}"))
    return out


def suppression(released, contract: Contract, raw, **_) -> list[GateResult]:
    out = []
    for tname in contract.tables:
        share = 1 - len(released[tname]) / len(raw[tname])
        limit = contract.privacy.max_suppressed
        out.append(GateResult("suppressed_share", tname, round(share, 4), f"<= {limit}", share <= limit))
    return out


# -- synthetic releases -----------------------------------------------------------------------


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def diagnostic(released, synth_ctx, contract: Contract, **_) -> list[GateResult]:
    from sdv.evaluation import run_diagnostic

    real, md = synth_ctx["real"], synth_ctx["metadata"]
    data_r, data_s = (real, released) if len(real) > 1 else (next(iter(real.values())), next(iter(released.values())))
    score = float(_quiet(run_diagnostic, data_r, data_s, md, verbose=False).get_score())
    limit = contract.gates.diagnostic
    return [GateResult("diagnostic", None, round(score, 4), f">= {limit}", score >= limit)]


def quality(released, synth_ctx, contract: Contract, **_) -> list[GateResult]:
    from sdv.evaluation import evaluate_quality

    real, md = synth_ctx["real"], synth_ctx["metadata"]
    data_r, data_s = (real, released) if len(real) > 1 else (next(iter(real.values())), next(iter(released.values())))
    report = _quiet(evaluate_quality, data_r, data_s, md, verbose=False)
    score = float(report.get_score())
    limit = contract.gates.quality
    props = report.get_properties()
    detail = ", ".join(f"{p}: {s:.3f}" for p, s in zip(props["Property"], props["Score"]) if not pd.isna(s))
    ok = not math.isnan(score) and score >= limit
    return [GateResult("quality", None, round(score, 4), f">= {limit}", ok, detail)]


def _comparable(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return df.drop(columns=[k for k in keys if k in df.columns])


def _keys(contract: Contract, tname: str) -> list[str]:
    t = contract.tables[tname]
    return ([t.primary_key] if t.primary_key else []) + [fk.column for fk in t.foreign_keys]


def exact_copies(released, synth_ctx, contract: Contract, **_) -> list[GateResult]:
    """Synthetic rows equal, in every non-key column, to a real row."""
    out = []
    for tname in contract.tables:
        keys = _keys(contract, tname)
        real = _comparable(synth_ctx["real"][tname], keys).drop_duplicates()
        syn = _comparable(released[tname], keys)
        cols = list(real.columns)
        copies = syn.merge(real.astype(syn[cols].dtypes.to_dict(), errors="ignore"), on=cols, how="inner")
        n = len(copies)
        out.append(GateResult("exact_copies", tname, n, "== 0", n == 0))
    return out


def _category_values(s: pd.Series) -> np.ndarray:
    """Values to group categories by: numbers as floats (2020 == 2020.0); empty values are one value."""
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return s.astype("float64").to_numpy()
    return s.to_numpy(dtype=object)


def _match_key(s: pd.Series) -> pd.Series:
    """Categorical values as comparable text; numbers compare by value whatever their dtype."""
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        s = s.astype("float64")
    return s.astype(object).where(s.notna(), "\0null").astype(str)


def new_row_share(real: pd.DataFrame, synthetic: pd.DataFrame, numerical: list[str], categorical: list[str],
                  tolerance: float = 0.01, max_pairs: int = 5_000_000) -> float:
    """SDMetrics' NewRowSynthesis, vectorised: the share of synthetic rows matching no real row.

    A synthetic row matches a real row when every categorical value is equal (empty matches empty)
    and every numerical value is within ``tolerance`` times the synthetic value (empty matches
    empty). SDMetrics evaluates this with one query per synthetic row; here candidate pairs are
    the real rows sharing the synthetic row's categorical values, in chunks of at most ``max_pairs``.
    """
    if synthetic.empty:
        return 1.0

    def numbers(df: pd.DataFrame) -> pd.DataFrame:
        out = {}
        for c in numerical:
            v = df[c]
            if pd.api.types.is_datetime64_any_dtype(v.dtype):
                v = v.astype("int64").where(v.notna())
            out[c] = pd.to_numeric(v).astype("float64").to_numpy()
        return pd.DataFrame(out, index=df.index)

    nr, ns = numbers(real), numbers(synthetic)
    # One integer per distinct combination of categorical values and numeric emptiness, shared by
    # both tables, so candidates are found with one sort.
    keys = pd.concat([
        pd.DataFrame({**{f"c:{c}": _category_values(df[c]) for c in categorical},
                      **{f"n:{c}": np.isnan(nums[c].to_numpy()) for c in numerical}}, index=range(len(df)))
        for df, nums in ((real, nr), (synthetic, ns))
    ], ignore_index=True)
    codes = privacy.class_codes(keys, list(keys.columns))
    r_key, s_key = codes[: len(real)], codes[len(real):]
    # Real rows sorted by key: each synthetic row's candidates are one contiguous range.
    order = np.argsort(r_key, kind="stable")
    lo = np.searchsorted(r_key[order], s_key, "left")
    counts = np.searchsorted(r_key[order], s_key, "right") - lo
    r_nums = {c: nr[c].to_numpy() for c in numerical}
    s_nums = {c: ns[c].to_numpy() for c in numerical}
    matched = np.zeros(len(synthetic), dtype=bool)
    step = max(1, max_pairs // max(1, int(counts.max())))
    for start in range(0, len(synthetic), step):
        rows = np.arange(start, min(start + step, len(synthetic)))
        n = counts[rows]
        s_row = np.repeat(rows, n)
        offset = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        r_row = order[np.repeat(lo[rows], n) + offset]
        ok = np.ones(len(s_row), dtype=bool)
        for c in numerical:
            sv, rv = s_nums[c][s_row], r_nums[c][r_row]
            both_null = np.isnan(sv) & np.isnan(rv)
            ok &= both_null | (np.abs(rv - sv) <= np.abs(tolerance * sv))
        matched[s_row[ok]] = True
    return float(1 - matched.mean())


def _field_kinds(md, tname: str, columns) -> tuple[list[str], list[str]]:
    cols = md.to_dict()["tables"][tname]["columns"]
    numerical = [c for c in columns if cols.get(c, {}).get("sdtype") in ("numerical", "datetime")]
    categorical = [c for c in columns if cols.get(c, {}).get("sdtype") in ("categorical", "boolean", "ordinal")]
    return numerical, categorical


def new_row_synthesis(released, synth_ctx, contract: Contract, **_) -> list[GateResult]:
    out = []
    limit = contract.gates.new_row_synthesis
    for tname in contract.tables:
        keys = _keys(contract, tname)
        real = _comparable(synth_ctx["real"][tname], keys)
        numerical, categorical = _field_kinds(synth_ctx["metadata"], tname, real.columns)
        score = new_row_share(real, _comparable(released[tname], keys), numerical, categorical)
        out.append(GateResult("new_row_synthesis", tname, round(score, 4), f">= {limit}", score >= limit,
                              f"all {len(released[tname])} synthetic rows against all {len(real)} real rows"))
    return out


def _equal_halves(train: pd.DataFrame, holdout: pd.DataFrame, size: int, seed: int):
    n = min(len(train), len(holdout), size)
    return train.sample(n=n, random_state=seed), holdout.sample(n=n, random_state=seed + 1)


def _dcr_columns(data: pd.DataFrame, reference: pd.DataFrame, numerical: list[str], categorical: list[str]):
    """Per column: (values of data, values of reference, is numerical); categories as shared int codes."""
    out = []
    for c in data.columns:
        if c in numerical:
            a, b = data[c], reference[c]
            if pd.api.types.is_datetime64_any_dtype(a.dtype):
                a, b = (a - pd.Timestamp(0)).dt.total_seconds(), (b - pd.Timestamp(0)).dt.total_seconds()
            out.append((c, pd.to_numeric(a).astype("float64").to_numpy(),
                        pd.to_numeric(b).astype("float64").to_numpy(), True))
        elif c in categorical:
            codes, _ = pd.factorize(pd.concat([_match_key(data[c]), _match_key(reference[c])], ignore_index=True))
            out.append((c, codes[: len(data)], codes[len(data):], False))
    return out


def closest_record_distances(data: pd.DataFrame, reference: pd.DataFrame, numerical: list[str],
                             categorical: list[str], chunk: int = 1000) -> np.ndarray:
    """SDMetrics' distance to closest record, with numpy broadcasting instead of a pandas cross join.

    Per column: numbers (and dates, in seconds) differ by ``|a - b| / range`` capped at 1, the
    range taken over ``reference`` (any difference counts 1 when the range is 0); categories
    differ by 0 or 1; an empty value against a non-empty one differs by 1, two empty values by 0.
    A row's distance is the mean over columns; its DCR the minimum over reference rows.
    """
    cols = _dcr_columns(data, reference, numerical, categorical)
    best = np.full(len(data), np.inf)
    for start in range(0, len(data), chunk):
        total = np.zeros((min(chunk, len(data) - start), len(reference)))
        for _, d, r, is_number in cols:
            a, b = d[start : start + chunk, None], r[None, :]
            if not is_number:
                total += a != b
                continue
            rng = np.nanmax(r) - np.nanmin(r)
            diff = np.abs(b - a)
            dist = (diff > 0).astype(float) if rng == 0 else np.minimum(diff / rng, 1.0)
            na, nb = np.isnan(a), np.isnan(b)
            if na.any() or nb.any():
                dist = np.where(na & nb, 0.0, np.where(na | nb, 1.0, dist))
            total += dist
        best[start : start + chunk] = (total / len(cols)).min(axis=1)
    return best


def dcr_overfitting_protection(train: pd.DataFrame, synthetic: pd.DataFrame, holdout: pd.DataFrame,
                               numerical: list[str], categorical: list[str]) -> tuple[float, float]:
    """SDMetrics' DCROverfittingProtection: (score, share of synthetic rows closer to training)."""
    to_train = closest_record_distances(synthetic, train, numerical, categorical)
    to_holdout = closest_record_distances(synthetic, holdout, numerical, categorical)
    closer = float((to_train < to_holdout).mean())
    return min((1.0 - closer) * 2, 1.0), closer


def dcr_overfitting(released, synth_ctx, contract: Contract, **_) -> list[GateResult]:
    """Share of synthetic rows closer to training rows than to an equal-size holdout."""
    out = []
    limit = contract.gates.dcr_overfitting_protection
    size, seed = contract.gates.subsample, contract.synthesis.seed
    for tname in contract.tables:
        keys = _keys(contract, tname)
        # Training and holdout samples of equal size (up to 5 x subsample), so neither is favoured.
        train, hold = _equal_halves(
            _comparable(synth_ctx["train"][tname], keys), _comparable(synth_ctx["holdout"][tname], keys),
            5 * size, seed,
        )
        syn = _comparable(released[tname], keys)
        syn = syn.sample(n=min(len(syn), size), random_state=seed)
        numerical, categorical = _field_kinds(synth_ctx["metadata"], tname, syn.columns)
        score, closer = dcr_overfitting_protection(train, syn, hold, numerical, categorical)
        out.append(GateResult("dcr_overfitting_protection", tname, round(score, 4), f">= {limit}", score >= limit,
                              f"{len(syn)} synthetic rows against {len(train)} training and {len(hold)} holdout"
                              f" rows; {closer:.1%} closer to training"))
    return out


def _attack_frame(df: pd.DataFrame) -> pd.DataFrame:
    out = df.reset_index(drop=True)
    for c in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[c].dtype):
            out[c] = (out[c] - pd.Timestamp("1970-01-01")).dt.days.astype("float64")
        elif out[c].dtype == object:
            out[c] = out[c].astype(str)
    return out


def attack_risks(released, synth_ctx, contract: Contract, **_) -> list[GateResult]:
    """Anonymeter's singling-out, linkability and inference risks, against a holdout control."""
    from anonymeter.evaluators import InferenceEvaluator, LinkabilityEvaluator, SinglingOutEvaluator

    out = []
    g = contract.gates
    for tname, t in contract.tables.items():
        keys = _keys(contract, tname)
        ori, control = _equal_halves(
            _comparable(synth_ctx["train"][tname], keys), _comparable(synth_ctx["holdout"][tname], keys),
            g.subsample, contract.synthesis.seed,
        )
        syn = _comparable(released[tname], keys)
        syn = syn.sample(n=min(len(syn), g.subsample), random_state=contract.synthesis.seed)
        ori, control, syn = _attack_frame(ori), _attack_frame(control), _attack_frame(syn)
        cols = list(syn.columns)
        n = min(g.anonymeter_attacks, len(control))
        risks: dict[str, float] = {}
        so = SinglingOutEvaluator(ori=ori, syn=syn, control=control, n_attacks=n, seed=contract.synthesis.seed)
        risks["singling_out"] = _quiet(lambda: so.evaluate(mode="univariate").risk().value)
        if len(cols) >= 2:
            half = len(cols) // 2
            link = LinkabilityEvaluator(ori=ori, syn=syn, control=control, aux_cols=(cols[:half], cols[half:]),
                                        n_attacks=n, n_neighbors=1)
            risks["linkability"] = _quiet(lambda: link.evaluate(n_jobs=1).risk().value)
            secrets = [c for c in t.sensitive() if c in cols] or [cols[-1]]
            for secret in secrets:
                inf = InferenceEvaluator(ori=ori, syn=syn, control=control, n_attacks=n, secret=secret,
                                         aux_cols=[c for c in cols if c != secret],
                                         regression=pd.api.types.is_numeric_dtype(syn[secret].dtype))
                risks[f"inference:{secret}"] = _quiet(lambda: inf.evaluate(n_jobs=1).risk().value)
        for attack, risk in risks.items():
            out.append(GateResult(f"attack_risk:{attack}", tname, round(float(risk), 4), f"<= {g.max_attack_risk}",
                                  float(risk) <= g.max_attack_risk, f"anonymeter, {n} attacks"))
    return out


Gate = Callable[..., list[GateResult]]

MASKED_GATES: list[Gate] = [
    k_anonymity,  # privacy.k
    l_diversity,  # privacy.l
    suppression,  # privacy.max_suppressed
    no_direct_identifiers,
    no_identifier_patterns,
    no_key_material,
]

SYNTHETIC_GATES: list[Gate] = [
    diagnostic,  # gates.diagnostic
    quality,  # gates.quality
    exact_copies,
    new_row_synthesis,  # gates.new_row_synthesis
    dcr_overfitting,  # gates.dcr_overfitting_protection, equal-size holdout
    attack_risks,  # gates.max_attack_risk
    no_direct_identifiers,
    no_identifier_patterns,
    no_key_material,
]


def run(gates: list[Gate], progress: bool = True, timings: dict | None = None, **ctx) -> list[GateResult]:
    """Every gate's results; ``timings`` (if given) receives seconds per gate."""
    import time

    from tqdm import tqdm

    results: list[GateResult] = []
    ctx.setdefault("text", ReleasedText(ctx["released"]))
    for gate in tqdm(gates, desc="gates", unit="gate", disable=not progress or None):
        start = time.perf_counter()
        results.extend(gate(**ctx))
        if timings is not None:
            timings[gate.__name__] = round(time.perf_counter() - start, 3)
    return results


def enforce(results: list[GateResult]) -> None:
    if not all(r.passed for r in results):
        raise GateFailure(results)


