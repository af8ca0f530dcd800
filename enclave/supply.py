"""Minimum-necessary supply: column views of releases, and each workspace's data supply manifest.

A *view* is a materialised copy of only the columns a workspace was granted, built under
``$ENCLAVE_HOME/views/<workspace>/<release>/`` and mounted at ``/data/<release>`` instead of the
release's full ``data/`` folder, so the other columns do not exist inside the sandbox at all.

The *data supply manifest* (``$ENCLAVE_HOME/supply/<workspace>.json``) records every attachment
and detachment: what (release, its content hash, columns, view hash), why, by whom and when.
Both are written atomically: a temporary file or folder beside the target, then a rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Callable

from .files import atomic_write
from .i18n import N_
from .refusals import Refusal
from .releases import release_dir
from .settings import Settings


class SupplyError(Refusal):
    """A column view or a data supply manifest that cannot be made or read, with the reason (a stable code
    and its text)."""


def views_root(settings: Settings) -> Path:
    return settings.home / "views"


def view_dir(settings: Settings, workspace: str, release: str) -> Path:
    release_dir(settings, release)  # validates the name
    return views_root(settings) / workspace / release


def manifest_path(settings: Settings, workspace: str) -> Path:
    return settings.home / "supply" / f"{workspace}.json"


def release_tables(settings: Settings, release: str) -> dict[str, list[str]]:
    """Each table of a release (its Parquet files) with its columns."""
    import pyarrow.parquet as pq  # only needed when attaching; the hub's other paths stay light

    data = release_dir(settings, release) / "data"
    return {p.stem: pq.read_schema(p).names for p in sorted(data.glob("*.parquet"))}


# Between column names: ',' and what a Chinese input method types for it ('，' and '、'). Column
# names are identifiers (synthetic.contract.is_column_name), so none of these is ever part of one.
_COLUMN_SEPARATORS = re.compile(r"[,，、]")


def select_columns(tables: dict[str, list[str]], release: str, columns: list[str]) -> dict[str, list[str]]:
    """``col`` (in every table that has it) or ``table.col``, resolved to table -> columns.

    An item may hold several names separated by ',', '，' or '、' (``性别，月收入``)."""
    chosen: dict[str, list[str]] = {}
    unknown = []
    for spec in (s.strip() for item in columns for s in _COLUMN_SEPARATORS.split(item)):
        if not spec:
            continue
        if "." in spec:
            t, c = spec.split(".", 1)
            hits = [t] if c in tables.get(t, []) else []
        else:
            c = spec
            hits = [t for t, cols in tables.items() if c in cols]
        if not hits:
            unknown.append(spec)
        for t in hits:
            if c not in chosen.setdefault(t, []):
                chosen[t].append(c)
    if unknown:
        available = ", ".join(f"{t}.{c}" for t, cols in tables.items() for c in cols)
        raise SupplyError("view.unknown_columns", N_("release '%(release)s' has no column(s) %(columns)s (it has: %(available)s)"),
                          release=release, columns=", ".join(map(repr, unknown)), available=available)
    if not chosen:
        raise SupplyError("view.no_columns", N_("no columns given for the view"))
    # Keep each table's own column order.
    return {t: [c for c in tables[t] if c in cols] for t, cols in chosen.items()}


def _hash_files(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(f"{p.relative_to(root)}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def cut_columns(data: Path, out: Path, selection: dict[str, list[str]]) -> list[str]:
    """Write the ``selection`` (table -> columns) of the release files in ``data`` into ``out``, as
    Parquet and CSV; return a README line per table. A workspace's view and its sealed view
    (:mod:`synthetic.sealed`) are cut by this one function, so the two stay interchangeable."""
    import pandas as pd
    import pyarrow.parquet as pq

    lines = []
    for t, cols in selection.items():
        table = pq.read_table(data / f"{t}.parquet", columns=cols)
        # pandas' schema metadata lists every column of the release: keep only our own labels.
        meta = {k: v for k, v in (table.schema.metadata or {}).items() if k.startswith(b"enclave.")}
        pq.write_table(table.replace_schema_metadata(meta), out / f"{t}.parquet")
        # The CSV is cut from the release's own CSV so values read exactly as published there.
        csv = pd.read_csv(data / f"{t}.csv", usecols=cols, dtype=str, keep_default_na=False)
        csv[cols].to_csv(out / f"{t}.csv", index=False)
        lines.append(f"Table {t}: {table.num_rows} rows; columns: {', '.join(cols)}")
    return lines


def build_view(settings: Settings, workspace: str, release: str, selection: dict[str, list[str]]) -> str:
    """Materialise the selected columns of ``release`` for ``workspace``; return the view's hash."""
    data = release_dir(settings, release) / "data"
    target = view_dir(settings, workspace, release)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{release}.", suffix=".partial", dir=target.parent))
    try:
        lines = [f"Column view of release {release} for workspace {workspace} (minimum necessary).", ""]
        readme = data / "README.txt"
        if readme.is_file() and "GENERATED DATA" in readme.read_text(encoding="utf-8"):
            lines += ["GENERATED DATA: every person and enterprise in this release is made up.", ""]
        lines += cut_columns(data, tmp, selection)
        (tmp / "README.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        digest = _hash_files(tmp)
        for p in tmp.iterdir():
            p.chmod(0o444)
        tmp.chmod(0o555)
        if target.exists():
            remove_view(settings, workspace, release)
        os.rename(tmp, target)
        return digest
    except BaseException:
        _rmtree(tmp)
        raise


def _rmtree(path: Path) -> None:
    if path.exists():
        path.chmod(0o755)
        shutil.rmtree(path)


def remove_view(settings: Settings, workspace: str, release: str) -> None:
    _rmtree(view_dir(settings, workspace, release))


def read_manifest(settings: Settings, workspace: str) -> list[dict]:
    path = manifest_path(settings, workspace)
    if not path.exists():
        return []
    try:
        return json.loads(path.read_text(encoding="utf-8"))["entries"]
    except (ValueError, KeyError) as exc:
        raise SupplyError("supply.manifest_unreadable", N_("data supply manifest %(path)s is unreadable: %(reason)s"),
                          path=str(path), reason=str(exc)) from None


def keep_manifest(settings: Settings, workspace: str) -> Callable[[], None]:
    """A function that puts the workspace's data supply manifest back as it is now (for a change
    whose transaction is rolled back after the manifest was written)."""
    path = manifest_path(settings, workspace)
    before = path.read_bytes() if path.exists() else None

    def restore() -> None:
        if before is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write(path, before)

    return restore


def _release_hash(settings: Settings, release: str) -> str | None:
    try:
        return json.loads((release_dir(settings, release) / "manifest.json").read_text(encoding="utf-8"))["content_hash"]
    except (OSError, ValueError, KeyError):
        return None


def record(
    settings: Settings,
    workspace: str,
    *,
    action: str,
    release: str,
    by: str,
    reason: str = "",
    columns: dict[str, list[str]] | None = None,
    view_hash: str | None = None,
    consented_by: str | None = None,
) -> dict:
    """Append one entry to the workspace's data supply manifest (atomically) and return it.
    ``by``: who asked for the release; ``consented_by``: the data holder who consented."""
    entry = {
        "action": action,
        "release": release,
        "release_content_hash": _release_hash(settings, release),
        "columns": columns if columns is not None else "all",
        "view_hash": view_hash,
        "reason": reason,
        "by": by,
        **({"consented_by": consented_by} if consented_by else {}),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path = manifest_path(settings, workspace)
    entries = read_manifest(settings, workspace) + [entry]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps({"workspace": workspace, "entries": entries}, indent=2, ensure_ascii=False))
    return entry
