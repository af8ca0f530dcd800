"""The release store: immutable, content-hashed ``name@version`` folders, published atomically.

Layout of one release::

    <store>/<name>@<version>/
        data/               the only part a sandbox sees (mounted read-only at /data/<name>@<version>)
            <table>.parquet
            <table>.csv
            README.txt      what the release is (and, for generated data, that it is generated)
        manifest.json       source hashes, contract, parameters, versions, gate metrics, who, when
        report.html         for the data holder: real vs released distributions, gate metrics

A release is built in a hidden temporary folder inside the store (same filesystem) and renamed
into place only when complete, so a failed run leaves nothing under a release name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import pandas as pd

MANIFEST = "manifest.json"
REPORT = "report.html"
DATA = "data"
# Same rule as the hub's enclave.releases.RELEASE_NAME, with the version required.
RELEASE = re.compile(r"^([a-z0-9][a-z0-9_.-]{0,99})@([A-Za-z0-9][A-Za-z0-9_.-]{0,49})$")


class StoreError(Exception):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_hash(files: dict[str, str]) -> str:
    """One hash over every data file's path and hash: the release's identity."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(f"{path}\0{files[path]}\n".encode())
    return h.hexdigest()


def releases(store: Path) -> list[str]:
    if not store.is_dir():
        return []
    return sorted(p.name for p in store.iterdir() if p.is_dir() and RELEASE.match(p.name))


def next_version(store: Path, name: str) -> str:
    numbers = [int(m.group(2)) for r in releases(store) if (m := RELEASE.match(r)) and m.group(1) == name
               and m.group(2).isdigit()]
    return str(max(numbers, default=0) + 1)


def new_release_name(store: Path, name: str, version: str) -> str:
    """``name@version``, checked to be a valid release name that the store does not hold yet."""
    release = f"{name}@{version}"
    if not RELEASE.match(release) or ".." in release:
        raise StoreError(f"'{release}' is not a valid release name")
    if (store / release).exists():
        raise StoreError(f"release '{release}' already exists; releases are immutable")
    return release


def release_path(store: Path, release: str) -> Path:
    if not RELEASE.match(release) or ".." in release:
        raise StoreError(f"'{release}' is not a release name (name@version)")
    path = store / release
    if not path.is_dir():
        raise StoreError(f"release '{release}' is not in the release store ({store})")
    return path


def _write_table(df: pd.DataFrame, data_dir: Path, tname: str, generated: bool) -> None:
    # pyarrow (and pandas) only when a release is written: listing and reading manifests stay light.
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"enclave.generated"] = b"true" if generated else b"false"
    pq.write_table(table.replace_schema_metadata(meta), data_dir / f"{tname}.parquet")
    df.to_csv(data_dir / f"{tname}.csv", index=False, date_format="%Y-%m-%d")


def _readme(name: str, manifest: dict, tables: dict[str, pd.DataFrame]) -> str:
    lines = [f"Release {name}", ""]
    if manifest.get("generated"):
        lines += ["GENERATED DATA: every person and enterprise in this release is made up.", ""]
    lines.append(f"Method: {manifest['method']}")
    for tname, df in tables.items():
        lines.append(f"Table {tname}: {len(df)} rows; columns: {', '.join(map(str, df.columns))}")
    lines += ["", "Files: <table>.parquet (typed) and <table>.csv (the same rows)."]
    return "\n".join(lines) + "\n"


def _freeze(root: Path) -> None:
    """Read-only for everyone: the release is immutable, and sandboxes run under their own uids."""
    for dirpath, dirnames, filenames in os.walk(root):
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o444)
        os.chmod(dirpath, 0o555)


def publish(
    store: Path,
    name: str,
    tables: dict[str, pd.DataFrame],
    manifest: dict,
    report: Callable[[dict], str],
    version: str | None = None,
) -> str:
    """Write a release atomically and return ``name@version``.

    ``report`` renders the holder's HTML report from the finished manifest (hashes included).
    """
    store.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=store))
    try:
        data_dir = tmp / DATA
        data_dir.mkdir()
        for tname, df in tables.items():
            _write_table(df, data_dir, tname, bool(manifest.get("generated")))
        version = version or next_version(store, name)
        release = f"{name}@{version}"
        if not RELEASE.match(release):
            raise StoreError(f"'{release}' is not a valid release name")
        (data_dir / "README.txt").write_text(_readme(release, manifest, tables), encoding="utf-8")
        files = {f"{DATA}/{p.name}": sha256_file(p) for p in sorted(data_dir.iterdir())}
        manifest = {"release": release, **manifest, "files": files, "content_hash": content_hash(files)}
        manifest["tables"] = {t: {"rows": len(df), "columns": [str(c) for c in df.columns]} | manifest.get("tables", {}).get(t, {})
                              for t, df in tables.items()}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        (tmp / REPORT).write_text(report(manifest), encoding="utf-8")
        _freeze(tmp)
        target = store / release
        if target.exists():
            raise StoreError(f"release '{release}' already exists; releases are immutable")
        os.rename(tmp, target)
        return release
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: Path) -> None:
    if path.exists():
        for dirpath, _dirs, _files in os.walk(path):
            os.chmod(dirpath, 0o755)
        shutil.rmtree(path, ignore_errors=True)


def manifest(store: Path, release: str) -> dict:
    path = release_path(store, release) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StoreError(f"release '{release}': cannot read its manifest: {exc}") from None


def verify(store: Path, release: str) -> list[str]:
    """Problems found re-hashing a release against its manifest; empty when intact."""
    root = release_path(store, release)
    m = manifest(store, release)
    problems = []
    if m.get("release") != release:
        problems.append(f"manifest names release '{m.get('release')}', not '{release}'")
    listed: dict[str, str] = m.get("files", {})
    present = {f"{DATA}/{p.relative_to(root / DATA)}" for p in (root / DATA).rglob("*") if p.is_file()}
    for path in sorted(present - set(listed)):
        problems.append(f"{path}: not listed in the manifest")
    for path, digest in sorted(listed.items()):
        if path not in present:
            problems.append(f"{path}: missing")
        elif sha256_file(root / path) != digest:
            problems.append(f"{path}: content differs from the manifest (sha256)")
    if content_hash(listed) != m.get("content_hash"):
        problems.append("content hash in the manifest does not match its file list")
    if not (root / REPORT).is_file():
        problems.append(f"{REPORT}: missing")
    return problems
