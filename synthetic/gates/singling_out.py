"""Anonymeter's univariate singling-out attack, with its queries drawn the same way in every run.

Anonymeter (1.1) builds the attack's queries from lists Polars makes: a column's rare values
(``group_by``) and its distinct values (``unique``), both in an order Polars does not keep, which
changes from process to process. The queries the seeded generator then draws from those lists
changed with it, and so did the measured risk: a holder could re-run a release until the gate
passed. Here the lists are in order of first appearance; the rest is Anonymeter's own code.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from anonymeter.evaluators import SinglingOutEvaluator
from anonymeter.evaluators import singling_out_evaluator as anonymeter


def univariate_queries(df: pl.DataFrame, n_queries: int, rng: np.random.Generator) -> list[pl.Expr]:
    """``anonymeter...univariate_singling_out_queries``: a value only one row has, a column's
    minimum and maximum, the one missing value of a column."""
    queries = []
    for col in df.columns:
        if df[col].null_count() == 1:
            queries.append(pl.col(col).is_null())
        if df.schema[col].is_numeric() and df[col].drop_nulls().len() > 0:
            queries.extend([pl.col(col) <= df[col].min(), pl.col(col) >= df[col].max()])
        counts = df.group_by(col, maintain_order=True).len()
        queries.extend(pl.col(col) == value
                       for value in counts.filter(pl.col("len") == 1).get_column(col).to_list())
    rng.shuffle(queries)
    unique = anonymeter.UniqueSinglingOutQueries(max_size=n_queries)
    unique.check_and_extend(queries, df)
    return unique.queries


def random_queries(df: pl.DataFrame, n_queries: int, n_cols: int, rng: np.random.Generator) -> list[pl.Expr]:
    """``anonymeter..._random_queries``: the baseline attack's queries, on values drawn at random."""
    values = {col: df[col].unique(maintain_order=True).to_list() for col in df.columns}
    types = {col: anonymeter._convert_polars_dtype(df[col].dtype) for col in df.columns}
    return [anonymeter._random_query(unique_values=values, column_types=types, rng=rng,
                                     cols=rng.choice(df.columns, size=n_cols, replace=False).tolist())
            for _ in range(n_queries)]


class SinglingOut(SinglingOutEvaluator):
    """``SinglingOutEvaluator`` in univariate mode, its ``evaluate`` with the queries above."""

    def evaluate(self, mode: str = "univariate") -> "SinglingOut":
        if mode != "univariate":
            raise ValueError(f"only the univariate attack is made here, not {mode!r}")
        successful = anonymeter._evaluate_queries_and_return_successful
        queries = univariate_queries(self._syn, self._n_attacks, self._rng)
        self._queries = successful(df=self._ori, queries=queries)
        self._n_success = len(self._queries)
        self._baseline_queries = successful(df=self._ori, queries=random_queries(self._syn, self._n_attacks, 1,
                                                                                 self._rng))
        self._n_baseline = len(self._baseline_queries)
        self._n_control = len(successful(df=self._control, queries=queries))
        if len(self._control) != len(self._ori):  # Anonymeter's correction for a control of another size
            fitted = anonymeter.fit_correction_term(df=self._control, queries=queries)
            self._n_control *= fitted(len(self._ori)) / fitted(len(self._control))
        self._evaluated = True
        return self
