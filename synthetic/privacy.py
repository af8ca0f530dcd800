"""k-anonymity, l-diversity and uniqueness counted over entities, and suppression until k and l hold.

Equivalence classes are found by factorising each quasi-identifier to integer codes and folding
them into one code per row, so counting is ``numpy.unique``/``numpy.bincount`` rather than a Python
loop over groups. Empty quasi-identifier values are a value of their own (as in pycanon on complete
data, they are simply another class). ``tests/synthetic`` checks agreement with pycanon on the same
data and with brute-force ``groupby`` counts.

**Entities.** A table may hold several rows per person or firm (a panel: one row per person and
year). Every measure here then counts *entities*, not rows; ``entities`` is the row-aligned series
saying whose row each is (the raw values of the table's ``entity_column``). Without it every row is
its own entity, which is the classic row-level definition. Rows whose entity is empty are taken to
be one and the same entity: not knowing whose rows they are, we do not count them as different
people (that would overstate k).

* k (:func:`k_anonymity`): the fewest distinct entities in any class.
* l (:func:`l_diversity`, distinct l-diversity): for each class and sensitive column,
  ``min(distinct values, distinct entities holding a value)``; l is the smallest over classes and
  columns. One person's wages in five years are five values but one entity: l = 1, because an
  attacker who knows the person is in the class learns that all its wages are that person's.
  With one row per entity this is just the number of distinct values.
* Missing sensitive values do not count: a class whose only known wage belongs to one person has
  l = 1 (whoever has a wage there has *that* wage), and a class with no known value has l = 0.
  ``missing_counts=True`` (the contract's ``privacy.missing_counts_towards_l``) makes an empty value
  one more value, the classic definition.
* Uniqueness (:func:`unique_entities`): an entity is unique on some columns when at least one of its
  rows has a combination of those values that no other entity has.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def class_codes(df: pd.DataFrame, qis: list[str]) -> np.ndarray:
    """One integer per row, equal for rows in the same equivalence class over ``qis`` (0..classes-1)."""
    codes = np.zeros(len(df), dtype=np.int64)
    for col in qis:
        codes = refine(codes, df[col])
    return codes


def refine(codes: np.ndarray, values: pd.Series) -> np.ndarray:
    """Class codes splitting each class of ``codes`` further by ``values`` (empty is a value)."""
    col_codes, uniques = pd.factorize(values, use_na_sentinel=False)
    # Re-factorise after each fold so the combined codes never overflow.
    folded, _ = pd.factorize(codes * (len(uniques) + 1) + col_codes)
    return folded.astype(np.int64)


def entity_codes(entities: pd.Series | None, rows: int) -> np.ndarray | None:
    """One integer per row naming its entity; None (each row its own entity) without ``entities``.

    Empty entity values are one entity.
    """
    if entities is None:
        return None
    if len(entities) != rows:
        raise ValueError(f"entities has {len(entities)} values for {rows} rows")
    codes, _ = pd.factorize(entities, use_na_sentinel=False)
    return codes.astype(np.int64)


def _distinct_per_class(codes: np.ndarray, other: np.ndarray, classes: int) -> np.ndarray:
    """How many distinct ``other`` codes (>= 0) appear in each class (indexed by class code)."""
    if len(codes) == 0:
        return np.zeros(classes, dtype=np.int64)
    width = int(other.max()) + 1
    pairs = np.unique(codes * width + other)
    return np.bincount(pairs // width, minlength=classes)


def entities_per_class(codes: np.ndarray, ents: np.ndarray | None) -> np.ndarray:
    """Distinct entities in each class (indexed by class code); ``ents`` from :func:`entity_codes`."""
    if ents is None:
        return np.bincount(codes)
    classes = int(codes.max()) + 1 if len(codes) else 0
    return _distinct_per_class(codes, ents, classes)


def count_entities(ents: np.ndarray | None, rows: np.ndarray) -> int:
    """How many distinct entities the rows selected by the boolean ``rows`` belong to."""
    if ents is None:
        return int(rows.sum())
    return int(len(np.unique(ents[rows])))


def l_per_class(codes: np.ndarray, values: pd.Series, ents: np.ndarray | None, missing_counts: bool) -> np.ndarray:
    """Each class's l for one sensitive column: min(distinct values, distinct entities holding one).

    ``ents`` None: one row per entity (the entity count can then never be the smaller one).
    Missing values are left out unless ``missing_counts``.
    """
    classes = int(codes.max()) + 1 if len(codes) else 0
    vcodes, _ = pd.factorize(values, use_na_sentinel=not missing_counts)
    known = vcodes >= 0
    c = codes[known]
    distinct = _distinct_per_class(c, vcodes[known], classes)
    if ents is None:
        return distinct
    return np.minimum(distinct, _distinct_per_class(c, ents[known], classes))


def _all(df: pd.DataFrame) -> np.ndarray:
    return np.ones(len(df), dtype=bool)


def class_sizes(df: pd.DataFrame, qis: list[str], entities: pd.Series | None = None) -> np.ndarray:
    """The number of entities in each row's equivalence class."""
    if df.empty:
        return np.zeros(0, dtype=np.int64)
    codes = class_codes(df, qis)
    return entities_per_class(codes, entity_codes(entities, len(df)))[codes]


def k_anonymity(df: pd.DataFrame, qis: list[str], entities: pd.Series | None = None) -> int:
    """The fewest distinct entities in any equivalence class over ``qis`` (0 for an empty table)."""
    if df.empty:
        return 0
    return int(entities_per_class(class_codes(df, qis), entity_codes(entities, len(df))).min())


def l_diversity(
    df: pd.DataFrame, qis: list[str], sensitive: list[str], entities: pd.Series | None = None,
    missing_counts: bool = False,
) -> int:
    """Distinct l-diversity over entities (see the module's docstring); 0 for an empty table.

    Without sensitive columns nothing can be learnt: l is then the number of entities.
    """
    if df.empty:
        return 0
    ents = entity_codes(entities, len(df))
    if not sensitive:
        return count_entities(ents, _all(df))
    codes = class_codes(df, qis)
    return int(min(l_per_class(codes, df[s], ents, missing_counts).min() for s in sensitive))


@dataclass(frozen=True)
class Breaches:
    """Rows of classes breaking k or l, and how many entities each cause reaches."""

    bad_rows: np.ndarray  # one bool per row
    bad_entities: int  # entities with at least one bad row
    by_k: int  # entities with a row in a class of fewer than k entities
    by_l: dict[str, int]  # per sensitive column: entities with a row in a class whose l is too low
    entities: int  # all entities of the table


def breaches(
    df: pd.DataFrame, qis: list[str], sensitive: list[str], k: int, l: int,
    entities: pd.Series | None = None, missing_counts: bool = False,
) -> Breaches:
    """Which rows sit in classes with fewer than k entities or with an l below ``l``."""
    ents = entity_codes(entities, len(df))
    codes = class_codes(df, qis)
    if df.empty:
        none = np.zeros(0, dtype=bool)
        return Breaches(none, 0, 0, {s: 0 for s in sensitive}, 0)
    small = (entities_per_class(codes, ents) < k)[codes]
    bad = small.copy()
    by_l = {}
    for s in sensitive:
        low = (l_per_class(codes, df[s], ents, missing_counts) < l)[codes]
        by_l[s] = count_entities(ents, low)
        bad |= low
    return Breaches(bad, count_entities(ents, bad), count_entities(ents, small), by_l, count_entities(ents, _all(df)))


@dataclass(frozen=True)
class Suppression:
    kept: pd.DataFrame
    suppressed_rows: int
    suppressed_entities: int  # entities that lost at least one row
    entities: int  # entities before suppression
    k: int
    l: int


def suppress(
    df: pd.DataFrame, qis: list[str], sensitive: list[str], k: int, l: int,
    entities: pd.Series | None = None, missing_counts: bool = False,
) -> Suppression:
    """Drop whole equivalence classes with fewer than k entities or an l below ``l``.

    Removing a whole class never changes another class, so one pass reaches both targets. An
    entity counts as suppressed when it loses any row (its history in the release is then
    incomplete). Without quasi-identifiers there are no classes to drop: the table is returned
    whole, with its measured k and l, for the gates to judge.
    """
    if not qis or df.empty:
        return Suppression(df, 0, 0, count_entities(entity_codes(entities, len(df)), _all(df)),
                           k_anonymity(df, qis, entities), l_diversity(df, qis, sensitive, entities, missing_counts))
    found = breaches(df, qis, sensitive, k, l, entities, missing_counts)
    keep = ~found.bad_rows
    kept = df[keep]
    kept_entities = None if entities is None else entities[keep]
    return Suppression(
        kept, int(found.bad_rows.sum()), found.bad_entities, found.entities,
        k_anonymity(kept, qis, kept_entities), l_diversity(kept, qis, sensitive, kept_entities, missing_counts),
    )


@dataclass(frozen=True)
class Uniqueness:
    share: float  # of entities unique over the columns
    unique: int
    entities: int


def unique_entities(df: pd.DataFrame, columns: list[str], entities: pd.Series | None = None) -> Uniqueness:
    """Entities with at least one row whose values over ``columns`` no other entity shares.

    Empty values are a value of their own. An empty table has no unique entity.
    """
    return uniqueness_of(class_codes(df, columns), entity_codes(entities, len(df)))


def uniqueness_of(codes: np.ndarray, ents: np.ndarray | None) -> Uniqueness:
    """:func:`unique_entities` from class codes already computed (see :func:`refine`)."""
    if len(codes) == 0:
        return Uniqueness(0.0, 0, 0)
    alone = (entities_per_class(codes, ents) == 1)[codes]
    every = np.ones(len(codes), dtype=bool)
    unique, total = count_entities(ents, alone), count_entities(ents, every)
    return Uniqueness(unique / total, unique, total)
