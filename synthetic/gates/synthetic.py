"""Gates of synthetic releases: SDMetrics' diagnostic and quality, copies, new rows, distance to
closest record, Anonymeter's attacks.

Gates comparing synthetic rows with real ones compare them with the training half *and* with the
holdout half the generator never saw, in equal numbers: what happens as often with the holdout as
with training rows happens by chance, and only the excess over it is the generator's doing.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager

import numpy as np
import pandas as pd

from enclave.i18n import N_

from .. import privacy
from ..contract import Contract
from .base import GateResult, _comparable, _keys, because, says


def _generated(contract: Contract, tname: str) -> list[str]:
    """Columns the generator makes afresh (keys, the entity column): nothing to compare them on."""
    t = contract.tables[tname]
    keys = _keys(contract, tname)
    return keys + ([t.entity_column] if t.entity_column and t.entity_column not in keys else [])


@contextmanager
def _seeded(seed: int):
    """SDMetrics and Anonymeter draw from numpy's global generator: seed it for the while, so a
    gate's value depends on the data and ``synthesis.seed`` only (a holder cannot re-run a release
    until chance lets it pass), then give the generator back its state."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _canonical(released: dict[str, pd.DataFrame], synth_ctx: dict, contract: Contract) -> dict[str, pd.DataFrame]:
    """The released tables with their rows in an order set by their content (keys and entities,
    generated afresh, aside).

    Releases are published in an order drawn from a holder-side secret; gates that sample rows
    sample from this order instead, so their values do not change with the secret or the version.
    Computed once per run (kept in ``synth_ctx``) and shared by the gates.
    """
    cache = synth_ctx.setdefault("canonical_order", {})
    out = {}
    for tname, df in released.items():
        hit = cache.get(tname)
        if hit is None or hit[0] is not df:
            content = _comparable(df, _generated(contract, tname))
            order = np.argsort(pd.util.hash_pandas_object(content, index=False).to_numpy(), kind="stable")
            hit = cache[tname] = (df, df.iloc[order])
        out[tname] = hit[1]
    return out


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _sdmetrics_frames(released, synth_ctx, contract: Contract):
    """The real and released tables as SDMetrics' reports read them (one table alone, or all of
    them), computed once and shared by the diagnostic and quality gates.

    Their categorical columns are given as pandas categoricals, each side of its own values:
    SDMetrics then counts and compares codes instead of hashing every text value again in each of
    its metrics, with the same scores (tests/synthetic/test_gates.py). Categories shared by both
    sides would not do: a category one side lacks changes SDMetrics' association of a pair."""
    md = synth_ctx["metadata"]
    cached = synth_ctx.get("sdmetrics_frames")
    if cached is not None and cached[0] is released:
        return cached[1]
    real, canonical = synth_ctx["real"], _canonical(released, synth_ctx, contract)
    tables_r, tables_s = {}, {}
    for tname, df_s in canonical.items():
        df_r, df_s = real[tname].copy(deep=False), df_s.copy(deep=False)
        columns = md.to_dict()["tables"][tname]["columns"]
        for c, spec in columns.items():
            if spec.get("sdtype") != "categorical" or c not in df_r or df_r[c].dtype != object:
                continue
            df_r[c], df_s[c] = df_r[c].astype("category"), df_s[c].astype("category")
        tables_r[tname], tables_s[tname] = df_r, df_s
    frames = (tables_r, tables_s) if len(real) > 1 else (next(iter(tables_r.values())), next(iter(tables_s.values())))
    synth_ctx["sdmetrics_frames"] = (released, frames)
    return frames


def diagnostic(released, synth_ctx, contract: Contract, **_) -> list[GateResult]:
    from sdv.evaluation import run_diagnostic

    md = synth_ctx["metadata"]
    data_r, data_s = _sdmetrics_frames(released, synth_ctx, contract)
    with _seeded(contract.synthesis.seed):
        score = float(_quiet(run_diagnostic, data_r, data_s, md, verbose=False).get_score())
    limit = contract.gates.diagnostic
    return [GateResult("diagnostic", None, round(score, 4), f">= {limit}", score >= limit)]


def quality(released, synth_ctx, contract: Contract, **_) -> list[GateResult]:
    from sdv.evaluation import evaluate_quality

    md = synth_ctx["metadata"]
    data_r, data_s = _sdmetrics_frames(released, synth_ctx, contract)
    with _seeded(contract.synthesis.seed):  # SDMetrics samples 50,000 rows of larger tables
        report = _quiet(evaluate_quality, data_r, data_s, md, verbose=False)
    score = float(report.get_score())
    limit = contract.gates.quality
    props = report.get_properties()
    detail = ", ".join(f"{p}: {s:.3f}" for p, s in zip(props["Property"], props["Score"]) if not pd.isna(s))
    ok = not math.isnan(score) and score >= limit
    return [GateResult("quality", None, round(score, 4), f">= {limit}", ok, detail)]


def _copy_values(s: pd.Series) -> np.ndarray:
    """Values to compare rows on: numbers by value whatever their dtype (2020 == 2020.0), dates as
    numbers, anything else as itself."""
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return (s - pd.Timestamp(0)).dt.total_seconds().to_numpy()
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return s.astype("float64").to_numpy()
    return s.astype(object).to_numpy()


def copy_counts(synthetic: pd.DataFrame, train: pd.DataFrame, holdout: pd.DataFrame) -> tuple[int, int]:
    """Synthetic rows equal, in every column, to some training row, and to some holdout row.

    Every kind of empty value (None, NaN, NaT) is one value, equal to any other empty one.
    """
    n_syn, n_train = len(synthetic), len(train)
    codes, distinct = np.zeros(n_syn + n_train + len(holdout), dtype=np.int64), 1
    for c in synthetic.columns:
        values = np.concatenate([_copy_values(df[c]) for df in (synthetic, train, holdout)])
        col, uniques = pd.factorize(values)  # empty values get -1
        if distinct * (len(uniques) + 1) >= 2**62:  # renumber the rows so far before they could overflow
            codes, seen = pd.factorize(codes)
            distinct = len(seen)
        codes = codes * (len(uniques) + 1) + col + 1  # equal codes: equal rows in every column so far
        distinct *= len(uniques) + 1
    syn, to_train, to_hold = codes[:n_syn], codes[n_syn : n_syn + n_train], codes[n_syn + n_train :]
    return int(np.isin(syn, to_train).sum()), int(np.isin(syn, to_hold).sum())


def exact_copies(released, synth_ctx, contract: Contract, **_) -> list[GateResult]:
    """Synthetic rows copying a training row, beyond the rate at which they copy a holdout row.

    The generator never saw the holdout, so the synthetic rows equal to a holdout row are the
    chance rate (on a table of three categories nearly every row equals some real row); the gate
    bounds the excess share, (training copies - holdout copies) / synthetic rows. Rows are compared
    on the values the generator learnt from (the prepared real tables), every column but those it
    generates afresh (keys, the entity column), with training and holdout halves of equal size.
    """
    out = []
    limit = contract.gates.max_copy_excess
    for tname in contract.tables:
        skip = _generated(contract, tname)
        train, hold = _equal_halves(_comparable(synth_ctx["train"][tname], skip),
                                    _comparable(synth_ctx["holdout"][tname], skip), None, contract.synthesis.seed)
        syn = _comparable(released[tname], skip)
        to_train, to_hold = copy_counts(syn, train[syn.columns], hold[syn.columns])
        excess = (to_train - to_hold) / max(len(syn), 1)
        out.append(because(
            "exact_copies", tname, round(excess, 4), f"<= {limit}", excess <= limit,
            says(N_("%(to_train)s of %(rows)s synthetic rows equal a training row, %(to_hold)s a holdout row (chance"
                    " rate); %(half)s rows in each half"), to_train=to_train, rows=len(syn), to_hold=to_hold,
                 half=len(train))))
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


def _pairs(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(first, second) as complex numbers, which numpy sorts and searches by first, then second."""
    out = np.empty(len(first), dtype=np.complex128)
    out.real, out.imag = first, second
    return out


def new_row_share(real: pd.DataFrame, synthetic: pd.DataFrame, numerical: list[str], categorical: list[str],
                  tolerance: float = 0.01, max_pairs: int = 5_000_000) -> float:
    """SDMetrics' NewRowSynthesis, vectorised: the share of synthetic rows matching no real row.

    A synthetic row matches a real row when every categorical value is equal (empty matches empty)
    and every numerical value is within ``tolerance`` times the synthetic value (empty matches
    empty). SDMetrics evaluates this with one query per synthetic row; here candidate pairs are
    the real rows sharing the synthetic row's categorical values and within tolerance on its first
    numerical value, found by binary search, in chunks of at most ``max_pairs``.
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
    r_nums = {c: nr[c].to_numpy() for c in numerical}
    s_nums = {c: ns[c].to_numpy() for c in numerical}
    # Real rows sorted by key, then by the first numerical value: a synthetic row's candidates are
    # one contiguous range, the real rows of its key within tolerance of that value (widened by a
    # rounding margin; every numerical value is checked exactly below). Complex numbers sort by
    # real part, then imaginary part: (key, value) pairs in one array.
    if numerical:
        rv0, sv0 = r_nums[numerical[0]], s_nums[numerical[0]]
        r_sort = _pairs(r_key, np.nan_to_num(rv0, nan=0.0))
        width = np.abs(tolerance * sv0)
        width = np.where(np.isnan(sv0), np.inf, width + 1e-12 * (np.abs(sv0) + width))
        centre = np.nan_to_num(sv0, nan=0.0)
        low, high = _pairs(s_key, centre - width), _pairs(s_key, centre + width)
    else:
        r_sort, low, high = r_key, s_key, s_key
    order = np.argsort(r_sort, kind="stable")
    lo = np.searchsorted(r_sort[order], low, "left")
    counts = np.searchsorted(r_sort[order], high, "right") - lo
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
    """Share of synthetic rows matching no real row: every synthetic row against every real row."""
    out = []
    limit = contract.gates.new_row_synthesis
    for tname in contract.tables:
        skip = _generated(contract, tname)
        real = _comparable(synth_ctx["real"][tname], skip)
        numerical, categorical = _field_kinds(synth_ctx["metadata"], tname, real.columns)
        score = new_row_share(real, _comparable(released[tname], skip), numerical, categorical)
        out.append(because("new_row_synthesis", tname, round(score, 4), f">= {limit}", score >= limit,
                           says(N_("all %(synthetic)s synthetic rows against all %(real)s real rows"),
                                synthetic=len(released[tname]), real=len(real))))
    return out


def _equal_halves(train: pd.DataFrame, holdout: pd.DataFrame, size: int | None, seed: int):
    """Training and holdout samples of the same number of rows (at most ``size``; None: all the
    smaller half has), so that neither half is favoured by its size."""
    n = min(len(train), len(holdout), size if size is not None else len(train))
    return (train if n == len(train) else train.sample(n=n, random_state=seed),
            holdout if n == len(holdout) else holdout.sample(n=n, random_state=seed + 1))


def _numbers(s: pd.Series) -> np.ndarray:
    """A numerical column as floats; dates as seconds since the epoch."""
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        s = (s - pd.Timestamp(0)).dt.total_seconds()
    return pd.to_numeric(s).astype("float64").to_numpy()


def column_ranges(frames: list[pd.DataFrame], numerical: list[str]) -> dict[str, float]:
    """Each numerical column's range (max - min, ignoring empty values) over all ``frames`` together."""
    out = {}
    for c in numerical:
        values = np.concatenate([_numbers(df[c]) for df in frames])
        out[c] = float(np.nanmax(values) - np.nanmin(values)) if (~np.isnan(values)).any() else 0.0
    return out


def _dcr_columns(data: pd.DataFrame, reference: pd.DataFrame, numerical: list[str], categorical: list[str]):
    """Per column: (values of data, values of reference, is numerical); categories as shared int codes."""
    out = []
    for c in data.columns:
        if c in numerical:
            out.append((c, _numbers(data[c]), _numbers(reference[c]), True))
        elif c in categorical:
            codes, _ = pd.factorize(pd.concat([_match_key(data[c]), _match_key(reference[c])], ignore_index=True))
            # The narrowest integers that hold the codes: comparing pairs costs a tenth of int64's.
            codes = codes.astype(np.min_scalar_type(max(int(codes.max(initial=0)), 0)))
            out.append((c, codes[: len(data)], codes[len(data):], False))
    return out


def closest_record_distances(data: pd.DataFrame, reference: pd.DataFrame, numerical: list[str],
                             categorical: list[str], chunk: int = 200,
                             ranges: dict[str, float] | None = None) -> np.ndarray:
    """SDMetrics' distance to closest record, with numpy broadcasting instead of a pandas cross join.

    Per column: numbers (and dates, in seconds) differ by ``|a - b| / range`` capped at 1, the
    range taken from ``ranges`` or, as SDMetrics does, over ``reference`` (any difference counts 1
    when the range is 0); categories differ by 0 or 1; an empty value against a non-empty one
    differs by 1, two empty values by 0. A row's distance is the mean over columns; its DCR the
    minimum over reference rows.
    """
    cols = _dcr_columns(data, reference, numerical, categorical)
    categories = [(d, r) for _, d, r, is_number in cols if not is_number]
    numbers = []
    for c, d, r, is_number in cols:
        if is_number:
            rng = ranges[c] if ranges is not None else (
                float(np.nanmax(r) - np.nanmin(r)) if (~np.isnan(r)).any() else 0.0)
            numbers.append((d, r, rng, np.isnan(d), np.isnan(r)))
    n_ref = len(reference)
    best = np.full(len(data), np.inf)
    # Work in place on one block of pairs at a time (chunk data rows x every reference row).
    total = np.empty((chunk, n_ref))
    diff = np.empty((chunk, n_ref))
    unequal = np.empty((chunk, n_ref), dtype=np.int16)
    for start in range(0, len(data), chunk):
        rows = slice(start, min(start + chunk, len(data)))
        m = rows.stop - rows.start
        tot, dif, neq = total[:m], diff[:m], unequal[:m]
        neq[:] = 0
        for d, r in categories:
            neq += d[rows, None] != r[None, :]  # categories differ by 0 or 1
        tot[:] = neq
        for d, r, rng, d_nan, r_nan in numbers:
            np.subtract(r[None, :], d[rows, None], out=dif)
            np.abs(dif, out=dif)
            if rng == 0:
                np.greater(dif, 0, out=dif)  # no range: any difference counts 1
            else:
                np.divide(dif, rng, out=dif)
                np.minimum(dif, 1.0, out=dif)
            dn = d_nan[rows]
            if dn.any() or r_nan.any():  # empty against a value: 1; empty against empty: 0
                dif[:, r_nan] = 1.0
                dif[dn, :] = 1.0
                dif[np.ix_(dn, r_nan)] = 0.0
            tot += dif
        best[rows] = tot.min(axis=1) / len(cols)
    return best


def dcr_overfitting_protection(train: pd.DataFrame, synthetic: pd.DataFrame, holdout: pd.DataFrame,
                               numerical: list[str], categorical: list[str]) -> tuple[float, float]:
    """SDMetrics' DCROverfittingProtection on one shared scale: (score, share of synthetic rows
    strictly closer to training than to the holdout).

    SDMetrics scales each numerical column by the range of the reference set it measures against,
    so training and holdout distances are in different units: one outlier in the training half
    widens its range, shrinks every distance to training and makes synthetic rows look closer to
    training. Here both are measured on the range over training and holdout together; where the
    two halves have the same ranges the result is SDMetrics' own.
    """
    ranges = column_ranges([train, holdout], numerical)
    to_train = closest_record_distances(synthetic, train, numerical, categorical, ranges=ranges)
    to_holdout = closest_record_distances(synthetic, holdout, numerical, categorical, ranges=ranges)
    closer = float((to_train < to_holdout).mean())
    return min((1.0 - closer) * 2, 1.0), closer


def dcr_overfitting(released, synth_ctx, contract: Contract, **_) -> list[GateResult]:
    """Share of synthetic rows closer to training rows than to an equal-size holdout.

    Samples, as SDMetrics' DCROverfittingProtection does (its ``num_rows_subsample``): at most
    ``gates.subsample`` synthetic rows, against at most 5 x that many rows of each half, drawn with
    ``synthesis.seed``. In a panel table the halves hold different entities (``split_holdout``).
    """
    out = []
    limit = contract.gates.dcr_overfitting_protection
    size, seed = contract.gates.subsample, contract.synthesis.seed
    for tname in contract.tables:
        skip = _generated(contract, tname)
        # Training and holdout samples of equal size (up to 5 x subsample), so neither is favoured.
        train, hold = _equal_halves(
            _comparable(synth_ctx["train"][tname], skip), _comparable(synth_ctx["holdout"][tname], skip),
            5 * size, seed,
        )
        syn = _comparable(_canonical(released, synth_ctx, contract)[tname], skip)
        syn = syn.sample(n=min(len(syn), size), random_state=seed)
        numerical, categorical = _field_kinds(synth_ctx["metadata"], tname, syn.columns)
        score, closer = dcr_overfitting_protection(train, syn, hold, numerical, categorical)
        out.append(because("dcr_overfitting_protection", tname, round(score, 4), f">= {limit}", score >= limit,
                           says(N_("%(synthetic)s synthetic rows against %(train)s training and %(hold)s holdout"
                                   " rows; %(closer)s closer to training"), synthetic=len(syn), train=len(train),
                                hold=len(hold), closer=f"{closer:.1%}")))
    return out


def _attack_frame(df: pd.DataFrame) -> pd.DataFrame:
    out = df.reset_index(drop=True)
    for c in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[c].dtype):
            out[c] = (out[c] - pd.Timestamp("1970-01-01")).dt.days.astype("float64")
        elif out[c].dtype == object:
            out[c] = out[c].astype(str)
    return out


def _anonymeter_risks(ori: pd.DataFrame, syn: pd.DataFrame, control: pd.DataFrame, n: int, sensitive: list[str],
                      seed: int) -> dict[str, float]:
    from anonymeter.evaluators import InferenceEvaluator, LinkabilityEvaluator

    from .singling_out import SinglingOut

    cols = list(syn.columns)
    risks: dict[str, float] = {}
    so = SinglingOut(ori=ori, syn=syn, control=control, n_attacks=n, seed=seed)
    risks["singling_out"] = _quiet(lambda: so.evaluate(mode="univariate").risk().value)
    if len(cols) >= 2:
        half = len(cols) // 2
        link = LinkabilityEvaluator(ori=ori, syn=syn, control=control, aux_cols=(cols[:half], cols[half:]),
                                    n_attacks=n, n_neighbors=1)
        risks["linkability"] = _quiet(lambda: link.evaluate(n_jobs=1).risk().value)
        for secret in sensitive or [cols[-1]]:
            inf = InferenceEvaluator(ori=ori, syn=syn, control=control, n_attacks=n, secret=secret,
                                     aux_cols=[c for c in cols if c != secret],
                                     regression=pd.api.types.is_numeric_dtype(syn[secret].dtype))
            risks[f"inference:{secret}"] = _quiet(lambda: inf.evaluate(n_jobs=1).risk().value)
    return risks


def attack_risks(released, synth_ctx, contract: Contract, **_) -> list[GateResult]:
    """Anonymeter's singling-out, linkability and inference risks, against a holdout control.

    Anonymeter attacks samples: at most ``gates.subsample`` rows of the release and of each half,
    ``gates.anonymeter_attacks`` attacks, all drawn with ``synthesis.seed``.
    """
    out = []
    g = contract.gates
    for tname, t in contract.tables.items():
        skip = _generated(contract, tname)
        ori, control = _equal_halves(
            _comparable(synth_ctx["train"][tname], skip), _comparable(synth_ctx["holdout"][tname], skip),
            g.subsample, contract.synthesis.seed,
        )
        syn = _comparable(_canonical(released, synth_ctx, contract)[tname], skip)
        syn = syn.sample(n=min(len(syn), g.subsample), random_state=contract.synthesis.seed)
        ori, control, syn = _attack_frame(ori), _attack_frame(control), _attack_frame(syn)
        cols = list(syn.columns)
        n = min(g.anonymeter_attacks, len(control))
        with _seeded(contract.synthesis.seed):  # Anonymeter picks its targets from numpy's global generator
            risks = _anonymeter_risks(ori, syn, control, n, [c for c in t.sensitive() if c in cols],
                                      contract.synthesis.seed)
        for attack, risk in risks.items():
            out.append(because(f"attack_risk:{attack}", tname, round(float(risk), 4), f"<= {g.max_attack_risk}",
                               float(risk) <= g.max_attack_risk, says(N_("anonymeter, %(n)s attacks"), n=n)))
    return out
