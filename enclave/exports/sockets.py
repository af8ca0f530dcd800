"""Where the review service listens for sandboxes, without importing the service (``enclave doctor``
checks the socket, and must answer fast)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only the type: importing the settings is for those who use them
    from ..settings import Settings


def intake_socket(settings: Settings) -> Path:
    """The intake socket, ``$ENCLAVE_HOME/run/exports/intake.sock``: mounted into each sandbox's
    server, which submits export requests through it."""
    return settings.run_dir / "exports" / "intake.sock"
