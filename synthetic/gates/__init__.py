"""Privacy and utility gates: a release is published only when every gate passes.

``MASKED_GATES`` and ``SYNTHETIC_GATES`` list the gates, in the order they run, with the contract
setting each threshold comes from. Each gate is a small function returning one result per table
(or one for the release); nothing here decides anything else.
"""

from __future__ import annotations

from typing import Callable

from .base import GateFailure, GateResult, ReleasedText
from .disclosure import no_direct_identifiers, no_identifier_patterns, no_key_material, key_forms
from .composition import composition
from .masked import k_anonymity, l_diversity, suppression, unique_entities
from .synthetic import (
    attack_risks, closest_record_distances, dcr_overfitting, dcr_overfitting_protection, diagnostic,
    exact_copies, new_row_share, new_row_synthesis, quality,
)
from .utility import analyses

__all__ = [
    "GateFailure", "GateResult", "ReleasedText", "MASKED_GATES", "SYNTHETIC_GATES", "run", "enforce",
    "closest_record_distances", "dcr_overfitting_protection", "new_row_share", "key_forms",
]

Gate = Callable[..., list[GateResult]]

MASKED_GATES: list[Gate] = [
    k_anonymity,  # privacy.k
    l_diversity,  # privacy.l
    suppression,  # privacy.max_suppressed
    composition,  # privacy.k, with every earlier published masked release of the source
    unique_entities,  # privacy.max_unique_share, measures marked uniqueness_accepted aside
    analyses,  # contract.analyses: each declared analysis on real rows and release
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
    analyses,  # contract.analyses: each declared analysis on real rows and release
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
