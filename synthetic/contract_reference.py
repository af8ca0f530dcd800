"""``docs/contracts.md``, the contract reference, generated from the schema in ``contract.py``.

Every key's type, allowed values, default and meaning come from the pydantic models (their
``Field(description=...)``), the roles and treatments from ``TREATMENTS``; the sections on panel
data, missing values, band labels, uniqueness, pseudonym keys and analyses are written here.

    python -m synthetic.contract_reference          # rewrite docs/contracts.md
    python -m synthetic.contract_reference --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path
from typing import Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .contract import DEFAULT_TREATMENT, TREATMENT_TYPES, TREATMENTS, ColumnType, Contract, _inner

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "contracts.md"
COMMAND = "python -m synthetic.contract_reference"

# The placeholder written for a mapping's own names (a table's name, a column's name).
_NAMES = {"tables": "<table>", "columns": "<column>"}

_TREATMENT_MEANING = {
    "keep": "released as it is",
    "drop": "not released",
    "pseudonymise": "a keyed pseudonym (HMAC-SHA256, 20 hex characters)",
    "derive": "pseudonymised, plus birth-year band, sex and region fields derived from resident ID numbers",
    "bands": "the band holding the value, `[lo, hi)` (needs `bins`)",
    "truncate": "the leading characters only (needs `keep`)",
    "top_bottom": "values beyond `bottom`/`top` set to them",
    "year": "the year only",
    "shift": "moved by one offset per entity (`entity`, `max_days`)",
    "redact": "identifiers in the text replaced by `[kind]`",
}

_EXAMPLE = """\
name: wages
description: 工资面板：每人每年一行（生成）
generated: true
tables:
  wages:
    path: wages.csv
    primary_key: record_id
    entity_column: person_id          # several rows per person: privacy counts people
    sequence_index: year              # synthetic releases keep each person's years in order
    columns:
      record_id:  {role: direct_identifier, type: string, treatment: pseudonymise}
      person_id:  {role: direct_identifier, type: string, treatment: pseudonymise}
      year:       {role: quasi_identifier, type: integer}
      age:        {role: quasi_identifier, type: integer, treatment: bands, bins: [16, 30, 45, 60, .inf]}
      province:   {role: quasi_identifier, type: string, description: 省份}
      education:  {role: quasi_identifier, type: string}
      wage:       {role: sensitive, type: float, treatment: bands, bins: [0, 3000, 6000, 10000, .inf]}
      hours:      {role: measure, type: integer,
                   uniqueness_accepted: 周工时取值少，与年龄段、省份组合后不指向个人}
      hired_on:   {role: date, type: date, treatment: shift, max_days: 90}
      notes:      {role: free_text, type: string}
privacy: {k: 5, l: 2, max_suppressed: 0.10, missing_counts_towards_l: false, max_unique_share: 0.0}
synthesis: {model: gaussian_copula, seed: 7}
gates: {quality: 0.8, max_copy_excess: 0.01}
analyses:
  - name: wage-by-age
    table: wages
    regression: {formula: "wage ~ age + C(education)", min_ci_overlap: 0.5, same_sign: true}
  - name: mean-wage-by-province
    table: wages
    aggregate: {by: [province], measure: wage, statistic: mean, tolerance: 0.1}
"""

_INTRO = f"""\
# Data contracts

<!-- generated from synthetic/contract.py by `{COMMAND}`; do not edit by hand -->

A data contract is one YAML file per dataset, beside its data files. It says what each column is
(its **role** and **type**) and how it is released (its **treatment**), and what a release must
meet (`privacy`, `gates`, `analyses`). `enclave data release CONTRACT.yaml --method masked` (or
`--method synthetic`) reads it; how releases are made and reviewed is in
[releases.md](releases.md). This page is generated from the schema in `synthetic/contract.py`, so
it and the code say the same thing.

A contract is checked twice before anything runs: against the schema below, then against the
data (every column described and none missing, every value of its type, keys sound, no empty
table). Every problem is reported at once, each naming the table and the column, the value given
and what is allowed. Bad values are listed by where they are in the file, as an editor shows
them: **line** N of a CSV file (the header is line 1, so the first row is line 2; a quoted value
spanning lines counts them all), **row** N of a Parquet file (the first row is row 1). The first
five are listed, then how many more; a duplicate primary key names the lines holding each value.
Column names and values may be Chinese.

## An example

```yaml
{_EXAMPLE}```
"""

_SECTIONS = """\
## Panel data: `entity_column`

A table with several rows per person or firm (one row per person and year, one per visit) must
name the column identifying the entity behind each row, `entity_column`, a direct identifier.
Privacy then counts **entities, not rows**: k is the number of distinct entities sharing a
combination of quasi-identifier values; l, per class and sensitive column, is the smaller of the
number of distinct values and the number of distinct entities holding a value (rows with an empty
entity count as one entity, so k is never overstated); suppression counts an entity as suppressed
when it loses any row; the uniqueness share counts entities; and synthetic releases split
training and holdout by entity.
Without it, one person's five yearly rows would make a class of "five" and their five wages an
l of 5, and the pseudonym would then link their whole history.

Synthetic releases of a panel table keep each entity's rows together with a sequential model
(SDV's PARSynthesizer); `sequence_index` names the column ordering an entity's rows (a year or
a date). Columns constant within every entity (sex, birth-year band) are drawn once per entity. A
fit that cannot finish within `synthesis.time_budget_s` is refused with that reason. The entity
column must be released as a pseudonym (`pseudonymise`) for a synthetic release, and a synthetic
release of several tables with an `entity_column` is refused.

A date column treated with `shift` moves by one offset per entity: the column's own `entity`, or
the table's `entity_column` when it names none, so intervals within a person's rows survive.

Every release is shuffled (seeded from a secret on the holder's side), so the order of its rows
says nothing about the raw file's order, and pseudonyms carry no order.

## Missing values and l-diversity

An empty sensitive value does not count as one of the l distinct values of its class (the
default, `privacy.missing_counts_towards_l: false`): a class in which one person has a wage and
the others none holds one wage, so anyone who knows that a person with a wage is in the class
learns it; the class is suppressed when l is 2. With `missing_counts_towards_l: true`, "no value"
counts as one more value: for data in which whether a value is missing is itself what matters.

Empty cells are allowed in every column except a primary key. In a CSV file an empty cell is
missing; `NA` or `-` are text (and refused in a number column, with their line).

## Band labels

`bands` releases the band holding each value, written in one interval notation: left-closed
`[lo, hi)`, so `bins: [0, 30, 45, 60, .inf]` gives `[0, 30)`, `[30, 45)`, `[45, 60)` and, for an
open top band, `[60, inf)`; an open bottom band (`-.inf`) is `(-inf, 0)`. Negative edges read the
same way (`[-5, 5)`), and fractional edges
are written as they are (`[0.5, 1.5)`). Values below the first edge or at or above a finite last
edge are left empty, so choose edges covering the data (or use `-.inf`/`.inf`). Birth-year bands
derived from resident ID numbers use the same notation. Releases made before this notation wrote
`30-44` and `75+`; the holder's report reads both and plots bands in their order.

## Uniqueness of kept measures

A measure kept exact (an income to the yuan, hours to the minute) can make most entities unique
over the quasi-identifiers plus the measures, although k holds over the quasi-identifiers alone.
A masked release reports the share of entities unique over quasi-identifiers plus released
measures and is refused when it exceeds `privacy.max_unique_share` (default 0: none). For each
measure the holder then either coarsens it (`bands`, `top_bottom`), makes it a quasi-identifier
(so k and l cover it), or marks it `uniqueness_accepted` with a written reason (at least 10
characters): it is then left out of the count, and the manifest keeps the reason.

## Pseudonym keys

Pseudonyms (and date offsets) come from a secret key on the holder's side. By default
(`pseudonym_key` left out) every release has a key of its own: two releases of one source do not
join on their pseudonyms. A holder who wants releases to join names a key, `pseudonym_key:
households`; every release naming it shares pseudonyms, and the check of a new release against
the source's earlier releases then counts that join. The key file is
`$ENCLAVE_HOME/secrets/pseudonym-<name>.key` (mode 0600) and never leaves the holder's side.

## Analyses

`analyses` declares what a release must support. Each analysis runs on the real data and on the
release, on the holder's side, and gates the release; the report shows both results. An analysis
is exactly one of:

- `regression`: an ordinary least squares fit of `formula` (patsy's notation: `wage ~ age +
  C(education)`). Passes when the mean overlap of the coefficients' 95 % confidence intervals is
  at least `min_ci_overlap` and, with `same_sign`, no coefficient significant on the real data
  changes sign.
- `aggregate`: `statistic` (`mean`, `median`, `sum`, `count`) of `measure` by the `by` columns,
  within a relative `tolerance` group by group.
- `classifier`: a classifier predicting `target` from `features`, trained on the release and on
  real rows, scored on real rows (`accuracy` or `roc_auc`); the release's may be at most
  `tolerance` lower.
"""


def _is_model(tp: object) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _type(annotation: object) -> str:
    tp = _inner(annotation)
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(f"`{v}`" for v in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type(a) for a in get_args(tp) if a is not type(None))
    if origin is list:
        inner = get_args(tp)[0]
        if _is_model(inner):
            return "list of mappings (below)"
        if get_origin(inner) is Literal:
            return "list of any of " + ", ".join(f"`{v}`" for v in get_args(inner))
        return f"list of {_plural(_type(inner))}"
    if origin is dict:
        return "mapping of names to mappings (below)"
    if _is_model(tp):
        return "mapping (below)"
    return {str: "text", int: "integer", float: "number", bool: "`true` or `false`"}[tp]


def _plural(t: str) -> str:
    return {"text": "texts", "integer": "integers", "number": "numbers"}.get(t, t)


def _limits(field: FieldInfo) -> str:
    words = []
    for m in field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                words.append(f"{sign} {getattr(m, attr)}")
        if getattr(m, "min_length", None) is not None:
            words.append(f"at least {m.min_length} {'item' if 'list' in str(field.annotation) else 'character'}"
                         f"{'s' if m.min_length > 1 else ''}")
        if getattr(m, "pattern", None):
            words.append(f"matching `{m.pattern}`")
    return ", ".join(words)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    d = field.get_default(call_default_factory=True)
    if d is None:
        return "none"
    if isinstance(d, bool):
        return f"`{str(d).lower()}`"
    if isinstance(d, BaseModel):
        return "(below)"
    if isinstance(d, float) and math.isinf(d):
        return "`.inf`"
    if d == "":
        return '`""`'
    return f"`{d}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _sections(model: type[BaseModel], prefix: str) -> list[tuple[str, type[BaseModel]]]:
    """(key path, model) for ``model`` and every model under it, in the schema's order."""
    out = [(prefix, model)]
    for name, field in model.model_fields.items():
        tp = _inner(field.annotation)
        path = f"{prefix}.{name}" if prefix else name
        if get_origin(tp) is dict and _is_model(get_args(tp)[1]):
            out += _sections(get_args(tp)[1], f"{path}.{_NAMES.get(name, '<name>')}")
        elif get_origin(tp) is list and _is_model(get_args(tp)[0]):
            out += _sections(get_args(tp)[0], f"{path}[]")
        elif _is_model(tp):
            out += _sections(tp, path)
    return out


def _key_table(path: str, model: type[BaseModel]) -> list[str]:
    title = f"`{path}`" if path else "Top level"
    lines = [f"### {title}", ""]
    if model.__doc__ and path:
        lines += [" ".join(model.__doc__.split()).replace("``", "`"), ""]
    lines += ["| key | value | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        value = _type(field.annotation)
        limits = _limits(field)
        if limits:
            value += f", {limits}"
        lines.append(f"| `{name}` | {_cell(value)} | {_cell(_default(field))} | {_cell(field.description or '')} |")
    return lines + [""]


def _roles() -> list[str]:
    lines = [
        "## Roles and treatments",
        "",
        "Types: " + ", ".join(f"`{t}`" for t in get_args(ColumnType)) + ".",
        "",
        "| role | treatments allowed (default first) |",
        "|---|---|",
    ]
    for role, allowed in TREATMENTS.items():
        ordered = [DEFAULT_TREATMENT[role]] + [t for t in allowed if t != DEFAULT_TREATMENT[role]]
        lines.append(f"| `{role}` | {', '.join(f'`{t}`' for t in ordered)} |")
    lines += ["", "| treatment | releases | column types |", "|---|---|---|"]
    for t in _TREATMENT_MEANING:
        kinds = ", ".join(f"`{k}`" for k in TREATMENT_TYPES.get(t, ())) or "any"
        lines.append(f"| `{t}` | {_TREATMENT_MEANING[t]} | {kinds} |")
    lines += ["", "Key columns (primary and foreign keys) and `entity_column` are direct identifiers; keys "
              "are treated with `pseudonymise` or `derive`, so released tables still join.", ""]
    return lines


def render() -> str:
    """The whole page."""
    lines = [_INTRO, *_roles(), "## Every key", ""]
    for path, model in _sections(Contract, ""):
        lines += _key_table(path, model)
    return "\n".join(lines) + "\n" + _SECTIONS


def main(argv: list[str]) -> int:
    page = render()
    if argv == ["--check"]:
        current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
        if current != page:
            print(f"{DOC_PATH} is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1
        print(f"{DOC_PATH} is up to date")
        return 0
    if argv:
        print(f"usage: {COMMAND} [--check]", file=sys.stderr)
        return 2
    DOC_PATH.write_text(page, encoding="utf-8")
    print(f"wrote {DOC_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
