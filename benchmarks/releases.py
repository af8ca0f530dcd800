"""Release benchmarks: masking at scale, k/l checks vs pycanon, and what the gates cost.

Run: ``.venv/bin/python benchmarks/releases.py [--rows 1000000] [--kl-rows 100000] [--synth-rows 100000]
[--composition-rows 1000000] [--earlier 10] [--parts masking,kl,synthetic,composition]``

Prints figures and ratios against baselines measured in the same process; asserts nothing about
time. Targets (2 cores): masking 1,000,000 rows x 20 columns <= 20 s; our k/l check >= 10x faster
than pycanon with identical k and l; the gates of a GaussianCopula release add <= 50 % to the
plain SDV fit + sample time; the composition check of a 1,000,000-row release against 10 earlier
releases of its source <= 30 s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from synthetic import demo, gates, lineage, masking, pipeline, privacy
from synthetic.contract import Contract


def _timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def wide_table(n: int, seed: int = 0) -> pd.DataFrame:
    """20 columns: 2 direct identifiers, 4 quasi-identifiers, 1 sensitive, 13 measures (GENERATED)."""
    rng = np.random.default_rng(seed)
    ids = pd.Series(np.arange(n)).astype(str)
    df = pd.DataFrame({
        "person_id": "P" + ids.str.zfill(9),
        "phone": pd.Series(rng.integers(13_000_000_000, 19_999_999_999, size=n)).astype(str),
        "age": pd.array(rng.integers(0, 100, size=n), dtype="Int64"),
        "sex": rng.choice(["F", "M"], size=n),
        "region": pd.Series(rng.integers(11, 66, size=n) * 10_000 + rng.integers(100, 9999, size=n)).astype(str),
        "visit_date": pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 365 * 5, size=n), unit="D"),
        "diagnosis": rng.choice(["I10", "E11", "J45", "K29", "none"], size=n),
        "income": rng.lognormal(11, 0.6, size=n),
        "weight": rng.normal(65, 12, size=n),
    })
    for i in range(11):
        df[f"m{i:02d}"] = rng.normal(size=n)
    return df


WIDE_CONTRACT = {
    "name": "bench",
    "tables": {"t": {"path": "unused.parquet", "primary_key": "person_id", "columns": {
        "person_id": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
        "phone": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
        "age": {"role": "quasi_identifier", "type": "integer", "treatment": "bands",
                "bins": [0, 18, 30, 45, 60, 75, float("inf")]},
        "sex": {"role": "quasi_identifier", "type": "string"},
        "region": {"role": "quasi_identifier", "type": "string", "treatment": "truncate", "keep": 2},
        "visit_date": {"role": "quasi_identifier", "type": "date", "treatment": "year"},
        "diagnosis": {"role": "sensitive", "type": "string"},
        "income": {"role": "measure", "type": "float", "treatment": "top_bottom", "bottom": "p1", "top": "p99"},
        "weight": {"role": "measure", "type": "float", "treatment": "bands", "bins": [0, 50, 60, 70, 80, 90, 500]},
        **{f"m{i:02d}": {"role": "measure", "type": "float"} for i in range(11)},
    }}},
}


def bench_masking(rows: int) -> None:
    print(f"\n== masking {rows:,} rows x 20 columns (2 pseudonymised, 5 generalised, k over 4 QIs)")
    contract = Contract.model_validate(WIDE_CONTRACT)
    raw, t_gen = _timed(wide_table, rows)
    key = b"b" * 32
    masked, t_mask = _timed(masking.mask_tables, contract, {"t": raw}, key, progress=False)
    rep = masked.reports["t"]
    results, t_gates = _timed(gates.run, gates.MASKED_GATES, progress=False, released=masked.tables,
                              contract=contract, raw={"t": raw}, key=key, method="masked")
    print(f"generate {t_gen:6.2f} s (not counted)")
    print(f"mask+suppress {t_mask:6.2f} s  ({rows / t_mask:,.0f} rows/s; target <= 20 s: "
          f"{'met' if t_mask <= 20 else 'missed'})")
    print(f"  k = {rep.k}, l = {rep.l}, suppressed {rep.suppressed_rows:,} rows over {rep.quasi_identifiers}")
    print(f"masked gates {t_gates:6.2f} s  (all passed: {all(r.passed for r in results)})")
    print(f"mask+suppress+gates {t_mask + t_gates:6.2f} s")


def bench_kl(rows: int) -> None:
    print(f"\n== k/l check on {rows:,} rows: vectorised vs pycanon")
    try:
        from pycanon import anonymity
    except ImportError:
        print("pycanon is not installed: pip install --no-deps -r requirements/no-deps/data.txt")
        return
    rng = np.random.default_rng(1)
    df = pd.DataFrame({
        "band": rng.choice(["0-17", "18-29", "30-44", "45-59", "60-74", "75+"], size=rows),
        "sex": rng.choice(["F", "M"], size=rows),
        "region": rng.choice([str(r) for r in range(11, 66)], size=rows),
        "year": rng.integers(2020, 2025, size=rows),
        "diagnosis": rng.choice(["I10", "E11", "J45", "K29", "none"], size=rows),
    })
    qis, sa = ["band", "sex", "region", "year"], ["diagnosis"]
    (k_ours, t_k), (l_ours, t_l) = _timed(privacy.k_anonymity, df, qis), _timed(privacy.l_diversity, df, qis, sa)
    (k_ref, t_kr), (l_ref, t_lr) = _timed(anonymity.k_anonymity, df, qis), _timed(anonymity.l_diversity, df, qis, sa)
    classes = len(np.unique(privacy.class_codes(df, qis)))
    ours, ref = t_k + t_l, t_kr + t_lr
    print(f"{classes:,} equivalence classes over {qis}")
    print(f"ours:    k = {k_ours}, l = {l_ours} in {ours:.3f} s (k {t_k:.3f} s, l {t_l:.3f} s)")
    print(f"pycanon: k = {k_ref}, l = {l_ref} in {ref:.3f} s (k {t_kr:.3f} s, l {t_lr:.3f} s)")
    print(f"identical: {k_ours == k_ref and l_ours == l_ref}; speed-up {ref / ours:.1f}x (target >= 10x)")


class _Store:
    """The holder's locations (``pipeline.HolderSettings``) under a temporary folder."""

    def __init__(self, root: Path) -> None:
        self.release_store = root / "releases"
        self.secrets_dir = root / "secrets"
        self.holder_dir = root / "holder"


def _release(root: Path, contract_path: Path) -> tuple[dict, str]:
    """A synthetic release's manifest and outcome; a refused release has measured its gates too."""
    try:
        result = pipeline.release(_Store(root), contract_path, "synthetic", progress=False)
        return result.manifest, f"published {result.release}"
    except gates.GateFailure as exc:
        return exc.manifest, "refused"


def bench_synthetic(rows: int) -> None:
    """Gates of a GaussianCopula release against plain SDV fit + sample of the same table."""
    print(f"\n== GaussianCopula release of {rows:,} rows with every gate")
    from sdv.metadata import Metadata
    from sdv.single_table import GaussianCopulaSynthesizer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (contract_path, t_gen) = _timed(demo.write_residents, root / "raw", n=rows)
        print(f"generate {t_gen:6.2f} s (not counted)")
        # Numba compiles Anonymeter's kernels once per process; pay that before timing.
        with tempfile.TemporaryDirectory() as warm:
            _, t_warm = _timed(_release, Path(warm), demo.write_residents(Path(warm) / "raw", n=400))
        print(f"warm-up release of 400 rows {t_warm:6.2f} s (one-off imports and JIT compilation, not counted)")

        # Baseline: plain SDV on the same prepared table (train half, sample full size), no gates.
        from synthetic import synthesis
        from synthetic.contract import load_contract, load_tables

        contract = load_contract(contract_path)
        raw = load_tables(contract, contract_path.parent)
        prepared = synthesis.prepare(contract, masking.mask_tables(contract, raw, b"w" * 32, suppress=False,
                                                                   progress=False).tables)
        train, _ = synthesis.split_holdout(contract, prepared.tables, 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            md = Metadata.detect_from_dataframes(data={"residents": train["residents"]})
            model = GaussianCopulaSynthesizer(md, default_distribution="truncnorm")
            _, t_fit = _timed(model.fit, {"residents": train["residents"]})
            _, t_sample = _timed(model.sample, num_rows=rows)
        baseline = t_fit + t_sample
        print(f"baseline SDV fit {t_fit:.2f} s + sample {t_sample:.2f} s = {baseline:.2f} s")

        (manifest, outcome), t_total = _timed(_release, root, contract_path)
        tm = manifest["timings_s"]
        print(f"release {outcome}: total {t_total:.2f} s; stages "
              f"{ {k: v for k, v in tm.items() if k != 'per_gate'} }")
        for g in manifest["gates"]:
            print(f"  {'pass' if g['passed'] else 'FAIL'} {g['gate']} [{g['table']}] {g['value']} ({g['threshold']})")
        print("gate timings (slowest first): " + ", ".join(
            f"{name} {t:.2f} s" for name, t in sorted(tm["per_gate"].items(), key=lambda kv: -kv[1])))
        print(f"gates {tm['gates']:.2f} s = {100 * tm['gates'] / baseline:.0f} % of the baseline fit+sample "
              f"(target <= 50 %); {100 * tm['gates'] / tm['synthesise']:.0f} % of the release's own "
              f"fit+sample ({tm['synthesise']:.2f} s)")


# -- composition: a release checked against earlier releases of its source ---------------------


def _composition_contract(bins: list[float]) -> Contract:
    return Contract.model_validate({
        "name": "bench", "privacy": {"k": 5},
        "tables": {"t": {"path": "unused.parquet", "primary_key": "person_id", "columns": {
            "person_id": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
            "age": {"role": "quasi_identifier", "type": "integer", "treatment": "bands", "bins": bins},
            "sex": {"role": "quasi_identifier", "type": "string"},
            "region": {"role": "quasi_identifier", "type": "string"},
            "income": {"role": "measure", "type": "float"},
        }}},
    })


def _composition_raw(n: int, seed: int = 0) -> pd.DataFrame:
    """GENERATED people: id, age, sex, region (two-digit province), income."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "person_id": "P" + pd.Series(np.arange(n)).astype(str).str.zfill(9),
        "age": pd.array(rng.integers(0, 100, size=n), dtype="Int64"),
        "sex": rng.choice(["女", "男"], size=n),
        "region": pd.Series(rng.integers(11, 66, size=n)).astype(str),
        "income": rng.lognormal(11, 0.6, size=n),
    })


def _composition_release(contract: Contract, raw: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The released quasi-identifiers of a cut, shuffled, indexed by raw row (as the pipeline has
    them); a random 1 % of rows suppressed."""
    col = contract.tables["t"].columns["age"]
    age = pd.cut(raw["age"].astype("float64"), bins=col.bins, right=False).astype(str)
    df = pd.DataFrame({"age": age, "sex": raw["sex"],
                       "region": raw["region"], "income": raw["income"]}, index=raw.index)
    rng = np.random.default_rng(seed)
    return df.iloc[rng.permutation(len(df))[: int(len(df) * 0.99)]]


def _offset_bins(offset: int) -> list[float]:
    return [0.0] + [float(e) for e in range(offset or 10, 100, 10)] + [float("inf")]


def _composition_baseline(current: pd.DataFrame, earlier: list[pd.DataFrame]) -> None:
    """A plain merge on row id and a groupby counting distinct entities per combined class."""
    for prev in earlier:
        joined = current.merge(prev, on="row", suffixes=("", "_prev"))
        joined.groupby(["class", "class_prev"])["entity"].nunique().min()


def bench_composition(rows: int, earlier_releases: int) -> None:
    """A masked release checked against earlier releases of its source (lineage recorded for each,
    age bands offset by one year from the previous), pairwise and all together; the baseline is a
    plain pandas merge on the raw person id + groupby counting distinct entities per combined class
    (no ids to compute, no lineage to read)."""

    raw = _composition_raw(rows)
    with tempfile.TemporaryDirectory() as tmp:
        holder, secrets = Path(tmp) / "holder", Path(tmp) / "secrets"
        t = time.perf_counter()
        for n in range(1, earlier_releases + 1):
            contract = _composition_contract(_offset_bins(n % 10))
            manifest = {"method": "masked", "source": {"t": {"sha256": "0" * 64}}, "contract": {}, "gates": []}
            lineage.record_release(holder, f"bench@{n}", contract, {"t": _composition_release(contract, raw, n)},
                                   {"t": raw}, manifest, secrets_dir=secrets)
        setup = time.perf_counter() - t
        current_contract = _composition_contract(_offset_bins(5))
        current = _composition_release(current_contract, raw, 0)

        t = time.perf_counter()
        results = gates.composition(released={"t": current}, contract=current_contract, raw={"t": raw},
                                    holder_dir=holder, secrets_dir=secrets, release=f"bench@{earlier_releases + 1}")
        gate_s = time.perf_counter() - t

        # Baseline input prepared outside its timing: raw person ids (no MAC) and the same classes.
        def plain(df: pd.DataFrame) -> pd.DataFrame:
            ids = raw.loc[df.index, "person_id"].to_numpy()
            return pd.DataFrame({"row": ids, "class": lineage.class_codes(df, ["age", "sex", "region"])})

        frame = plain(current).assign(entity=lambda d: d["row"])
        earlier = [plain(_composition_release(_composition_contract(_offset_bins(n % 10)), raw, n))
                   for n in range(1, earlier_releases + 1)]
        t = time.perf_counter()
        _composition_baseline(frame, earlier)
        base_s = time.perf_counter() - t

    worst = min((r.value for r in results if r.value is not None), default=None)
    print(f"composition check: {rows:,} rows against {earlier_releases} earlier releases")
    print(f"  lineage of the earlier releases recorded in {setup:.1f} s ({setup / earlier_releases:.2f} s each)")
    print(f"  gate (pairwise + all together, {len(results)} results, worst k {worst}): {gate_s:.2f} s"
          f"  (target <= 30 s)")
    print(f"  baseline (pandas merge on raw ids + groupby nunique, pairwise only): {base_s:.2f} s")
    print(f"  ratio gate / baseline: {gate_s / base_s:.2f}x")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--kl-rows", type=int, default=100_000)
    ap.add_argument("--synth-rows", type=int, default=100_000)
    ap.add_argument("--composition-rows", type=int, default=1_000_000)
    ap.add_argument("--earlier", type=int, default=10, help="earlier releases the composition check combines")
    ap.add_argument("--parts", default="masking,kl,synthetic,composition", help="comma-separated subset to run")
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    if "masking" in parts:
        bench_masking(args.rows)
    if "kl" in parts:
        bench_kl(args.kl_rows)
    if "synthetic" in parts:
        bench_synthetic(args.synth_rows)
    if "composition" in parts:
        bench_composition(args.composition_rows, args.earlier)


if __name__ == "__main__":
    main(sys.argv[1:])
