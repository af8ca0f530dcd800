"""Synthesis behind a small interface, so another generator can replace SDV.

SDV (BUSL-1.1: fine for a data holder's internal use, not for offering synthesis to third parties
as a service) is the implementation here: GaussianCopula by default, CTGAN/TVAE with an epoch cap
and a wall-clock budget, HMA for several tables (SDV's free edition refuses more than 5 tables or
depth over 2), and PAR for a panel table (one with an ``entity_column``: several rows per person
or firm), with the same epoch cap and budget.

The synthesiser learns from the *prepared* tables: masking treatments applied (generalised,
shifted, derived), direct identifiers other than keys and the entity column dropped, free text
dropped (a generator would only copy it). Keys and entities become SDV ids and are generated afresh.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import tempfile
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from .contract import Contract, Synthesis, Table


class SynthesisError(Exception):
    pass


class Synthesiser(Protocol):
    """What a release needs from a generator: learn from tables, then produce new ones."""

    name: str

    def fit(self, tables: dict[str, pd.DataFrame]) -> None: ...

    def sample(self, rows: dict[str, int]) -> dict[str, pd.DataFrame]: ...


def _is_key(t: Table, column: str) -> bool:
    return column == t.primary_key or column in {fk.column for fk in t.foreign_keys}


def _is_id(t: Table, column: str) -> bool:
    """Keys and the entity column: kept to structure the data, generated afresh by SDV."""
    return _is_key(t, column) or column == t.entity_column


def _panel_table(contract: Contract) -> str | None:
    """The table synthesised sequentially (PAR), if any; refuses what PAR cannot do."""
    panels = [tname for tname, t in contract.tables.items() if t.entity_column]
    if not panels:
        return None
    if len(contract.tables) > 1:
        raise SynthesisError(
            f"table(s) {panels} declare entity_column: sequential synthesis (PAR) keeps an entity's rows"
            f" together for a release of one table only, and this contract has {len(contract.tables)}"
            " tables; release the panel table on its own, or release the tables masked"
        )
    return panels[0]


def context_columns(df: pd.DataFrame, entity: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """Columns constant within every entity (sex, birth year band): PAR's context, drawn once per entity."""
    others = [c for c in df.columns if c != entity and c not in exclude]
    if df.empty or not others:
        return []
    distinct = df.groupby(entity, sort=False, dropna=False)[others].nunique(dropna=False)
    return [c for c in others if (distinct[c] <= 1).all()]


@dataclass
class Prepared:
    tables: dict[str, pd.DataFrame]
    dropped: dict[str, list[str]]


def prepare(contract: Contract, masked: dict[str, pd.DataFrame]) -> Prepared:
    """Masked (unsuppressed) tables reduced to what a generator may learn from."""
    tables, dropped = {}, {}
    for tname, t in contract.tables.items():
        df = masked[tname]
        if t.entity_column and t.entity_column not in df.columns:
            raise SynthesisError(
                f"table '{tname}': entity_column '{t.entity_column}' is dropped by its treatment, but"
                " synthesis groups each entity's rows by it: give it treatment 'pseudonymise'"
            )
        drop = [
            c
            for c, col in t.columns.items()
            if c in df.columns
            and not _is_id(t, c)
            and (col.role == "free_text" or (col.role == "direct_identifier"))
        ]
        dropped[tname] = drop
        df = df.drop(columns=drop)
        for c in df.columns:
            # SDV handles plain numpy dtypes best; nullable integers become floats only if needed.
            if isinstance(df[c].dtype, pd.Int64Dtype):
                df[c] = df[c].astype("float64") if df[c].isna().any() else df[c].astype("int64")
            elif isinstance(df[c].dtype, pd.BooleanDtype):
                df[c] = df[c].astype(object)
        tables[tname] = df
    return Prepared(tables, dropped)


def build_metadata(contract: Contract, tables: dict[str, pd.DataFrame]):
    from sdv.metadata import Metadata

    panel = _panel_table(contract)
    md = Metadata.detect_from_dataframes(data=tables)
    for tname, t in contract.tables.items():
        df = tables[tname]
        for c in df.columns:
            if _is_id(t, c):
                md.update_column(column_name=c, sdtype="id", table_name=tname)
            elif pd.api.types.is_datetime64_any_dtype(df[c].dtype):
                md.update_column(column_name=c, sdtype="datetime", table_name=tname)
            elif pd.api.types.is_numeric_dtype(df[c].dtype):
                md.update_column(column_name=c, sdtype="numerical", table_name=tname)
            else:
                md.update_column(column_name=c, sdtype="categorical", table_name=tname)
        if t.primary_key and md.tables[tname].primary_key != t.primary_key:
            md.set_primary_key(column_name=t.primary_key, table_name=tname)
        if tname == panel:
            if not t.primary_key and md.tables[tname].primary_key:
                md.remove_primary_key(table_name=tname)  # a guess from the data; the contract has none
            md.set_sequence_key(column_name=t.entity_column, table_name=tname)
            if t.sequence_index:
                md.set_sequence_index(column_name=t.sequence_index, table_name=tname)
    # detect_from_dataframes guesses relationships from names; the contract's are the real ones.
    for rel in list(md.relationships):
        md.remove_relationship(rel["parent_table_name"], rel["child_table_name"])
    for tname, t in contract.tables.items():
        for fk in t.foreign_keys:
            rt, rc = fk.references.split(".")
            md.add_relationship(
                parent_table_name=rt, child_table_name=tname, parent_primary_key=rc, child_foreign_key=fk.column
            )
    md.validate()
    return md


def _constraints(params: Synthesis, table: str) -> list:
    from sdv.cag import FixedCombinations, Inequality

    out = []
    for c in params.constraints:
        if c.table != table:
            continue
        if c.inequality:
            out.append(
                Inequality(low_column_name=c.inequality[0], high_column_name=c.inequality[1], table_name=table)
            )
        else:
            out.append(FixedCombinations(column_names=c.fixed_combinations, table_name=table))
    return out


class SDVSynthesiser:
    """SDV 2.0: one single-table model, HMA when the contract has several tables, PAR for a panel
    table (``entity_column``)."""

    def __init__(self, contract: Contract, metadata) -> None:
        self.contract = contract
        self.params = contract.synthesis
        self.metadata = metadata
        self.multi = len(contract.tables) > 1
        self.panel = _panel_table(contract)
        self.name = "par" if self.panel else "hma" if self.multi else self.params.model
        self._sampled: dict[str, pd.DataFrame] | None = None
        self._model = None
        self._context: list[str] = []

    def _new_model(self):
        if self.panel:
            from sdv.sequential import PARSynthesizer

            model = PARSynthesizer(self.metadata, context_columns=self._context, epochs=self.params.epochs,
                                   verbose=True, cuda=False)
        elif self.multi:
            from sdv.multi_table import HMASynthesizer

            model = HMASynthesizer(self.metadata, verbose=True)
            for table in self.contract.tables:
                model.set_table_parameters(table, {"default_distribution": "truncnorm"})
        else:
            from sdv.single_table import CTGANSynthesizer, GaussianCopulaSynthesizer, TVAESynthesizer

            if self.params.model == "gaussian_copula":
                model = GaussianCopulaSynthesizer(self.metadata, default_distribution="truncnorm")
            elif self.params.model == "ctgan":
                model = CTGANSynthesizer(self.metadata, epochs=self.params.epochs, verbose=True, enable_gpu=False)
            else:
                model = TVAESynthesizer(self.metadata, epochs=self.params.epochs, verbose=True, enable_gpu=False)
        constraints = [c for t in self.contract.tables for c in _constraints(self.params, t)]
        if constraints:
            model.add_constraints(constraints)
        return model

    def fit(self, tables: dict[str, pd.DataFrame]) -> None:
        self._train_rows = {t: len(df) for t, df in tables.items()}
        if self.panel:
            t = self.contract.tables[self.panel]
            # PAR orders entities by their ids, and pseudonyms change with every release's key:
            # number them in order of appearance instead, so the same data gives the same model.
            df = tables[self.panel].copy()
            codes, _ = pd.factorize(df[t.entity_column])
            df[t.entity_column] = [f"{code:020x}" for code in codes]
            tables = {**tables, self.panel: df}
            self._train_entities = int(codes.max(initial=-1)) + 1
            self._context = context_columns(df, t.entity_column,
                                            exclude=(t.sequence_index,) if t.sequence_index else ())
        if self.panel or (self.params.model in ("ctgan", "tvae") and not self.multi):
            # Neural models run in a worker process that is stopped when the budget runs out.
            self._pending = tables
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            # The metadata is rebuilt from the contract on every run; SDV's advice to save it is moot.
            warnings.filterwarnings("ignore", message="We strongly recommend saving the metadata")
            model = self._new_model()
            model.fit(tables)
        self._model = model

    def sample(self, rows: dict[str, int]) -> dict[str, pd.DataFrame]:
        if self._model is None:
            return _with_budget(self, self._pending, rows)
        return self._sample_fitted(rows)

    def _sample_fitted(self, rows: dict[str, int]) -> dict[str, pd.DataFrame]:
        np.random.seed(self.params.seed)
        if self.panel:
            # As many entities as the real table has, for its number of rows.
            entities = max(1, round(rows[self.panel] * self._train_entities / max(self._train_rows[self.panel], 1)))
            sampled = self._model.sample_sequences(num_sequences=entities)
            return {self.panel: sampled[self.panel] if isinstance(sampled, dict) else sampled}
        if self.multi:
            roots = [t for t, spec in self.contract.tables.items() if not spec.foreign_keys]
            scale = rows[roots[0]] / max(self._train_rows[roots[0]], 1)
            return self._model.sample_scale(scale=scale)
        (tname,) = self.contract.tables
        return self._model.sample(num_rows=rows[tname])


def _worker(synth: SDVSynthesiser, tables, rows, out: Path) -> None:
    try:
        import torch

        # The same contract and data give the same model: a refused run cannot be re-rolled by re-running.
        torch.manual_seed(synth.params.seed)
        np.random.seed(synth.params.seed)
        synth._model = synth._new_model()
        synth._model.fit(tables)
        result = synth._sample_fitted(rows)
        out.write_bytes(pickle.dumps(("ok", result)))
    except BaseException:
        out.write_bytes(pickle.dumps(("error", traceback.format_exc())))


def _with_budget(synth: SDVSynthesiser, tables, rows) -> dict[str, pd.DataFrame]:
    budget = synth.params.time_budget_s
    ctx = multiprocessing.get_context("spawn")  # no torch thread pools inherited across fork
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.pickle"
        proc = ctx.Process(target=_worker, args=(synth, tables, rows, out), daemon=True)
        # The worker hashes strings with a seed of its own unless told one, and PAR orders
        # categories by hash: fix it, so that the same seed gives the same release.
        previous = os.environ.get("PYTHONHASHSEED")
        os.environ["PYTHONHASHSEED"] = str(synth.params.seed % 2**32)
        try:
            proc.start()
        finally:
            if previous is None:
                del os.environ["PYTHONHASHSEED"]
            else:
                os.environ["PYTHONHASHSEED"] = previous
        proc.join(budget)
        if proc.is_alive():
            proc.terminate()
            proc.join()
            raise SynthesisError(
                f"{synth.name} did not finish within its time budget of {budget:g} s"
                f" ({synth.params.epochs} epochs): lower synthesis.epochs or raise synthesis.time_budget_s"
            )
        if not out.exists():
            raise SynthesisError(f"{synth.name} worker ended without a result (exit code {proc.exitcode})")
        status, payload = pickle.loads(out.read_bytes())
    if status != "ok":
        raise SynthesisError(f"{synth.name} failed:\n{payload}")
    return payload


def split_holdout(contract: Contract, tables: dict[str, pd.DataFrame], seed: int):
    """Training and holdout halves of equal size; child rows follow their parent row.

    A table with an ``entity_column`` is split by entity: half of the entities (with all their
    rows) train, the other half is held out, so no person is on both sides and the holdout stays
    what the generator never saw.
    """
    rng = np.random.default_rng(seed)
    train, holdout = {}, {}
    pending = dict(contract.tables)
    while pending:
        for tname, t in list(pending.items()):
            parents = [fk for fk in t.foreign_keys if fk.references.split(".")[0] != tname]
            if any(fk.references.split(".")[0] in pending for fk in parents):
                continue
            df = tables[tname]
            if not parents and t.entity_column:
                entities = pd.unique(df[t.entity_column])
                order = rng.permutation(len(entities))
                half = len(entities) // 2
                train[tname] = df[df[t.entity_column].isin(entities[order[:half]])]
                holdout[tname] = df[df[t.entity_column].isin(entities[order[half : 2 * half]])]
            elif not parents:
                order = rng.permutation(len(df))
                half = len(df) // 2
                train[tname] = df.iloc[order[:half]]
                holdout[tname] = df.iloc[order[half : 2 * half]]
            else:
                fk = parents[0]
                rt, rc = fk.references.split(".")
                in_train = df[fk.column].isin(train[rt][rc])
                in_hold = df[fk.column].isin(holdout[rt][rc])
                train[tname], holdout[tname] = df[in_train], df[in_hold]
            del pending[tname]
    return (
        {t: d.reset_index(drop=True) for t, d in train.items()},
        {t: d.reset_index(drop=True) for t, d in holdout.items()},
    )
