"""Data contracts: one YAML file per dataset saying what each column is and how it is treated.

A contract is checked twice before anything runs: against its own schema (roles, treatments and
their parameters), then against the data (every column described, none missing, types right,
keys sound, no empty table). Every problem found is reported, each naming table and column.

Example::

    name: residents
    description: Residents register (generated)
    tables:
      residents:
        path: residents.csv
        primary_key: resident_id
        columns:
          resident_id: {role: direct_identifier, type: string, treatment: derive,
                        derive: [birth_year_band, sex, region], region_level: 2}
          name:        {role: direct_identifier, type: string, treatment: drop}
          age:         {role: quasi_identifier, type: integer, treatment: bands,
                        bins: [0, 30, 45, 60, 75, .inf]}
          income:      {role: measure, type: float, treatment: top_bottom, bottom: p1, top: p99}
          diagnosis:   {role: sensitive, type: string}
          notes:       {role: free_text, type: string, treatment: redact}
    privacy: {k: 5, l: 2}
"""

from __future__ import annotations

import csv
import functools
import hashlib
import math
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union, get_args, get_origin

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from enclave.i18n import Message, N_

from . import identifiers
from .sources import NAME

Role = Literal["direct_identifier", "quasi_identifier", "sensitive", "free_text", "date", "measure"]
ColumnType = Literal["string", "integer", "float", "date", "boolean"]
Treatment = Literal[
    "keep", "drop", "pseudonymise", "derive", "bands", "truncate", "top_bottom", "year", "shift", "redact"
]
Derived = Literal["birth_year_band", "sex", "region"]

# Which treatments each role allows, and the default when the contract names none.
TREATMENTS: dict[str, tuple[str, ...]] = {
    "direct_identifier": ("drop", "pseudonymise", "derive"),
    "quasi_identifier": ("keep", "bands", "truncate", "top_bottom", "year"),
    "sensitive": ("keep", "bands", "top_bottom"),
    "free_text": ("redact", "drop"),
    "date": ("shift", "year", "drop"),
    "measure": ("keep", "bands", "top_bottom"),
}
DEFAULT_TREATMENT = {
    "direct_identifier": "drop",
    "quasi_identifier": "keep",
    "sensitive": "keep",
    "free_text": "redact",
    "date": "year",
    "measure": "keep",
}
# Which column types each treatment works on.
TREATMENT_TYPES: dict[str, tuple[str, ...]] = {
    "bands": ("integer", "float"),
    "top_bottom": ("integer", "float"),
    "truncate": ("string",),
    "year": ("date",),
    "shift": ("date",),
    "derive": ("string",),
    "redact": ("string",),
}
_QUANTILE = re.compile(r"^p(\d{1,2}(\.\d+)?)$")


def is_column_name(name: str) -> bool:
    """A column name is an identifier (Chinese ones too, such as 年龄 or 月收入_元), up to 63 characters."""
    return name.isidentifier() and len(name) <= 63


class Problem(Message):
    """One problem of a contract or its data, for the data holder: a stable ``code``
    (``contract.unknown_role``), an English ``text`` marked with ``N_`` and its ``params``, which may
    be messages themselves (a place in a file, "line 7"; a list of them), shown in the same locale."""

    def render(self, locale: str = "en") -> str:
        return Message(self.code, self.text, {k: _in(v, locale) for k, v in self.params.items()}).render(locale)


@dataclass(frozen=True)
class AsWritten:
    """A problem whose text is not translated (a library's own words, pydantic's or pandas'), under
    the ``code`` of its kind: shown as written in every locale."""

    code: str
    text: str

    def render(self, locale: str = "en") -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


def _in(value, locale: str):
    """A parameter of a :class:`Problem` as it is shown in ``locale``: a message rendered, a list's
    items joined ("lines 2, 9, 14", "第 2、9、14 行"), anything else as it is."""
    if hasattr(value, "render"):  # a message, or a refusal that renders itself (a gate failure)
        return value.render(locale)
    if isinstance(value, list | tuple):
        return (", " if locale == "en" else "、").join(str(_in(item, locale)) for item in value)
    return value


def _problem(code: str, text: str, **params) -> Problem:
    return Problem(code, text, params)


class ContractError(Exception):
    """The contract or the data it describes cannot be used: ``problems`` lists every problem (each
    a :class:`Problem` with its code, or :class:`AsWritten`); ``str()`` is them all in English, on
    one line; :meth:`render` shows them in a locale, one a line, each with its code."""

    code = "contract.invalid"

    def __init__(self, source: str, problems: list[Problem | AsWritten]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(map(str, problems)))

    @property
    def codes(self) -> list[str]:
        return [p.code for p in self.problems]

    def render(self, locale: str = "en") -> str:
        heading = Message(self.code, N_("%(source)s cannot be used:"), {"source": self.source}).render(locale)
        return heading + "".join(f"\n  {p.render(locale)} [{p.code}]" for p in self.problems)


class _Invalid(ValueError):
    """A validator's refusal: its problems, kept whole through pydantic (``str()``: in English)."""

    def __init__(self, *problems: Problem):
        self.problems = problems
        super().__init__("; ".join(map(str, problems)))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Column(_Model):
    """One column of a table: what it is (role, type) and how it is released (treatment)."""

    role: Role = Field(description="What the column says about the people or firms in it; it decides the "
                       "treatments allowed (see *Roles and treatments*).")
    type: ColumnType = Field(description="The type every value must have; bad values are reported with "
                             "their file line.")
    treatment: Treatment | None = Field(None, description="How the column is released; the role's default "
                                        "when left out (see *Roles and treatments*).")
    description: str = Field("", description="What the column holds, for the people reading the release.")
    bins: list[float] | None = Field(None, description="`bands`: increasing bin edges, each band left-closed "
                                     "`[lo, hi)`; the last edge may be `.inf` (an open top band `[lo, inf)`).")
    keep: int | None = Field(None, ge=1, description="`truncate`: how many leading characters stay (2 of a "
                             "6-digit region code keeps the province).")
    bottom: float | str | None = Field(None, description="`top_bottom`: values below are set to it; a number, "
                                       "or a quantile of the real values written `p1`.")
    top: float | str | None = Field(None, description="`top_bottom`: values above are set to it; a number, "
                                    "or a quantile written `p99`.")
    entity: str | None = Field(None, description="`shift`: the direct-identifier column (same table) whose "
                               "entity shares one date offset; the table's `entity_column` when left out.")
    max_days: int = Field(180, ge=1, le=3650, description="`shift`: the offset lies between -max_days and "
                          "+max_days (never 0).")
    derive: list[Derived] = Field([], description="`derive` (resident ID numbers): the fields released as "
                                  "`<column>_<field>`, quasi-identifiers.")
    band_width: int = Field(10, ge=1, le=100, description="`derive`: years per birth-year band.")
    region_level: Literal[2, 4, 6] = Field(2, description="`derive`: leading digits of the region code kept "
                                           "(2 province, 4 city, 6 county).")
    uniqueness_accepted: str | None = Field(None, min_length=10, description="Measures only: why the measure "
                                            "may stay exact although it makes entities unique (see "
                                            "*Uniqueness*); the manifest keeps the reason.")

    @model_validator(mode="after")
    def _treatment_fits(self) -> "Column":
        if self.treatment is None:
            self.treatment = DEFAULT_TREATMENT[self.role]
        t = self.treatment
        if t not in TREATMENTS[self.role]:
            raise _Invalid(_problem("contract.treatment_not_allowed",
                                    N_("treatment '%(treatment)s' is not allowed for role '%(role)s' (allowed:"
                                       " %(allowed)s)"), treatment=t, role=self.role,
                                    allowed=", ".join(TREATMENTS[self.role])))
        if t in TREATMENT_TYPES and self.type not in TREATMENT_TYPES[t]:
            raise _Invalid(_problem("contract.treatment_type", N_("treatment '%(treatment)s' needs a column of type"
                                                                  " %(types)s"),
                                    treatment=t, types=_either(TREATMENT_TYPES[t])))
        if t == "bands" and (not self.bins or len(self.bins) < 2 or self.bins != sorted(set(self.bins))):
            raise _Invalid(_problem("contract.bands_bins", N_("treatment 'bands' needs 'bins': at least two"
                                                              " increasing edges")))
        if t == "truncate" and self.keep is None:
            raise _Invalid(_problem("contract.truncate_keep", N_("treatment 'truncate' needs 'keep' (how many"
                                                                 " leading characters)")))
        if t == "top_bottom":
            if self.bottom is None and self.top is None:
                raise _Invalid(_problem("contract.top_bottom_bounds", N_("treatment 'top_bottom' needs 'bottom'"
                                                                         " and/or 'top'")))
            for bound in (self.bottom, self.top):
                if isinstance(bound, str) and not _QUANTILE.match(bound):
                    raise _Invalid(_problem("contract.bad_bound", N_("'%(bound)s' is neither a number nor a"
                                                                     " quantile like 'p99'"), bound=bound))
        if t == "derive" and not self.derive:
            raise _Invalid(_problem("contract.derive_fields", N_("treatment 'derive' needs 'derive': some of"
                                                                 " birth_year_band, sex, region")))
        if self.uniqueness_accepted is not None and self.role != "measure":
            raise _Invalid(_problem("contract.uniqueness_not_measure", N_("'uniqueness_accepted' is for measures"
                                                                          " only")))
        return self


class ForeignKey(_Model):
    """A column whose values are the primary key of another table."""

    column: str = Field(description="The column of this table.")
    references: str = Field(description="The other table's primary key, written `table.column`.")

    @field_validator("references")
    @classmethod
    def _dotted(cls, v: str) -> str:
        if v.count(".") != 1:
            raise _Invalid(_problem("contract.reference_form", N_("'%(reference)s' must be written table.column"),
                                    reference=v))
        return v


class Table(_Model):
    """One data file and its columns."""

    path: str = Field(description="The data file, relative to the contract's folder.")
    format: Literal["csv", "parquet"] | None = Field(None, description="The file's format; from its name "
                                                     "(`.parquet`, `.pq`: Parquet, else CSV) when left out. "
                                                     "CSV files are UTF-8 with a header line.")
    primary_key: str | None = Field(None, description="The column identifying each row: no empty value, no "
                                    "value twice; a direct identifier treated with `pseudonymise` or `derive`.")
    foreign_keys: list[ForeignKey] = Field([], description="Columns referencing another table's primary key; "
                                           "every value must have its row there.")
    entity_column: str | None = Field(None, description="The person (or firm) behind each row when the table "
                                      "holds several rows per entity (a panel: one row per person and year); "
                                      "a direct identifier. Privacy measures and gates then count entities, "
                                      "not rows (see *Panel data*).")
    sequence_index: str | None = Field(None, description="Panel tables released as synthetic data: the "
                                       "integer, float or date column ordering an entity's rows (a year, a "
                                       "date); needs `entity_column`.")
    columns: dict[str, Column] = Field(description="Every column of the file, by name (letters, Chinese "
                                       "characters included, digits and `_`); the file may have no other.")

    @field_validator("columns")
    @classmethod
    def _names(cls, v: dict[str, Column]) -> dict[str, Column]:
        if not v:
            raise _Invalid(_problem("contract.no_columns", N_("a table needs at least one column")))
        bad = [c for c in v if not is_column_name(c)]
        if bad:
            raise _Invalid(_problem(
                "contract.bad_column_name",
                N_("column names must be identifiers (letters, Chinese characters included, digits and '_', not"
                   " starting with a digit, at most 63 characters): %(names)s"), names=", ".join(map(repr, bad))))
        return v

    @property
    def file_format(self) -> str:
        if self.format:
            return self.format
        return "parquet" if self.path.lower().endswith((".parquet", ".pq")) else "csv"

    def derived_columns(self) -> dict[str, str]:
        """Columns the release gains from resident IDs: derived name -> source column."""
        out = {}
        for name, col in self.columns.items():
            if col.treatment == "derive":
                for d in col.derive:
                    out[f"{name}_{d}"] = name
        return out

    def quasi_identifiers(self) -> list[str]:
        """Released columns that are quasi-identifiers, derived resident-ID fields included."""
        qis = [c for c, col in self.columns.items() if col.role == "quasi_identifier"]
        return qis + list(self.derived_columns())

    def sensitive(self) -> list[str]:
        return [c for c, col in self.columns.items() if col.role == "sensitive"]

    def entity(self) -> str | None:
        """The column whose values are the entities rows belong to; None when each row is one."""
        return self.entity_column

    def shift_entity(self, column: str) -> str | None:
        """The column whose entity shares one date offset for ``column`` (treatment 'shift')."""
        return self.columns[column].entity or self.entity_column


class Privacy(_Model):
    """What a masked release must guarantee."""

    k: int = Field(5, ge=2, description="Every combination of quasi-identifier values is shared by at least "
                   "k entities (k-anonymity); smaller classes are suppressed.")
    l: int = Field(2, ge=1, description="Every such class holds at least l distinct values of each sensitive "
                   "column, counted over entities (l-diversity); other classes are suppressed.")
    max_suppressed: float = Field(0.10, ge=0, le=1, description="Refuse a masked release that had to suppress "
                                  "more than this share of a table's entities.")
    missing_counts_towards_l: bool = Field(False, description="Whether an empty sensitive value counts as one "
                                           "of the l distinct values of its class (see *Missing values*).")
    max_unique_share: float = Field(0.0, ge=0, le=1, description="Refuse a masked release in which more than "
                                    "this share of entities is unique over the quasi-identifiers plus the "
                                    "released measures, those marked `uniqueness_accepted` aside (see "
                                    "*Uniqueness*).")


class Constraint(_Model):
    """An SDV constraint: ``inequality: [low, high]`` or ``fixed_combinations: [a, b, ...]``."""

    table: str = Field(description="The table whose columns it constrains.")
    inequality: list[str] | None = Field(None, description="`[low, high]`: the first column is never above "
                                         "the second (admission before discharge).")
    fixed_combinations: list[str] | None = Field(None, description="Columns whose combinations of values "
                                                 "are only those in the real data (at least two).")

    @model_validator(mode="after")
    def _one(self) -> "Constraint":
        if (self.inequality is None) == (self.fixed_combinations is None):
            raise _Invalid(_problem("contract.constraint_kind", N_("a constraint is either 'inequality' or"
                                                                   " 'fixed_combinations'")))
        if self.inequality is not None and len(self.inequality) != 2:
            raise _Invalid(_problem("contract.inequality_columns", N_("'inequality' takes [low_column,"
                                                                      " high_column]")))
        if self.fixed_combinations is not None and len(self.fixed_combinations) < 2:
            raise _Invalid(_problem("contract.fixed_combinations_columns", N_("'fixed_combinations' takes at least"
                                                                              " two columns")))
        return self

    @property
    def columns(self) -> list[str]:
        return list(self.inequality or self.fixed_combinations or [])


class Synthesis(_Model):
    """How a synthetic release is generated (SDV)."""

    model: Literal["gaussian_copula", "ctgan", "tvae"] = Field("gaussian_copula", description="The generator "
                                                               "of a single table; several tables use HMA, "
                                                               "panel tables PAR.")
    epochs: int = Field(50, ge=1, le=5000, description="CTGAN, TVAE and PAR: training epochs.")
    time_budget_s: float = Field(1800, gt=0, description="Wall-clock seconds the fit may take; the run is "
                                 "stopped and refused, with the reason, when it takes longer.")
    seed: int = Field(0, description="Seeds the training/holdout split, the generator and the gates' samples: "
                      "the same contract, data and seed give the same release. Every attempt, refused or "
                      "published, is in the holder's release log with its seed.")
    constraints: list[Constraint] = Field([], description="Rules every synthetic row keeps.")


class Regression(_Model):
    """A linear regression the release must support: a formula such as ``wage ~ age + C(sex)``."""

    formula: str = Field(description="A formula in patsy's notation: `wage ~ age + C(sex)`; `C(x)` for a "
                         "category.")
    min_ci_overlap: float = Field(0.5, ge=0, le=1, description="The mean overlap of each coefficient's 95 % "
                                  "confidence intervals on the real data and on the release.")
    same_sign: bool = Field(True, description="Coefficients significant (5 %) on the real data keep their sign "
                            "on the release.")


class Aggregate(_Model):
    """A grouped aggregate the release must reproduce within a relative tolerance, group by group."""

    by: list[str] = Field(min_length=1, description="The columns grouped by.")
    measure: str | None = Field(None, description="The column aggregated (not needed for `count`).")
    statistic: Literal["mean", "median", "sum", "count"] = Field("mean", description="The statistic of each "
                                                                 "group.")
    tolerance: float = Field(0.1, gt=0, description="The largest relative difference allowed, group by group.")

    @model_validator(mode="after")
    def _measure(self) -> "Aggregate":
        if self.statistic != "count" and self.measure is None:
            raise _Invalid(_problem("contract.statistic_measure", N_("statistic '%(statistic)s' needs 'measure'"),
                                    statistic=self.statistic))
        return self


class Classifier(_Model):
    """A classifier trained on the release must score on real rows within ``tolerance`` of one
    trained on real rows."""

    target: str = Field(description="The column predicted.")
    features: list[str] = Field(min_length=1, description="The columns it predicts from.")
    metric: Literal["accuracy", "roc_auc"] = Field("accuracy", description="How the classifier is scored.")
    tolerance: float = Field(0.05, gt=0, le=1, description="How much lower than the real-trained classifier's "
                             "the score may be.")


class Analysis(_Model):
    """One analysis the release is for; it runs on the real rows and on the release and gates it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Names the analysis in gates and "
                      "reports (letters, digits, `_`, `.`, `-`); unique in the contract.")
    table: str = Field(description="The table it runs on.")
    regression: Regression | None = Field(None, description="A linear regression (see below).")
    aggregate: Aggregate | None = Field(None, description="A grouped aggregate (see below).")
    classifier: Classifier | None = Field(None, description="A classifier's score (see below).")

    @model_validator(mode="after")
    def _one(self) -> "Analysis":
        if sum(x is not None for x in (self.regression, self.aggregate, self.classifier)) != 1:
            raise _Invalid(_problem("contract.analysis_kind", N_("an analysis is exactly one of 'regression',"
                                                                 " 'aggregate' or 'classifier'")))
        return self

    @property
    def kind(self) -> str:
        return "regression" if self.regression else "aggregate" if self.aggregate else "classifier"


class Gates(_Model):
    """Thresholds a release must meet; defaults follow the project's privacy rules."""

    diagnostic: float = Field(1.0, ge=0, le=1, description="Synthetic: SDMetrics' diagnostic score (valid "
                              "values, ranges, keys) at least this.")
    quality: float = Field(0.8, ge=0, le=1, description="Synthetic: SDMetrics' quality score (column shapes "
                           "and pairs) at least this.")
    new_row_synthesis: float = Field(0.99, ge=0, le=1, description="Synthetic: at least this share of "
                                     "synthetic rows match no real row.")
    dcr_overfitting_protection: float = Field(0.9, ge=0, le=1, description="Synthetic: SDMetrics' distance to "
                                              "closest record score (synthetic rows no closer to the training "
                                              "half than to the holdout), on one scale fitted on both halves.")
    max_attack_risk: float = Field(0.1, ge=0, le=1, description="Synthetic: Anonymeter's risks (singling out, "
                                   "linkability, inference) at most this.")
    max_copy_excess: float = Field(0.01, ge=0, le=1, description="Synthetic: the share of synthetic rows "
                                   "copying a training row (on the values the generator learned from) may "
                                   "exceed the share copying a holdout row, which is chance, by at most this.")
    subsample: int = Field(1000, ge=50, description="Rows compared in distance metrics and attacks (larger "
                           "tables are sampled, seeded by `synthesis.seed`).")
    anonymeter_attacks: int = Field(1000, ge=10, description="Attacks Anonymeter makes for each risk, at most "
                                    "one per holdout row compared. A risk is a difference of two success "
                                    "rates, so fewer attacks make it noisy: with 300 on 2,000 rows an "
                                    "inference risk whose mean was 0.02 passed 0.1 for one seed in twelve.")


class Contract(_Model):
    """One dataset: its tables, how each column is released, and what a release must meet."""

    name: str = Field(description="Names the releases (`name@1`, `name@2`, …): lower-case letters, digits, "
                      "`_`, `.`, `-`.")
    description: str = Field("", description="What the dataset is, for the people reading its releases.")
    generated: bool = Field(False, description="Say so when the data is generated (no real persons); the "
                            "label travels into every release made from it.")
    pseudonym_key: str | None = Field(None, description="Left out: every release gets a pseudonym key of its "
                                      "own, so releases do not join. A name (lower-case letters, digits, `_`, "
                                      "`-`): the key file of that name in the holder's secrets folder, shared "
                                      "by every release naming it, whose pseudonyms and date offsets then "
                                      "join (see *Pseudonym keys*).")
    tables: dict[str, Table] = Field(description="The dataset's tables, by name.")
    privacy: Privacy = Field(Privacy(), description="What a masked release must guarantee.")
    synthesis: Synthesis = Field(Synthesis(), description="How a synthetic release is generated.")
    gates: Gates = Field(Gates(), description="Thresholds of the synthetic release's gates.")
    analyses: list[Analysis] = Field([], description="Analyses the release must support; each runs on the "
                                     "real data and on the release and gates it (see *Analyses*).")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v) or ".." in v:
            raise _Invalid(_problem("contract.bad_name", N_("must be lower-case letters, digits, '_', '.', '-' (it"
                                                            " names the release)")))
        return v

    @field_validator("pseudonym_key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[a-z0-9][a-z0-9_-]{0,63}$", v):
            raise _Invalid(_problem("contract.bad_key_name", N_("must be lower-case letters, digits, '_' and '-'")))
        return v

    @model_validator(mode="after")
    def _references(self) -> "Contract":
        problems = []
        if not self.tables:
            problems.append(_problem("contract.no_tables", N_("the contract describes no table")))
        for tname, t in self.tables.items():
            if t.primary_key and t.primary_key not in t.columns:
                problems.append(_problem("contract.unknown_primary_key", N_("table '%(table)s': primary key"
                                                                            " '%(column)s' is not one of its columns"),
                                         table=tname, column=t.primary_key))
            keys = ([t.primary_key] if t.primary_key else []) + [fk.column for fk in t.foreign_keys]
            for key in keys:
                col = t.columns.get(key)
                if col is not None and (col.role != "direct_identifier" or col.treatment == "drop"):
                    problems.append(_problem(
                        "contract.key_not_pseudonymised",
                        N_("table '%(table)s': key column '%(column)s' must be a direct_identifier treated with"
                           " 'pseudonymise' or 'derive' (keys are released as pseudonyms so tables still join)"),
                        table=tname, column=key))
            for fk in t.foreign_keys:
                if fk.column not in t.columns:
                    problems.append(_problem("contract.unknown_foreign_key", N_("table '%(table)s': foreign key column"
                                                                                " '%(column)s' is not one of its"
                                                                                " columns"),
                                             table=tname, column=fk.column))
                rt, rc = fk.references.split(".")
                if rt not in self.tables:
                    problems.append(_problem("contract.foreign_key_unknown_table",
                                             N_("table '%(table)s': foreign key '%(column)s' references unknown"
                                                " table '%(other)s'"), table=tname, column=fk.column, other=rt))
                elif self.tables[rt].primary_key != rc:
                    problems.append(_problem("contract.foreign_key_not_primary",
                                             N_("table '%(table)s': foreign key '%(column)s' must reference the"
                                                " primary key of '%(other)s'"), table=tname, column=fk.column,
                                             other=rt))
            if t.entity_column is not None:
                ent = t.columns.get(t.entity_column)
                if ent is None:
                    problems.append(_problem("contract.unknown_entity_column",
                                             N_("table '%(table)s': entity_column '%(column)s' is not one of its"
                                                " columns"), table=tname, column=t.entity_column))
                elif ent.role != "direct_identifier":
                    problems.append(_problem("contract.entity_not_identifier",
                                             N_("table '%(table)s': entity_column '%(column)s' must be a"
                                                " direct_identifier"), table=tname, column=t.entity_column))
            if t.sequence_index is not None:
                seq = t.columns.get(t.sequence_index)
                if t.entity_column is None:
                    problems.append(_problem("contract.sequence_needs_entity",
                                             N_("table '%(table)s': sequence_index needs entity_column (whose rows"
                                                " it orders)"), table=tname))
                if seq is None:
                    problems.append(_problem("contract.unknown_sequence_index",
                                             N_("table '%(table)s': sequence_index '%(column)s' is not one of its"
                                                " columns"), table=tname, column=t.sequence_index))
                elif seq.type not in ("integer", "float", "date"):
                    problems.append(_problem("contract.sequence_index_type",
                                             N_("table '%(table)s': sequence_index '%(column)s' must be an integer,"
                                                " float or date column"), table=tname, column=t.sequence_index))
            for cname, col in t.columns.items():
                if col.treatment == "shift":
                    entity = t.shift_entity(cname)
                    ent = t.columns.get(entity or "")
                    if entity is None:
                        problems.append(_problem("contract.shift_no_entity",
                                                 N_("table '%(table)s': column '%(column)s' is shifted but names no"
                                                    " 'entity' and the table has no entity_column"),
                                                 table=tname, column=cname))
                    elif ent is None:
                        problems.append(_problem("contract.shift_unknown_entity",
                                                 N_("table '%(table)s': column '%(column)s' shifts by entity"
                                                    " '%(entity)s', not a column"),
                                                 table=tname, column=cname, entity=entity))
                    elif ent.role != "direct_identifier":
                        problems.append(_problem("contract.shift_entity_not_identifier",
                                                 N_("table '%(table)s': column '%(column)s' shifts by '%(entity)s',"
                                                    " which is not a direct identifier"),
                                                 table=tname, column=cname, entity=entity))
            clash = set(t.derived_columns()) & set(t.columns)
            if clash:
                problems.append(_problem("contract.derived_clash", N_("table '%(table)s': derived column(s) %(columns)s"
                                                                      " clash with existing columns"),
                                         table=tname, columns=str(sorted(clash))))
        names = [a.name for a in self.analyses]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            problems.append(_problem("contract.duplicate_analysis", N_("analysis name '%(analysis)s' is used more than"
                                                                       " once"), analysis=dup))
        for a in self.analyses:
            if a.table not in self.tables:
                problems.append(_problem("contract.analysis_unknown_table", N_("analysis '%(analysis)s' is on unknown"
                                                                               " table '%(table)s'"),
                                         analysis=a.name, table=a.table))
        for c in self.synthesis.constraints:
            if c.table not in self.tables:
                problems.append(_problem("contract.constraint_unknown_table", N_("constraint on unknown table"
                                                                                 " '%(table)s'"), table=c.table))
            else:
                missing = [x for x in c.columns if x not in self.tables[c.table].columns]
                if missing:
                    problems.append(_problem("contract.constraint_unknown_columns",
                                             N_("constraint on table '%(table)s' names unknown column(s)"
                                                " %(columns)s"), table=c.table, columns=str(missing)))
        if problems:
            raise _Invalid(*problems)
        return self


def load_contract(path: Path) -> Contract:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractError(str(path), [_problem("contract.file_not_found", N_("file not found"))]) from None
    except UnicodeDecodeError as exc:
        raise ContractError(str(path), [_problem("contract.not_utf8", N_("not UTF-8 text (%(reason)s at byte"
                                                                         " %(byte)s)"),
                                                 reason=exc.reason, byte=exc.start)]) from None
    except yaml.YAMLError as exc:
        raise ContractError(str(path), [_problem("contract.not_yaml", N_("not valid YAML: %(problem)s"),
                                                 problem=str(exc))]) from None
    if not isinstance(raw, dict):
        raise ContractError(str(path), [_problem("contract.not_a_mapping", N_("a contract is a YAML mapping with"
                                                                              " 'name' and 'tables'"))])
    try:
        return Contract.model_validate(raw)
    except ValidationError as exc:
        raise ContractError(str(path), [p for err in exc.errors() for p in _schema_problems(err)]) from None


# pydantic's errors the holder reads in their language: its type, the code shown and pydantic's own
# English text, written with the error's context (``ge``...). pydantic's other errors are shown as it
# writes them (code ``contract.invalid_value``); so is one of these whose text pydantic changed.
_PYDANTIC = {
    "int_type": ("contract.not_an_integer", N_("Input should be a valid integer")),
    "int_parsing": ("contract.not_an_integer", N_("Input should be a valid integer, unable to parse string as an"
                                                  " integer")),
    "int_from_float": ("contract.not_an_integer", N_("Input should be a valid integer, got a number with a"
                                                     " fractional part")),
    "float_type": ("contract.not_a_number", N_("Input should be a valid number")),
    "float_parsing": ("contract.not_a_number", N_("Input should be a valid number, unable to parse string as a"
                                                  " number")),
    "bool_type": ("contract.not_a_boolean", N_("Input should be a valid boolean")),
    "bool_parsing": ("contract.not_a_boolean", N_("Input should be a valid boolean, unable to interpret input")),
    "string_type": ("contract.not_a_string", N_("Input should be a valid string")),
    "list_type": ("contract.not_a_list", N_("Input should be a valid list")),
    "dict_type": ("contract.not_a_mapping", N_("Input should be a valid dictionary")),
    "greater_than": ("contract.too_small", N_("Input should be greater than %(gt)s")),
    "greater_than_equal": ("contract.too_small", N_("Input should be greater than or equal to %(ge)s")),
    "less_than": ("contract.too_large", N_("Input should be less than %(lt)s")),
    "less_than_equal": ("contract.too_large", N_("Input should be less than or equal to %(le)s")),
    "string_pattern_mismatch": ("contract.pattern_mismatch", N_("String should match pattern '%(pattern)s'")),
}


def _schema_problems(err: dict) -> list[Problem]:
    """One schema error as the holder reads it: where (the path into the contract), what was
    given, what is allowed; a validator's refusal may be several problems."""
    loc = ".".join(str(p) for p in err["loc"])
    kind, given = err["type"], err.get("input")
    refused = (err.get("ctx") or {}).get("error")
    if isinstance(refused, _Invalid):
        found = list(refused.problems)
    elif kind == "literal_error":
        found = [_problem("contract.not_allowed", N_("%(given)s is not allowed (allowed: %(allowed)s)"),
                          given=_shown(given), allowed=_either_written(err["ctx"]["expected"]))]
    elif kind == "extra_forbidden":
        allowed = _keys_at(err["loc"][:-1])
        key = _shown(err["loc"][-1])
        found = [_problem("contract.unknown_key", N_("unknown key %(key)s (allowed: %(allowed)s)"), key=key,
                          allowed=", ".join(allowed)) if allowed else
                 _problem("contract.unknown_key", N_("unknown key %(key)s"), key=key)]
        loc = ".".join(str(p) for p in err["loc"][:-1]) or loc
    elif kind == "missing":
        found = [_problem("contract.missing_key", N_("missing (it is required)"))]
    else:
        found = [_pydantic_problem(err)]
        if given is not None and not isinstance(given, dict | list) and kind != "value_error":
            found = [_problem(found[0].code, N_("%(problem)s (given: %(given)s)"), problem=found[0],
                              given=_shown(given))]
    if not loc:
        return found
    return [_problem(p.code, N_("%(location)s: %(problem)s"), location=loc, problem=p) for p in found]


def _pydantic_problem(err: dict) -> Problem | AsWritten:
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] in _PYDANTIC:
        code, text = _PYDANTIC[err["type"]]
        problem = Problem(code, text, {k: v for k, v in (err.get("ctx") or {}).items() if f"%({k})s" in text})
        if str(problem) == msg:
            return problem
    return AsWritten("contract.invalid_value", msg)


def _either(items) -> Problem | str:
    """``a or b`` ("a, b or c"), in the holder's language."""
    items = list(items)
    if len(items) == 1:
        return items[0]
    return _problem("contract.either", N_("%(some)s or %(last)s"), some=", ".join(items[:-1]), last=items[-1])


def _either_written(expected: str) -> Problem | str:
    """pydantic's list of the values a literal allows (``'a', 'b' or 'c'``), in the holder's language."""
    some, sep, last = expected.rpartition(" or ")
    return _problem("contract.either", N_("%(some)s or %(last)s"), some=some, last=last) if sep else expected


def _keys_at(loc: tuple) -> list[str]:
    """The keys the schema allows at ``loc`` (a path into the contract), or [] if not a mapping."""
    node: object = Contract
    for part in loc:
        if isinstance(node, type) and issubclass(node, BaseModel):
            f = node.model_fields.get(str(part))
            if f is None:
                return []
            node = _inner(f.annotation)
        elif get_origin(node) in (dict, list):
            node = _inner(get_args(node)[-1])
        else:
            return []
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _inner(annotation: object) -> object:
    """``X`` for ``X | None``; the annotation itself otherwise."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


# -- reading the data, checked against the contract ---------------------------------------------


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_raw(path: Path, fmt: str, table: str) -> pd.DataFrame:
    if not path.is_file():
        raise ContractError(table, [_problem("contract.data_file_not_found", N_("table '%(table)s': data file"
                                                                                " %(path)s not found"),
                                             table=table, path=str(path))])
    if fmt == "csv":
        try:
            # Everything as text first: types are then checked column by column against the contract.
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8")
        except pd.errors.EmptyDataError:
            raise ContractError(table, [_problem("contract.data_file_empty", N_("table '%(table)s': %(file)s is"
                                                                                " empty (no header, no rows)"),
                                                 table=table, file=path.name)]) from None
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise ContractError(table, [_problem("contract.bad_csv", N_("table '%(table)s': %(file)s is not"
                                                                       " well-formed CSV: %(problem)s"),
                                                 table=table, file=path.name,
                                                 problem=str(exc).strip())]) from None
    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ContractError(table, [_problem("contract.bad_parquet", N_("table '%(table)s': %(file)s is not a"
                                                                        " readable Parquet file: %(problem)s"),
                                             table=table, file=path.name, problem=str(exc))]) from None


SHOWN = 5  # bad values (or duplicate keys) an error message lists before "and N more"


class Places:
    """Where a row of a table was in its file, as the holder finds it there: "line 7" of a CSV file
    (the header is line 1, quoted values may span lines), "row 7" of a Parquet file (1-based).

    The CSV file is only read again, to count its lines, when an error message needs them.
    """

    def __init__(self, path: Path, fmt: str):
        self.path, self.fmt = path, fmt
        self._lines: list[int] | None = None

    def __call__(self, position: int) -> Problem:
        if self.fmt != "csv":
            return _problem("contract.place", N_("row %(n)s"), n=position + 1)
        if self._lines is None:
            with open(self.path, encoding="utf-8", newline="") as f:
                reader = csv.reader(f)
                starts, line = [], 1
                for record in reader:
                    if record:  # pandas skips blank lines too
                        starts.append(line)
                    line = reader.line_num + 1
            self._lines = starts[1:]  # the header is not a row
        if position < len(self._lines):
            return _problem("contract.place", N_("line %(n)s"), n=self._lines[position])
        return _problem("contract.place", N_("row %(n)s"), n=position + 1)

    def many(self, positions: list[int]) -> Problem:
        """ "lines 2, 9, 14" (or "rows ...") for a few positions."""
        if len(positions) == 1:
            return self(positions[0])
        places = [self(p) for p in positions]
        numbers = [p.params["n"] for p in places]
        if places[0].text == "line %(n)s":
            return _problem("contract.place", N_("lines %(numbers)s"), numbers=numbers)
        return _problem("contract.place", N_("rows %(numbers)s"), numbers=numbers)


def _shown(value: object) -> str:
    """A value as an error message quotes it: text in quotes (cut at 40 characters), numbers bare."""
    if not isinstance(value, str):
        return str(value)
    return repr(value if len(value) <= 40 else value[:39] + "…")


def _bad_values(raw: pd.Series, ok: pd.Series, places: Places, what: Problem) -> Problem:
    """ "3 value(s) <what>: line 4 'abc', line 9 '十二', line 12 'n/a'" (the first few, with a count)."""
    bad = raw[~ok.to_numpy()]
    listed = [_problem("contract.value_at", N_("%(place)s %(value)s"), place=places(pos), value=_shown(v))
              for pos, v in zip(_positions(bad)[:SHOWN], bad.iloc[:SHOWN])]
    return _problem(what.code, N_("%(count)s value(s) %(what)s: %(listed)s%(more)s"), count=len(bad), what=what,
                    listed=listed, more=_more(len(bad) - SHOWN))


def _semicolon(first: Problem, then: Problem) -> Problem:
    """ "a; b": a listing of longer items."""
    return _problem("contract.listing", N_("%(first)s; %(then)s"), first=first, then=then)


def _more(hidden: int) -> Problem | str:
    """ ", and 2 more" after a listing that leaves ``hidden`` items out ("" for none)."""
    return _problem("contract.more", N_(", and %(n)s more"), n=hidden) if hidden > 0 else ""


def _positions(s: pd.Series) -> list[int]:
    # Tables are read with a fresh RangeIndex, so a row's label is its position in the file.
    return [int(i) for i in s.index]


def _holds(raw: pd.Series, places: Places) -> Problem:
    """What a typed (Parquet) column holds instead, with its first value."""
    text = raw.dtype == object or isinstance(raw.dtype, pd.StringDtype)
    kind = _problem("contract.text", N_("text")) if text else str(raw.dtype)
    present = raw.dropna()
    if present.empty:
        return _problem("contract.wrong_type", N_("holds %(kind)s values"), kind=kind)
    return _problem("contract.wrong_type", N_("holds %(kind)s values (first: %(place)s %(value)s)"), kind=kind,
                    place=places(_positions(present)[0]), value=_shown(present.iloc[0]))


def _convert(raw: pd.Series, ctype: str, from_text: bool, places: Places) -> tuple[pd.Series, Problem | None]:
    """The column as ``ctype``, or an explanation of what does not fit."""
    present = raw.notna()
    if ctype == "string":
        if not from_text and not (raw.dtype == object or isinstance(raw.dtype, pd.StringDtype)):
            return raw, _holds(raw, places)
        return raw.astype(object).where(present, None), None
    if ctype in ("integer", "float"):
        if not from_text and not pd.api.types.is_numeric_dtype(raw.dtype):
            return raw, _holds(raw, places)
        num = pd.to_numeric(raw, errors="coerce")
        ok = num.notna() | ~present
        if not ok.all():
            return raw, _bad_values(raw, ok, places, _problem("contract.not_numbers", N_("are not numbers")))
        if ctype == "integer":
            whole = (num.dropna() % 1 == 0).reindex(raw.index, fill_value=True)
            if not whole.all():
                return raw, _bad_values(raw, whole, places, _problem("contract.not_whole_numbers",
                                                                     N_("are not whole numbers")))
            return num.astype("Int64"), None
        return num.astype("float64"), None
    if ctype == "date":
        if not from_text and not pd.api.types.is_datetime64_any_dtype(raw.dtype) and raw.dtype != object:
            return raw, _holds(raw, places)
        parsed = pd.to_datetime(raw, errors="coerce", format="ISO8601" if from_text else None)
        ok = parsed.notna() | ~present
        if not ok.all():
            return raw, _bad_values(raw, ok, places, _problem("contract.not_dates",
                                                              N_("are not dates (write them YYYY-MM-DD)")))
        if getattr(parsed.dt, "tz", None) is not None:
            parsed = parsed.dt.tz_convert(None)
        return parsed.astype("datetime64[ns]"), None
    # boolean
    if not from_text:
        if pd.api.types.is_bool_dtype(raw.dtype):
            return raw.astype("boolean"), None
        return raw, _holds(raw, places)
    mapped = raw.str.lower().map({"true": True, "false": False, "1": True, "0": False})
    ok = mapped.notna() | ~present
    if not ok.all():
        return raw, _bad_values(raw, ok, places, _problem("contract.not_booleans", N_("are not true/false (or 1/0)")))
    return mapped.astype("boolean"), None


def load_tables(contract: Contract, base_dir: Path, source: str = "data") -> dict[str, pd.DataFrame]:
    """Read every table, typed as the contract says; raise ContractError listing every problem."""
    tables: dict[str, pd.DataFrame] = {}
    places: dict[str, Places] = {}
    problems: list[Problem] = []
    for tname, t in contract.tables.items():
        path = (base_dir / t.path).resolve()
        try:
            raw = _read_raw(path, t.file_format, tname)
        except ContractError as exc:
            problems.extend(exc.problems)
            continue
        missing = [c for c in t.columns if c not in raw.columns]
        unknown = [c for c in raw.columns if c not in t.columns]
        if missing:
            problems.append(_problem("contract.missing_columns", N_("table '%(table)s': column(s) %(columns)s named"
                                                                    " by the contract are missing from %(file)s"),
                                     table=tname, columns=", ".join(map(repr, missing)), file=path.name))
        if unknown:
            problems.append(_problem("contract.undescribed_columns", N_("table '%(table)s': column(s) %(columns)s"
                                                                        " in %(file)s are not described by the"
                                                                        " contract"),
                                     table=tname, columns=", ".join(map(repr, map(str, unknown))), file=path.name))
        if raw.empty:
            problems.append(_problem("contract.no_rows", N_("table '%(table)s': %(file)s has no rows"), table=tname,
                                     file=path.name))
        if missing or unknown or raw.empty:
            continue
        raw = raw.reset_index(drop=True)
        places[tname] = Places(path, t.file_format)
        df = pd.DataFrame(index=raw.index)
        for cname, col in t.columns.items():
            converted, err = _convert(raw[cname], col.type, t.file_format == "csv", places[tname])
            if err:
                problems.append(_problem(err.code, N_("table '%(table)s': column '%(column)s' is declared %(type)s"
                                                      " but %(problem)s"),
                                         table=tname, column=cname, type=col.type, problem=err))
            elif col.treatment == "derive":
                vals = converted.dropna()
                ok = vals.map(identifiers.is_resident_id)
                if not ok.all():
                    bad = _bad_values(vals, ok, places[tname], _problem("contract.not_resident_ids",
                                                                        N_("are not valid resident IDs")))
                    problems.append(_problem(bad.code, N_("table '%(table)s': column '%(column)s' derives fields"
                                                          " from resident IDs but %(problem)s"),
                                             table=tname, column=cname, problem=bad))
            df[cname] = converted
        tables[tname] = df
    for tname, t in contract.tables.items():
        df = tables.get(tname)
        if df is None:
            continue
        at = places[tname]
        if t.primary_key:
            pk = df[t.primary_key]
            if pk.isna().any():
                empty = _positions(pk[pk.isna()])
                problems.append(_problem("contract.empty_primary_key",
                                         N_("table '%(table)s': primary key '%(column)s' is empty on %(count)s"
                                            " row(s): %(places)s%(more)s"), table=tname, column=t.primary_key,
                                         count=len(empty), places=at.many(empty[:SHOWN]),
                                         more=_more(len(empty) - SHOWN)))
            dup = pk[pk.duplicated(keep=False) & pk.notna()]
            if not dup.empty:
                groups = list(dup.groupby(dup, sort=False).groups.items())
                listed = [
                    _problem("contract.duplicate_at", N_("%(value)s on %(places)s"), value=_shown(value),
                             places=at.many(sorted(int(i) for i in idx)[:SHOWN])) if len(idx) <= SHOWN else
                    _problem("contract.duplicate_at", N_("%(value)s on %(places)s (and %(n)s more)"),
                             value=_shown(value), places=at.many(sorted(int(i) for i in idx)[:SHOWN]),
                             n=len(idx) - SHOWN)
                    for value, idx in groups[:SHOWN]
                ]
                more = (_problem("contract.more", N_("; and %(n)s more value(s)"), n=len(groups) - SHOWN)
                        if len(groups) > SHOWN else "")
                problems.append(_problem("contract.duplicate_primary_key",
                                         N_("table '%(table)s': primary key '%(column)s' has %(count)s value(s) on"
                                            " more than one row: %(listed)s%(more)s"),
                                         table=tname, column=t.primary_key, count=len(groups),
                                         listed=functools.reduce(_semicolon, listed), more=more))
        for fk in t.foreign_keys:
            rt, rc = fk.references.split(".")
            if rt in tables:
                known = df[fk.column].isin(tables[rt][rc]) | df[fk.column].isna()
                if not known.all():
                    bad = _bad_values(df[fk.column], known, at, _problem("contract.dangling_foreign_key",
                                                                         N_("with no row in '%(table)s'"), table=rt))
                    problems.append(_problem(bad.code, N_("table '%(table)s': foreign key '%(column)s' has"
                                                          " %(problem)s"), table=tname, column=fk.column,
                                             problem=bad))
    if problems:
        raise ContractError(source, problems)
    return tables


def source_hashes(contract: Contract, base_dir: Path) -> dict[str, str]:
    return {t: file_sha256((base_dir / spec.path).resolve()) for t, spec in contract.tables.items()}


def quantile_bound(bound: float | str | None, values: pd.Series) -> float | None:
    """A top/bottom coding bound: the number itself, or the named quantile of ``values``."""
    if bound is None:
        return None
    if isinstance(bound, str):
        q = float(_QUANTILE.match(bound).group(1)) / 100
        return float(values.quantile(q))
    return None if math.isinf(bound) else float(bound)
