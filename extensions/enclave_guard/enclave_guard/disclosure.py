"""ACRO, set to the workspace's disclosure-control thresholds, for use in notebooks.

    from enclave_guard.disclosure import workspace_acro

    acro = workspace_acro()
    table = acro.crosstab(df.district, df.tenure)
    acro.finalise("outputs", "json")     # writes outputs/ with ACRO's results.json

When an operator requests the export of a file in ``outputs/``, the server attaches the
``results.json`` that describes it, and the review service's checks use ACRO's findings.

The thresholds are the ``acro`` object of the workspace's ``guard`` settings; the sandbox passes them
to the kernel as JSON in ``$ENCLAVE_ACRO_THRESHOLDS`` (absent: ACRO's defaults, which are also the
guard's defaults).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from .policy import AcroThresholds, GuardSettingsError, parse_acro

ENV = "ENCLAVE_ACRO_THRESHOLDS"


def workspace_thresholds() -> AcroThresholds:
    raw = os.environ.get(ENV, "")
    if not raw:
        return AcroThresholds()
    try:
        return parse_acro(json.loads(raw))
    except ValueError as exc:
        if isinstance(exc, GuardSettingsError):
            raise
        raise GuardSettingsError(f"${ENV} is not JSON: {exc}") from None


def workspace_acro(suppress: bool = False, **kwargs):
    """An ``acro.ACRO`` session using the workspace's thresholds."""
    from acro import ACRO

    session = ACRO(config="default", suppress=suppress, **kwargs)
    # ACRO's checks hold a reference to this dict (their "risk appetite"): update it in place.
    session.config.update(asdict(workspace_thresholds()))
    return session
