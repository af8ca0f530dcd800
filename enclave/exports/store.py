"""Content-addressed store of file snapshots (SHA-256), on the hub side only.

A blob is written to a temporary file in the store, flushed to disk and renamed into place, so a
blob either exists whole under its hash or not at all. The store lives under
``$ENCLAVE_HOME/exports/store``, which is never mounted into a sandbox.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..files import atomic_write

_HEX = re.compile(r"^[0-9a-f]{64}$")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, digest: str) -> Path:
        if not _HEX.match(digest):
            raise ValueError(f"not a SHA-256 digest: {digest!r}")
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        digest = sha256(data)
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(exist_ok=True, mode=0o700)
        atomic_write(target, data)
        return digest

    def get(self, digest: str) -> bytes:
        data = self.path(digest).read_bytes()
        if sha256(data) != digest:
            raise IOError(f"blob {digest} in the export store is corrupt")
        return data

    def collect_garbage(self, keep: set[str]) -> int:
        """Remove temporary files left by an interrupted write and blobs no request refers to."""
        removed = 0
        for tmp in self.root.glob(".tmp-*"):
            tmp.unlink(missing_ok=True)
            removed += 1
        for blob in self.root.glob("??/*"):
            if blob.name not in keep:
                blob.unlink(missing_ok=True)
                removed += 1
        return removed
