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

import hashlib
import math
import re
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import identifiers

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
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class ContractError(Exception):
    """The contract or the data it describes cannot be used; the message lists every problem."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Column(_Model):
    role: Role
    type: ColumnType
    treatment: Treatment | None = None
    description: str = ""
    # bands: bin edges (left-closed); the last may be .inf
    bins: list[float] | None = None
    # truncate: leading characters kept (e.g. 2 of a 6-digit region code = province)
    keep: int | None = Field(None, ge=1)
    # top_bottom: a value, or a quantile written "p1", "p99"
    bottom: float | str | None = None
    top: float | str | None = None
    # shift: the column (in the same table) whose entity gets one offset; +/- max_days
    entity: str | None = None
    max_days: int = Field(180, ge=1, le=3650)
    # derive (resident ID numbers only): which fields, band width, region prefix length
    derive: list[Derived] = []
    band_width: int = Field(10, ge=1, le=100)
    region_level: Literal[2, 4, 6] = 2

    @model_validator(mode="after")
    def _treatment_fits(self) -> "Column":
        if self.treatment is None:
            self.treatment = DEFAULT_TREATMENT[self.role]
        t = self.treatment
        if t not in TREATMENTS[self.role]:
            raise ValueError(
                f"treatment '{t}' is not allowed for role '{self.role}' "
                f"(allowed: {', '.join(TREATMENTS[self.role])})"
            )
        if t in TREATMENT_TYPES and self.type not in TREATMENT_TYPES[t]:
            raise ValueError(f"treatment '{t}' needs a column of type {' or '.join(TREATMENT_TYPES[t])}")
        if t == "bands" and (not self.bins or len(self.bins) < 2 or self.bins != sorted(set(self.bins))):
            raise ValueError("treatment 'bands' needs 'bins': at least two increasing edges")
        if t == "truncate" and self.keep is None:
            raise ValueError("treatment 'truncate' needs 'keep' (how many leading characters)")
        if t == "top_bottom":
            if self.bottom is None and self.top is None:
                raise ValueError("treatment 'top_bottom' needs 'bottom' and/or 'top'")
            for bound in (self.bottom, self.top):
                if isinstance(bound, str) and not _QUANTILE.match(bound):
                    raise ValueError(f"'{bound}' is neither a number nor a quantile like 'p99'")
        if t == "shift" and not self.entity:
            raise ValueError("treatment 'shift' needs 'entity' (the column whose entity shares one offset)")
        if t == "derive" and not self.derive:
            raise ValueError("treatment 'derive' needs 'derive': some of birth_year_band, sex, region")
        return self


class ForeignKey(_Model):
    column: str
    references: str  # "table.column"

    @field_validator("references")
    @classmethod
    def _dotted(cls, v: str) -> str:
        if v.count(".") != 1:
            raise ValueError(f"'{v}' must be written table.column")
        return v


class Table(_Model):
    path: str
    format: Literal["csv", "parquet"] | None = None
    primary_key: str | None = None
    foreign_keys: list[ForeignKey] = []
    columns: dict[str, Column]

    @field_validator("columns")
    @classmethod
    def _names(cls, v: dict[str, Column]) -> dict[str, Column]:
        if not v:
            raise ValueError("a table needs at least one column")
        bad = [c for c in v if not COLUMN_NAME.match(c)]
        if bad:
            raise ValueError(f"column names must be identifiers: {', '.join(map(repr, bad))}")
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


class Privacy(_Model):
    k: int = Field(5, ge=2)
    l: int = Field(2, ge=1)
    # Refuse a masked release that had to suppress more than this share of a table's rows.
    max_suppressed: float = Field(0.10, ge=0, le=1)


class Constraint(_Model):
    """An SDV constraint: ``inequality: [low, high]`` or ``fixed_combinations: [a, b, ...]``."""

    table: str
    inequality: list[str] | None = None
    fixed_combinations: list[str] | None = None

    @model_validator(mode="after")
    def _one(self) -> "Constraint":
        if (self.inequality is None) == (self.fixed_combinations is None):
            raise ValueError("a constraint is either 'inequality' or 'fixed_combinations'")
        if self.inequality is not None and len(self.inequality) != 2:
            raise ValueError("'inequality' takes [low_column, high_column]")
        if self.fixed_combinations is not None and len(self.fixed_combinations) < 2:
            raise ValueError("'fixed_combinations' takes at least two columns")
        return self

    @property
    def columns(self) -> list[str]:
        return list(self.inequality or self.fixed_combinations or [])


class Synthesis(_Model):
    model: Literal["gaussian_copula", "ctgan", "tvae"] = "gaussian_copula"
    # CTGAN/TVAE: training epochs, and a wall-clock budget after which the run is refused.
    epochs: int = Field(50, ge=1, le=5000)
    time_budget_s: float = Field(1800, gt=0)
    seed: int = 0
    constraints: list[Constraint] = []


class Gates(_Model):
    """Thresholds a release must meet; defaults follow the project's privacy rules."""

    diagnostic: float = Field(1.0, ge=0, le=1)
    quality: float = Field(0.8, ge=0, le=1)
    new_row_synthesis: float = Field(0.99, ge=0, le=1)
    dcr_overfitting_protection: float = Field(0.9, ge=0, le=1)
    # Anonymeter risks (singling out, linkability, inference) must stay at or below this.
    max_attack_risk: float = Field(0.1, ge=0, le=1)
    # Rows compared in distance-to-closest-record metrics and in attacks (large tables are sampled).
    subsample: int = Field(1000, ge=50)
    anonymeter_attacks: int = Field(300, ge=10)


class Contract(_Model):
    name: str
    description: str = ""
    # Say so when the data is generated; the label travels into every release made from it.
    generated: bool = False
    # Key file name under the data holder's secrets folder: the same key, the same pseudonyms.
    pseudonym_key: str = "default"
    tables: dict[str, Table]
    privacy: Privacy = Privacy()
    synthesis: Synthesis = Synthesis()
    gates: Gates = Gates()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v) or ".." in v:
            raise ValueError("must be lower-case letters, digits, '_', '.', '-' (it names the release)")
        return v

    @field_validator("pseudonym_key")
    @classmethod
    def _key(cls, v: str) -> str:
        if not re.match(r"^[a-z0-9][a-z0-9_-]{0,63}$", v):
            raise ValueError("must be lower-case letters, digits, '_' and '-'")
        return v

    @model_validator(mode="after")
    def _references(self) -> "Contract":
        problems = []
        if not self.tables:
            problems.append("the contract describes no table")
        for tname, t in self.tables.items():
            where = f"table '{tname}'"
            if t.primary_key and t.primary_key not in t.columns:
                problems.append(f"{where}: primary key '{t.primary_key}' is not one of its columns")
            keys = ([t.primary_key] if t.primary_key else []) + [fk.column for fk in t.foreign_keys]
            for key in keys:
                col = t.columns.get(key)
                if col is not None and (col.role != "direct_identifier" or col.treatment == "drop"):
                    problems.append(
                        f"{where}: key column '{key}' must be a direct_identifier treated with"
                        " 'pseudonymise' or 'derive' (keys are released as pseudonyms so tables still join)"
                    )
            for fk in t.foreign_keys:
                if fk.column not in t.columns:
                    problems.append(f"{where}: foreign key column '{fk.column}' is not one of its columns")
                rt, rc = fk.references.split(".")
                if rt not in self.tables:
                    problems.append(f"{where}: foreign key '{fk.column}' references unknown table '{rt}'")
                elif self.tables[rt].primary_key != rc:
                    problems.append(
                        f"{where}: foreign key '{fk.column}' must reference the primary key of '{rt}'"
                    )
            for cname, col in t.columns.items():
                if col.treatment == "shift":
                    ent = t.columns.get(col.entity or "")
                    if ent is None:
                        problems.append(f"{where}: column '{cname}' shifts by entity '{col.entity}', not a column")
                    elif ent.role != "direct_identifier":
                        problems.append(
                            f"{where}: column '{cname}' shifts by '{col.entity}', which is not a direct identifier"
                        )
            clash = set(t.derived_columns()) & set(t.columns)
            if clash:
                problems.append(f"{where}: derived column(s) {sorted(clash)} clash with existing columns")
        for c in self.synthesis.constraints:
            if c.table not in self.tables:
                problems.append(f"constraint on unknown table '{c.table}'")
            else:
                missing = [x for x in c.columns if x not in self.tables[c.table].columns]
                if missing:
                    problems.append(f"constraint on table '{c.table}' names unknown column(s) {missing}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def load_contract(path: Path) -> Contract:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractError(str(path), ["file not found"]) from None
    except yaml.YAMLError as exc:
        raise ContractError(str(path), [f"not valid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise ContractError(str(path), ["a contract is a YAML mapping with 'name' and 'tables'"])
    try:
        return Contract.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{loc}: {msg}" if loc else msg)
        raise ContractError(str(path), problems) from None


# -- reading the data, checked against the contract ---------------------------------------------


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_raw(path: Path, fmt: str, where: str) -> pd.DataFrame:
    if not path.is_file():
        raise ContractError(where, [f"data file {path} not found"])
    if fmt == "csv":
        try:
            # Everything as text first: types are then checked column by column against the contract.
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8")
        except pd.errors.EmptyDataError:
            raise ContractError(where, [f"{path.name} is empty (no header, no rows)"]) from None
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise ContractError(where, [f"{path.name} is not well-formed CSV: {exc}".strip()]) from None
    try:
        return pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ContractError(where, [f"{path.name} is not a readable Parquet file: {exc}"]) from None


def _first_bad(raw: pd.Series, ok: pd.Series) -> str:
    bad = raw[~ok]
    return f"{int((~ok).sum())} value(s), first at row {bad.index[0] + 1}: {str(bad.iloc[0])[:40]!r}"


def _convert(raw: pd.Series, ctype: str, from_text: bool) -> tuple[pd.Series, str | None]:
    """The column as ``ctype``, or an explanation of what does not fit."""
    present = raw.notna()
    if ctype == "string":
        if not from_text and not (raw.dtype == object or isinstance(raw.dtype, pd.StringDtype)):
            return raw, f"holds {raw.dtype} values"
        return raw.astype(object).where(present, None), None
    if ctype in ("integer", "float"):
        if not from_text and not pd.api.types.is_numeric_dtype(raw.dtype):
            return raw, f"holds {raw.dtype} values"
        num = pd.to_numeric(raw, errors="coerce")
        ok = num.notna() | ~present
        if not ok.all():
            return raw, _first_bad(raw, ok)
        if ctype == "integer":
            whole = (num.dropna() % 1 == 0).reindex(raw.index, fill_value=True)
            if not whole.all():
                return raw, _first_bad(raw, whole)
            return num.astype("Int64"), None
        return num.astype("float64"), None
    if ctype == "date":
        if not from_text and not pd.api.types.is_datetime64_any_dtype(raw.dtype) and raw.dtype != object:
            return raw, f"holds {raw.dtype} values"
        parsed = pd.to_datetime(raw, errors="coerce", format="ISO8601" if from_text else None)
        ok = parsed.notna() | ~present
        if not ok.all():
            return raw, _first_bad(raw, ok)
        if getattr(parsed.dt, "tz", None) is not None:
            parsed = parsed.dt.tz_convert(None)
        return parsed.astype("datetime64[ns]"), None
    # boolean
    if not from_text:
        if pd.api.types.is_bool_dtype(raw.dtype):
            return raw.astype("boolean"), None
        return raw, f"holds {raw.dtype} values"
    mapped = raw.str.lower().map({"true": True, "false": False, "1": True, "0": False})
    ok = mapped.notna() | ~present
    if not ok.all():
        return raw, _first_bad(raw, ok)
    return mapped.astype("boolean"), None


def load_tables(contract: Contract, base_dir: Path, source: str = "data") -> dict[str, pd.DataFrame]:
    """Read every table, typed as the contract says; raise ContractError listing every problem."""
    tables: dict[str, pd.DataFrame] = {}
    problems: list[str] = []
    for tname, t in contract.tables.items():
        where = f"table '{tname}'"
        path = (base_dir / t.path).resolve()
        try:
            raw = _read_raw(path, t.file_format, where)
        except ContractError as exc:
            problems.extend(f"{where}: {p}" for p in exc.problems)
            continue
        missing = [c for c in t.columns if c not in raw.columns]
        unknown = [c for c in raw.columns if c not in t.columns]
        if missing:
            problems.append(f"{where}: column(s) {', '.join(map(repr, missing))} named by the contract are missing from {path.name}")
        if unknown:
            problems.append(f"{where}: column(s) {', '.join(map(repr, map(str, unknown)))} in {path.name} are not described by the contract")
        if raw.empty:
            problems.append(f"{where}: {path.name} has no rows")
        if missing or unknown or raw.empty:
            continue
        df = pd.DataFrame(index=raw.index)
        for cname, col in t.columns.items():
            converted, err = _convert(raw[cname], col.type, from_text=t.file_format == "csv")
            if err:
                problems.append(f"{where}: column '{cname}' is declared {col.type} but {err}")
            elif col.treatment == "derive":
                vals = converted.dropna()
                ok = vals.map(identifiers.is_resident_id)
                if not ok.all():
                    problems.append(
                        f"{where}: column '{cname}' derives fields from resident IDs but "
                        + _first_bad(vals, ok).replace("value(s)", "value(s) are not valid resident IDs")
                    )
            df[cname] = converted
        tables[tname] = df
    for tname, t in contract.tables.items():
        df = tables.get(tname)
        if df is None:
            continue
        where = f"table '{tname}'"
        if t.primary_key:
            pk = df[t.primary_key]
            if pk.isna().any():
                problems.append(f"{where}: primary key '{t.primary_key}' has empty values")
            if pk.duplicated().any():
                problems.append(f"{where}: primary key '{t.primary_key}' has duplicate values, e.g. {pk[pk.duplicated()].iloc[0]!r}")
        for fk in t.foreign_keys:
            rt, rc = fk.references.split(".")
            if rt in tables:
                orphans = ~df[fk.column].isin(tables[rt][rc]) & df[fk.column].notna()
                if orphans.any():
                    problems.append(
                        f"{where}: {int(orphans.sum())} value(s) of foreign key '{fk.column}' have no row in '{rt}'"
                    )
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
