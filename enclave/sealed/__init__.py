"""Sealed runs (issue #18): an operator's notebook executed on data no person outside the data
holder sees, in a sandbox of its own; only reviewed results ever leave. :mod:`.runner` runs one."""

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
