"""The data holder's release log: every attempt at a release, published, refused or failed.

One JSON object per line in ``holder_dir/release-log.jsonl``: when, who, the release tried, the
method, the contract and source files' hashes, the synthesis seed and model, every gate's value and
verdict, the outcome and, for a refusal, where its report is. A holder who re-rolls the seed until
the gates pass leaves one line per roll, so a reviewer of the holder's process sees how many
attempts a release took. The audit log receives the same outcome without any data
(``enclave data release`` records it).

Lines are appended with one ``write`` on a file opened ``O_APPEND`` and synced, so concurrent
releases never interleave within a line and a crash loses at most the line being written.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

LOG = "release-log.jsonl"


def path(holder_dir: Path) -> Path:
    return Path(holder_dir) / LOG


def append(holder_dir: Path, entry: dict) -> dict:
    """Append ``entry`` (with the time added) and return it as written."""
    entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"), **entry}
    line = json.dumps(entry, ensure_ascii=False, default=str, sort_keys=False) + "\n"
    Path(holder_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path(holder_dir), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return entry


def entries(holder_dir: Path, source: str | None = None) -> list[dict]:
    """Every attempt logged, oldest first; only ``source``'s when given. A damaged line (a crash
    mid-write) is reported as such rather than hiding the lines after it."""
    p = path(holder_dir)
    if not p.exists():
        return []
    out = []
    for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = {"damaged_line": number}
        if source is None or entry.get("source") == source or "damaged_line" in entry:
            out.append(entry)
    return out
