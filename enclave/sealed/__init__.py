"""Sealed runs: an operator's notebook executed on data no person outside the data holder sees, in a
sandbox of its own; only reviewed results ever leave. :mod:`.runner` runs one; :mod:`.workflow` holds
a run's states and steps and what the operator is shown; :mod:`.service` (run by the export review
service) holds the data holder's policy, submission, approval, the queue and the results' export
requests. ``docs/sealed-runs.md`` is generated from them (:mod:`.docs`)."""

from .runner import (
    Outcome,
    Provenance,
    RunError,
    RunLimits,
    RunRequest,
    SealedRunRefusal,
    check_request,
    read_inputs,
    run,
    sealed_run_uid,
)

__all__ = ["Outcome", "Provenance", "RunError", "RunLimits", "RunRequest", "SealedRunRefusal", "check_request", "read_inputs",
           "run", "sealed_run_uid"]
