"""Utility gates: each analysis the contract declares, on the real rows and on the release."""

from __future__ import annotations

from enclave.i18n import N_

from .. import analyses as declared
from ..contract import Contract
from .base import GateResult, because, says


def analyses(released, contract: Contract, real: dict | None = None, synth_ctx: dict | None = None,
             **_) -> list[GateResult]:
    """One result per declared analysis (``analysis:<name>``); one that cannot run fails with why.

    ``real`` holds the real rows at the release's granularity (needed only when the contract
    declares analyses). A synthetic release's classifiers are scored on its holdout, which the
    generator never saw.
    """
    out = []
    for a in contract.analyses:
        split = None
        if a.classifier and synth_ctx is not None:
            split = (synth_ctx["train"][a.table], synth_ctx["holdout"][a.table])
        try:
            o = declared.compare(a, contract, real[a.table], released[a.table], test_split=split)
        except declared.AnalysisError as exc:
            out.append(because(f"analysis:{a.name}", a.table, None, f"a {a.kind} that runs", False,
                               says(N_("cannot run: %(problem)s"), problem=str(exc))))
            continue
        out.append(GateResult(f"analysis:{a.name}", a.table, o.value, o.threshold, o.passed, o.detail))
    return out
