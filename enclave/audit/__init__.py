"""The audit log: one append-only, tamper-evident record of every operation and transfer.

Every hub-side component (the hub, the CLI, the review service, the per-sandbox receivers) hands
its records to one audit service (:mod:`.service`), the log's only writer, over a unix socket only
root can reach (:mod:`.client`). The writer stamps each record with a sequence number and its own
clock, chains it to the one before (SHA-256), adds it to an RFC 6962 Merkle tree (:mod:`.merkle`)
and, at intervals, signs the tree head as a checkpoint (:mod:`.checkpoints`), kept in the database
and in a second file. What may be recorded is data (:mod:`.actions`); how a record is checked and
encoded is :mod:`.records`. ``enclave audit verify|prove`` read the database directly
(:mod:`.reader`, :mod:`.verify`); ``enclave audit query|export`` ask the service on its root-only
query socket (:mod:`.query_socket`, :mod:`.query_client`). The design is described in ``docs/audit.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only the type: the sandbox supervisor imports this, and must start fast
    from ..settings import Settings


def socket_path(settings: Settings) -> Path:
    """Where the audit service takes appends: under ``$ENCLAVE_HOME/run/audit/`` (mode 0700, root)."""
    return settings.run_dir / "audit" / "audit.sock"


def checkpoint_copy_path(settings: Settings) -> Path:
    """The checkpoints' second copy, outside the database."""
    return settings.audit_dir / "checkpoints.jsonl"
