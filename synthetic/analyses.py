"""Declared analyses: what a release must still support, measured on the real rows and on the release.

A contract may list the analyses its release is for (``analyses:``); each runs twice on the data
holder's side, on the real rows (at the release's granularity: masked tables before suppression,
or the tables the generator learned from) and on the release, and the two results are compared:

- ``regression``: an ordinary least squares fit of a formula (``wage ~ age + C(education)``).
  Per coefficient both estimates, their 95 % confidence intervals and the intervals' overlap
  (Karr et al. 2006: the mean of the shared length over each interval's length, 0 when they do not
  meet); the release passes when the mean overlap reaches ``min_ci_overlap`` and (``same_sign``)
  every coefficient significant at 5 % on the real rows keeps its sign. Banded columns are
  categories, their lowest band the reference.
- ``aggregate``: a statistic of a measure per group; every group holding at least k entities in the
  real rows must be in the release, within ``tolerance`` (relative). Smaller groups are neither
  compared nor shown: their figures would single out few people.
- ``classifier``: a random forest trained on the release and one trained on real rows, both
  scored on the same real test rows (train on synthetic, test on real; at most 20,000 rows each,
  sampled); the release's score must be within ``tolerance`` of the real one.

``check`` lists what is wrong with the declarations (unknown or unreleased columns, a measure that
is not numeric, a target with one class), each naming the analysis and the column; ``compare``
runs one analysis and returns an ``Outcome`` whose ``figures`` hold every compared number.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .contract import Analysis, Column, Contract, Table
from .masking import band_labels, bands

# Names a regression formula may call besides its table's columns (patsy adds C, I and the
# contrasts itself). Formulas are evaluated by patsy with Python's eval: nothing else is allowed in.
_FUNCTIONS = {"C", "I", "Treatment", "Sum", "Poly", "Diff", "Helmert", "center", "standardize", "scale",
              "log", "log1p", "log10", "exp", "sqrt", "abs"}
_NUMPY = {"log", "log1p", "log10", "exp", "sqrt", "abs"}
_NODES = (ast.Expression, ast.Name, ast.Load, ast.Call, ast.Attribute, ast.BinOp, ast.UnaryOp, ast.Constant,
          ast.keyword, ast.operator, ast.unaryop)
MISSING = "(missing)"


class AnalysisError(Exception):
    """An analysis cannot run; the message names the analysis and what is wrong."""


@dataclass
class Outcome:
    passed: bool
    value: float | None
    threshold: str
    detail: str
    figures: dict = field(default_factory=dict)  # every compared number, for reports


# -- what a release of a table holds ----------------------------------------------------------------

# How a released column can be analysed: a number, a category, a banded number (ordered categories).
Kind = str  # "numeric" | "category" | "banded"


def released_columns(table: Table) -> dict[str, Kind]:
    """Analysable columns of a release of ``table`` and their kind.

    Direct identifiers (pseudonyms at best), free text and shifted dates are not analysable.
    """
    out: dict[str, Kind] = {}
    for name, col in table.columns.items():
        if col.treatment == "drop" or col.role in ("direct_identifier", "free_text") or col.treatment == "shift":
            continue
        if col.treatment == "bands":
            out[name] = "banded"
        elif col.type in ("integer", "float") or col.treatment == "year":
            out[name] = "numeric"
        else:
            out[name] = "category"
    for name in table.derived_columns():
        out[name] = "category"
    return out


def _why_not_released(table: Table, column: str) -> str:
    col: Column | None = table.columns.get(column)
    if col is None:
        return "is not a column of the table"
    if col.treatment == "drop":
        return "is dropped from the release"
    if col.role == "direct_identifier":
        return "is a direct identifier (released as a pseudonym at most)"
    if col.role == "free_text":
        return "is free text"
    return "is a shifted date (treat it 'year' to analyse it)"


# -- regression formulas ------------------------------------------------------------------------------


@dataclass
class Formula:
    outcome: list[str]  # columns the outcome is computed from
    predictors: list[str]
    categorical: set[str]  # columns used inside C(...)


def parse_formula(formula: str, columns: set[str]) -> Formula:
    """The columns a formula names; AnalysisError for anything but columns and known functions."""
    import patsy

    try:
        desc = patsy.ModelDesc.from_formula(formula)
    except patsy.PatsyError as exc:
        raise AnalysisError(f"formula '{formula}' is not valid: {exc.message}") from None
    if not desc.lhs_termlist:
        raise AnalysisError(f"formula '{formula}' has no outcome (write 'outcome ~ predictors')")
    found: dict[str, set[str]] = {"lhs": set(), "rhs": set()}
    categorical: set[str] = set()
    for side, terms in (("lhs", desc.lhs_termlist), ("rhs", desc.rhs_termlist)):
        for term in terms:
            for factor in term.factors:
                names, cats = _factor_columns(factor.code, columns, formula)
                found[side] |= names
                categorical |= cats
    return Formula(sorted(found["lhs"]), sorted(found["rhs"] - found["lhs"]), categorical)


def _factor_columns(code: str, columns: set[str], formula: str) -> tuple[set[str], set[str]]:
    tree = ast.parse(code, mode="eval")
    names: set[str] = set()
    categorical: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            raise AnalysisError(f"formula '{formula}': '{code}' uses {type(node).__name__}, which is not allowed")
        if isinstance(node, ast.Attribute):
            if not (isinstance(node.value, ast.Name) and node.value.id == "np" and node.attr in _NUMPY):
                raise AnalysisError(f"formula '{formula}': '{ast.unparse(node)}' is not allowed"
                                    f" (allowed: np.{', np.'.join(sorted(_NUMPY))})")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "C" and node.args:
            categorical |= {n.id for n in ast.walk(node.args[0]) if isinstance(n, ast.Name)}
    attribute_bases = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Name) or id(node) in attribute_bases:
            continue
        if id(node) in called:
            if node.id not in _FUNCTIONS:
                raise AnalysisError(f"formula '{formula}': function '{node.id}' is not allowed"
                                    f" (allowed: {', '.join(sorted(_FUNCTIONS))})")
        elif node.id in columns:
            names.add(node.id)
        else:
            raise AnalysisError(f"formula '{formula}' names column '{node.id}', which is not in the table")
    return names, categorical & names


# -- checking declarations ------------------------------------------------------------------------------


def check(contract: Contract, tables: dict[str, pd.DataFrame] | None = None) -> list[str]:
    """Every problem of the contract's analyses, each naming the analysis and the column.

    ``tables`` (the typed raw tables, optional) adds checks on the data: a classifier's target
    with fewer than two classes, a column without any value.
    """
    problems: list[str] = []
    for a in contract.analyses:
        problems.extend(f"analysis '{a.name}': {p}" for p in _problems(a, contract, tables))
    return problems


def _problems(a: Analysis, contract: Contract, tables: dict[str, pd.DataFrame] | None) -> list[str]:
    if a.table not in contract.tables:
        return [f"table '{a.table}' is not in the contract"]
    table = contract.tables[a.table]
    kinds = released_columns(table)
    df = tables.get(a.table) if tables is not None else None

    def unreleased(columns: list[str], what: str) -> list[str]:
        return [f"{what} '{c}' {_why_not_released(table, c)}" for c in columns if c not in kinds]

    problems: list[str] = []
    used: list[str] = []
    if a.regression:
        try:
            f = parse_formula(a.regression.formula, set(table.columns) | set(table.derived_columns()))
        except AnalysisError as exc:
            return [str(exc)]
        problems += unreleased(f.outcome + f.predictors, "column")
        problems += [f"the outcome '{c}' is {kinds[c]}, not a number: a regression needs a numeric outcome"
                     for c in f.outcome if kinds.get(c) in ("category", "banded")]
        used = f.outcome + f.predictors
    elif a.aggregate:
        g = a.aggregate
        problems += unreleased(g.by, "group column")
        problems += [f"group column '{c}' is a continuous measure: group by a banded or categorical column"
                     for c in g.by if kinds.get(c) == "numeric" and table.columns[c].type == "float"]
        if g.measure is not None:
            problems += unreleased([g.measure], "measure")
            if kinds.get(g.measure) in ("category", "banded"):
                problems.append(f"measure '{g.measure}' is not numeric ({kinds[g.measure]})")
        used = g.by + ([g.measure] if g.measure else [])
    else:
        c = a.classifier
        problems += unreleased([c.target], "target") + unreleased(c.features, "feature")
        if c.target in c.features:
            problems.append(f"target '{c.target}' is also a feature")
        if c.target in kinds and kinds[c.target] == "numeric" and table.columns[c.target].type == "float":
            problems.append(f"target '{c.target}' is a continuous measure: a classifier needs classes"
                            " (band it, or declare a regression)")
        elif df is not None and c.target in kinds and c.target in df:
            classes = _labels(df[c.target], table, c.target).dropna().nunique()
            if classes < 2:
                problems.append(f"target '{c.target}' has {classes} class(es) in the data: a classifier needs two")
        used = [c.target, *c.features]
    if df is not None:
        problems += [f"column '{c}' has no value in the data" for c in dict.fromkeys(used)
                     if c in kinds and c in df and df[c].isna().all()]
    return problems


# -- running one analysis ----------------------------------------------------------------------------------


def compare(
    analysis: Analysis,
    contract: Contract,
    real: pd.DataFrame,
    released: pd.DataFrame,
    *,
    test_split: tuple[pd.DataFrame, pd.DataFrame] | None = None,
) -> Outcome:
    """Run ``analysis`` on the real rows and on the release; AnalysisError if it cannot run.

    ``test_split`` (classifiers): real training and test rows to use (a synthetic release's
    training rows and holdout); without it the real rows are split, and released rows descending
    from test rows (same index) are kept out of the release's training rows.
    """
    problems = _problems(analysis, contract, None)
    if problems:
        raise AnalysisError("; ".join(problems))
    table = contract.tables[analysis.table]
    for where, df in (("real rows", real), ("release", released)):
        missing = [c for c in _used_columns(analysis, table) if c not in df.columns]
        if missing:
            raise AnalysisError(f"column(s) {', '.join(missing)} missing from the {where}")
    if analysis.regression:
        return _regression(analysis, table, real, released)
    if analysis.aggregate:
        return _aggregate(analysis, table, contract.privacy.k, real, released)
    return _classifier(analysis, table, contract.synthesis.seed, real, released, test_split)


def _used_columns(a: Analysis, table: Table) -> list[str]:
    if a.regression:
        f = parse_formula(a.regression.formula, set(released_columns(table)))
        return f.outcome + f.predictors
    if a.aggregate:
        return a.aggregate.by + ([a.aggregate.measure] if a.aggregate.measure else [])
    return [a.classifier.target, *a.classifier.features]


def _labels(values: pd.Series, table: Table, column: str) -> pd.Series:
    """A column as category labels (text): banded numbers in their bands, numbers without '.0'."""
    col = table.columns.get(column)
    if col is not None and col.treatment == "bands" and pd.api.types.is_numeric_dtype(values.dtype):
        values = bands(values, col.bins)
    codes, uniques = pd.factorize(values)  # label each distinct value once
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        text = [str(int(v)) if float(v).is_integer() else repr(float(v)) for v in uniques]
    else:
        text = [str(v) for v in uniques]
    return pd.Series(np.array(text + [None], dtype=object)[codes], index=values.index, dtype=object)


def _level_order(levels, table: Table, column: str) -> list[str]:
    col = table.columns.get(column)
    present = set(levels) - {MISSING}
    if MISSING in levels:  # an aggregate's group of rows without a value comes last
        return _level_order(present, table, column) + [MISSING]
    if col is not None and col.treatment == "bands":
        ordered = band_labels(col.bins)
        return [b for b in ordered if b in present] + sorted(present - set(ordered))
    try:
        return sorted(present, key=float)
    except ValueError:
        return sorted(present)


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def _round(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


# -- regression ----------------------------------------------------------------------------------------------


def _regression_frame(df: pd.DataFrame, table: Table, f: Formula, levels: dict[str, list[str]] | None):
    """The formula's columns ready for patsy: numbers as floats, categories with fixed levels."""
    kinds = released_columns(table)
    out = pd.DataFrame(index=df.index)
    found_levels: dict[str, list[str]] = {}
    for c in f.outcome + f.predictors:
        if kinds[c] == "numeric" and c not in f.categorical:
            out[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
            continue
        labels = _labels(df[c], table, c)
        found_levels[c] = _level_order(labels.dropna().unique(), table, c)
        # The release is coded with the real rows' levels, so both fits have the same coefficients.
        out[c] = pd.Categorical(labels, categories=levels[c] if levels is not None else found_levels[c])
    return out, found_levels


def _regression(a: Analysis, table: Table, real: pd.DataFrame, released: pd.DataFrame) -> Outcome:
    import patsy
    import statsmodels.api as sm

    spec = a.regression
    f = parse_formula(spec.formula, set(released_columns(table)))
    real_frame, real_levels = _regression_frame(real, table, f, None)
    rel_frame, rel_levels = _regression_frame(released, table, f, real_levels)
    env = patsy.EvalEnvironment([{"np": np, **{n: getattr(np, n) for n in _NUMPY}}])
    notes: list[str] = []
    for c, lv in rel_levels.items():
        only_release = [x for x in lv if x not in real_levels[c]]
        only_real = [x for x in real_levels[c] if x not in lv]
        if only_release:
            n = int(_labels(released[c], table, c).isin(only_release).sum())
            notes.append(f"{c} level(s) {', '.join(only_release)} only in the release ({n} row(s) left out)")
        if only_real:
            notes.append(f"{c} level(s) {', '.join(only_real)} only in the real rows (not estimable on the release)")
    try:
        with np.errstate(divide="ignore", invalid="ignore"):  # infinite terms: left out below, and said
            y_real, x_real = patsy.dmatrices(spec.formula, real_frame, eval_env=env, NA_action="drop",
                                             return_type="dataframe")
            y_rel, x_rel = patsy.build_design_matrices([y_real.design_info, x_real.design_info], rel_frame,
                                                       NA_action="drop", return_type="dataframe")
    except (patsy.PatsyError, ValueError, TypeError) as exc:
        raise AnalysisError(f"formula '{spec.formula}' cannot be evaluated: {getattr(exc, 'message', exc)}") from None
    if y_real.shape[1] != 1:
        raise AnalysisError(f"formula '{spec.formula}': the outcome must be one numeric column")
    y_real, x_real = _finite(y_real, x_real, "real rows", notes)
    y_rel, x_rel = _finite(y_rel, x_rel, "release", notes)
    terms = list(x_real.columns)
    real_fit = _ols(sm, y_real, x_real, "real rows", spec.formula)
    # Coefficients of levels absent from the release (a column of zeros) cannot be estimated there.
    estimable = [t for t in terms if t == "Intercept" or x_rel[t].abs().sum() > 0]
    rel_fit = _ols(sm, y_rel, x_rel[estimable], "release", spec.formula)

    rows, overlaps, flipped = [], [], []
    real_ci, rel_ci = real_fit.conf_int(0.05), rel_fit.conf_int(0.05)
    for t in terms:
        r_est, r_lo, r_hi, p = (float(real_fit.params[t]), float(real_ci.loc[t, 0]), float(real_ci.loc[t, 1]),
                                float(real_fit.pvalues[t]))
        if t in estimable:
            s_est, s_lo, s_hi = float(rel_fit.params[t]), float(rel_ci.loc[t, 0]), float(rel_ci.loc[t, 1])
            overlap = ci_overlap((r_lo, r_hi), (s_lo, s_hi))
        else:
            s_est = s_lo = s_hi = None
            overlap = 0.0
        changed = bool(spec.same_sign and p < 0.05 and (s_est is None or np.sign(s_est) != np.sign(r_est)))
        overlaps.append(overlap)
        if changed:
            flipped.append(t)
        rows.append({"term": t, "overlap": _round(overlap, 4), "sign_changed": changed,
                     "real": {"estimate": _round(r_est), "ci95": [_round(r_lo), _round(r_hi)], "p": _round(p)},
                     "release": {"estimate": _round(s_est), "ci95": [_round(s_lo), _round(s_hi)]}})
    mean = float(np.mean(overlaps))
    passed = mean >= spec.min_ci_overlap and not flipped
    threshold = f"mean 95% CI overlap >= {spec.min_ci_overlap}"
    if spec.same_sign:
        threshold += ", significant coefficients keep their sign"
    head = []
    if flipped:
        head.append(f"sign changed: {', '.join(flipped)}")
    if mean < spec.min_ci_overlap:
        low = sorted(rows, key=lambda r: r["overlap"])[:3]
        head.append(f"mean CI overlap {mean:.3f} < {spec.min_ci_overlap} (lowest: "
                    + ", ".join(f"{r['term']} {r['overlap']:.2f}" for r in low) + ")")
    figures = {
        "kind": "regression", "formula": spec.formula,
        "rows": {"real": int(real_fit.nobs), "release": int(rel_fit.nobs)},
        "r2": {"real": _round(real_fit.rsquared, 4), "release": _round(rel_fit.rsquared, 4)},
        "mean_ci_overlap": _round(mean, 4), "coefficients": rows, "notes": notes,
    }
    detail = "; ".join(head + [
        f"{spec.formula}: R² real {_fmt(real_fit.rsquared)}, release {_fmt(rel_fit.rsquared)}"
        f" ({int(real_fit.nobs)} and {int(rel_fit.nobs)} complete rows)",
        *(f"{r['term']}: real {_fmt(r['real']['estimate'])} [{_fmt(r['real']['ci95'][0])}, {_fmt(r['real']['ci95'][1])}],"
          f" release {_fmt(r['release']['estimate'])} [{_fmt(r['release']['ci95'][0])}, {_fmt(r['release']['ci95'][1])}],"
          f" overlap {r['overlap']:.2f}" + (" SIGN CHANGED" if r["sign_changed"] else "") for r in rows),
        *notes,
    ])
    return Outcome(passed, round(mean, 4), threshold, detail, figures)


def _finite(y: pd.DataFrame, x: pd.DataFrame, where: str, notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows whose terms are all finite; the others (np.log(0) and the like) left out, and said."""
    finite = np.isfinite(y.to_numpy()).all(axis=1) & np.isfinite(x.to_numpy()).all(axis=1)
    if not finite.all():
        notes.append(f"{int((~finite).sum())} row(s) of the {where} left out: a term is infinite there")
    return y[finite], x[finite]


def _ols(sm, y: pd.DataFrame, x: pd.DataFrame, where: str, formula: str):
    if len(y) <= x.shape[1]:
        raise AnalysisError(f"formula '{formula}': {len(y)} complete row(s) on the {where}, too few for"
                            f" {x.shape[1]} coefficient(s)")
    rank = np.linalg.matrix_rank(x.to_numpy(dtype="float64"))
    if rank < x.shape[1]:
        raise AnalysisError(f"formula '{formula}': its terms are collinear on the {where}"
                            f" ({x.shape[1]} coefficients, rank {rank})")
    return sm.OLS(y.iloc[:, 0], x).fit()


def ci_overlap(real: tuple[float, float], release: tuple[float, float]) -> float:
    """Karr et al.'s interval overlap: shared length over each interval's length, averaged; 0 if
    the intervals do not meet (the raw measure goes negative with the distance between them)."""
    shared = min(real[1], release[1]) - max(real[0], release[0])
    if shared <= 0:
        return 0.0
    return 0.5 * (shared / (real[1] - real[0]) + shared / (release[1] - release[0]))


# -- grouped aggregate -----------------------------------------------------------------------------------------


def _aggregate(a: Analysis, table: Table, k: int, real: pd.DataFrame, released: pd.DataFrame) -> Outcome:
    g = a.aggregate
    entity = table.entity()

    def grouped(df: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.DataFrame]:
        """The statistic and the entities of each group, indexed by the group's labels joined."""
        keys = pd.DataFrame({c: _labels(df[c], table, c).fillna(MISSING) for c in g.by}, index=df.index)
        key = keys[g.by[0]].str.cat([keys[c] for c in g.by[1:]], sep=" / ") if len(g.by) > 1 else keys[g.by[0]]
        if g.statistic == "count":
            stat = key.value_counts() / max(len(df), 1)  # each group's share of rows
        else:
            measure = pd.to_numeric(df[g.measure], errors="coerce").astype("float64")
            stat = measure.groupby(key).agg(g.statistic)
        people = df[entity].groupby(key).nunique() if entity and entity in df else key.value_counts()
        return stat, people, keys.assign(_group=key).drop_duplicates("_group")

    real_stat, real_people, real_groups = grouped(real)
    rel_stat, _, _ = grouped(released)
    if g.statistic == "sum":  # a release may hold fewer rows than the real data (suppression)
        rel_stat = rel_stat * (len(real) / max(len(released), 1))
    compared = real_groups[real_groups["_group"].map(real_people).fillna(0) >= k]
    small = len(real_stat) - len(compared)
    what = f"{g.statistic} of {g.measure}" if g.measure else "share of rows"
    if compared.empty:
        raise AnalysisError(f"no group of {', '.join(g.by)} holds {k} entities in the real rows: nothing to compare")
    # Groups in each column's natural order (bands by their edges, missing last).
    rank = {c: {v: i for i, v in enumerate(_level_order(compared[c].unique(), table, c))} for c in g.by}
    compared = compared.sort_values(g.by, key=lambda col: col.map(rank[col.name]))
    groups, failed = [], []
    for grp in compared["_group"]:
        r = float(real_stat[grp])
        s = float(rel_stat[grp]) if grp in rel_stat.index and pd.notna(rel_stat[grp]) else None
        diff = None if s is None else (abs(s - r) / abs(r) if r != 0 else (0.0 if s == 0 else math.inf))
        ok = diff is not None and diff <= g.tolerance
        groups.append({"group": grp, "real": _round(r), "release": _round(s), "relative_difference": _round(diff, 4),
                       "passed": ok})
        if not ok:
            failed.append(f"{grp} ({'missing in the release' if s is None else f'{_fmt(r)} vs {_fmt(s)}'})")
    worst = max((x["relative_difference"] if x["relative_difference"] is not None else math.inf) for x in groups)
    figures = {"kind": "aggregate", "by": g.by, "statistic": g.statistic, "measure": g.measure,
               "groups": groups, "groups_not_compared": small}
    head = [f"group(s) off: {', '.join(failed)}"] if failed else []
    detail = "; ".join(head + [f"{what} by {', '.join(g.by)}"] + [
        f"{x['group']}: real {_fmt(x['real'])}, release {_fmt(x['release'])}"
        + ("" if x["relative_difference"] is None else f" ({x['relative_difference']:.1%})")
        for x in groups
    ] + ([f"{small} group(s) under {k} entities not compared"] if small else []))
    return Outcome(not failed, None if math.isinf(worst) else round(worst, 4),
                   f"relative difference <= {g.tolerance} in every group of >= {k} entities", detail, figures)


# -- classifier -----------------------------------------------------------------------------------------------


def _classifier(
    a: Analysis, table: Table, seed: int, real: pd.DataFrame, released: pd.DataFrame,
    test_split: tuple[pd.DataFrame, pd.DataFrame] | None,
) -> Outcome:
    spec = a.classifier
    if test_split is None:
        train, test = _split(real, table.entity(), seed)
        released = released[~released.index.isin(test.index)]
    else:
        train, test = test_split
    kinds = released_columns(table)

    def xy(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
        y = _labels(df[spec.target], table, spec.target)
        keep = y.notna()
        x = pd.DataFrame(index=df.index[keep])
        for c in spec.features:
            if kinds[c] == "numeric":
                x[c] = pd.to_numeric(df.loc[keep, c], errors="coerce").astype("float64")
            else:
                x[c] = _labels(df.loc[keep, c], table, c).fillna(MISSING)
        return x, y[keep]

    train, test, released = (_sample(d, seed) for d in (train, test, released))
    (x_train, y_train), (x_test, y_test), (x_rel, y_rel) = xy(train), xy(test), xy(released)
    classes = sorted(set(y_test))
    for where, y in (("real training rows", y_train), ("release", y_rel), ("real test rows", y_test)):
        if y.nunique() < 2:
            raise AnalysisError(f"target '{spec.target}' has {y.nunique()} class(es) in the {where}:"
                                " a classifier needs two")
    real_score = _score(_model(spec, kinds, seed).fit(x_train, y_train), x_test, y_test, classes, spec.metric)
    rel_score = _score(_model(spec, kinds, seed).fit(x_rel, y_rel), x_test, y_test, classes, spec.metric)
    floor = real_score - spec.tolerance
    figures = {"kind": "classifier", "target": spec.target, "metric": spec.metric,
               "score": {"real": _round(real_score, 4), "release": _round(rel_score, 4)},
               "rows": {"real_training": len(y_train), "release_training": len(y_rel), "real_test": len(y_test)}}
    detail = (f"{spec.metric} on {len(y_test)} real test rows predicting {spec.target}: model trained on"
              f" {len(y_train)} real rows {real_score:.3f}, on {len(y_rel)} release rows {rel_score:.3f}")
    return Outcome(rel_score >= floor, round(rel_score, 4),
                   f">= {floor:.3f} (real-trained score {real_score:.3f} less {spec.tolerance})", detail, figures)


CLASSIFIER_ROWS = 20_000  # rows a classifier trains (and is scored) on at most: large tables are sampled


def _sample(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    return df.sample(CLASSIFIER_ROWS, random_state=seed) if len(df) > CLASSIFIER_ROWS else df


def _split(real: pd.DataFrame, entity: str | None, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """70 % / 30 % of the real rows; an entity's rows stay on one side."""
    rng = np.random.default_rng(seed)
    if entity and entity in real:
        ids = real[entity].dropna().unique()
        test_ids = rng.choice(ids, size=max(1, int(round(len(ids) * 0.3))), replace=False)
        in_test = real[entity].isin(test_ids).to_numpy()
    else:
        in_test = np.zeros(len(real), dtype=bool)
        in_test[rng.permutation(len(real))[: max(1, int(round(len(real) * 0.3)))]] = True
    return real[~in_test], real[in_test]


def _model(spec, kinds: dict[str, Kind], seed: int):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    numeric = [c for c in spec.features if kinds[c] == "numeric"]
    categorical = [c for c in spec.features if kinds[c] != "numeric"]
    encode = ColumnTransformer(
        [("numbers", "passthrough", numeric),
         ("categories", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical)])
    # A random forest copes with missing numbers, outliers and interactions without tuning; one
    # thread, as the gates share the holder's machine with the rest of the run.
    forest = RandomForestClassifier(n_estimators=100, min_samples_leaf=5, n_jobs=1, random_state=seed)
    return make_pipeline(encode, forest)


def _score(model, x: pd.DataFrame, y: pd.Series, classes: list[str], metric: str) -> float:
    from sklearn.metrics import accuracy_score, roc_auc_score

    if metric == "accuracy":
        return float(accuracy_score(y, model.predict(x)))
    # Probabilities over the test rows' classes; a class the model never saw gets none.
    proba = model.predict_proba(x)
    full = np.zeros((len(x), len(classes)))
    for i, c in enumerate(model.classes_):
        if c in classes:
            full[:, classes.index(c)] = proba[:, i]
    if len(classes) == 2:
        return float(roc_auc_score(y, full[:, 1]))
    total = full.sum(axis=1, keepdims=True)
    full = np.where(total > 0, full / np.where(total > 0, total, 1), 1 / len(classes))
    return float(roc_auc_score(y, full, multi_class="ovr", labels=classes))
