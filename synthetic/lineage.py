"""The data holder's raw sources and the lineage of their releases (holder side, never mounted).

**Sources.** A raw source is registered by name (``enclave data source add NAME CONTRACT.yaml``;
the first ``enclave data release`` of an unregistered contract registers it too). Every release of
a source is ``NAME@version``, which is how the hub relates releases to their source and holder.
The registry keeps the contract's absolute path, who registered it and when, the other contract
files released from it ("cuts": another selection or treatment of the same raw files), and every
version of each table's file ever seen (path, sha256, rows, first seen): a file whose content
changes stays the same source, with a new file version. A file whose content already belongs to
another source is refused, since two names for one raw file would escape the composition check.

**Lineage.** After a release is published, :func:`record_release` keeps, per released row of a
masked release and in release order: its row id, its entity id and its equivalence class over the
release's quasi-identifiers (with the quasi-identifier values themselves). Ids are 64-bit keyed
BLAKE2b MACs under the holder's lineage key (derived from the holder's secret in ``secrets/``),
of normalised values (trimmed, case-folded text, as pseudonyms are), so no raw key is
stored. A row has up to three ids and two releases join on the first kind both have:

* ``row_pk``: of the table's primary key value (stable across file versions);
* ``row_entity``: of the entity value plus the row's occurrence number among that entity's rows in
  file order (stable while an entity's rows keep their order);
* ``row_number``: the raw row number, valid only between releases of the same file content
  (``fingerprint``), never across file versions.

A row's entity is its ``entity_column`` value, else its primary key value, else the row itself.
Synthetic releases are listed in lineage but not row-linked: their rows are not raw rows.

Layout under ``holder_dir``::

    sources/<name>.json                     the registered source
    sources/.lock                           serialises changes to the registry and to lineage
    sources/<name>.release-lock             held by a release of <name> from its check to its record
    lineage/<name>/<version>/release.json   method, contract, files, composition result
    lineage/<name>/<version>/<table>.parquet  masked releases: ids, class, quasi-identifiers
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from .contract import NAME, Contract, ContractError, file_sha256, load_contract

SOURCES = "sources"
LINEAGE = "lineage"
ROW_KINDS = ("row_pk", "row_entity", "row_number")


class SourceError(Exception):
    """A source cannot be registered or found; the message says why."""


# -- the source registry -------------------------------------------------------------------------


@dataclass
class FileVersion:
    path: str
    sha256: str
    rows: int | None
    first_seen: str
    seen_by: str


@dataclass
class Source:
    name: str
    contract: str  # absolute path of the contract the source was registered with
    registered_at: str
    registered_by: str
    # Other contract files released from this source: {"contract": path, "first_seen", "by"}.
    cuts: list[dict] = field(default_factory=list)
    # Table name -> every version of its file, oldest first.
    files: dict[str, list[FileVersion]] = field(default_factory=dict)

    def current_files(self) -> dict[str, FileVersion]:
        """The newest version seen of each table's file."""
        return {t: versions[-1] for t, versions in self.files.items()}

    def hashes(self) -> set[str]:
        return {v.sha256 for versions in self.files.values() for v in versions}

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Source":
        files = {t: [FileVersion(**v) for v in vs] for t, vs in d.get("files", {}).items()}
        return cls(d["name"], d["contract"], d["registered_at"], d["registered_by"], d.get("cuts", []), files)


@dataclass(frozen=True)
class Registration:
    """What registering (or releasing) a contract changed in the registry."""

    source: Source
    created: bool  # the source was not registered before
    cut: bool  # the contract is not the one the source was registered with
    new_cut: bool  # ... and was not seen before
    new_files: list[str]  # tables whose file has a content not seen before (new file versions)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _sources_dir(holder_dir: Path) -> Path:
    return Path(holder_dir) / SOURCES


def _check_name(name: str) -> None:
    if not NAME.match(name) or ".." in name:
        raise SourceError(f"'{name}' is not a source name (lower-case letters, digits, '_', '.', '-')")


def _source_path(holder_dir: Path, name: str) -> Path:
    _check_name(name)
    return _sources_dir(holder_dir) / f"{name}.json"


@contextlib.contextmanager
def locked(holder_dir: Path) -> Iterator[None]:
    """Hold the registry's lock: registrations, lineage records and composition checks of one
    holder never interleave (a release checked against its source's releases while another is
    being recorded would miss it)."""
    folder = _sources_dir(holder_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(folder / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def releasing(holder_dir: Path, name: str) -> Iterator[None]:
    """Hold ``name``'s release lock for a whole release (composition check, publishing, lineage
    record): two releases of one source at once would each be checked without the other."""
    folder = _sources_dir(holder_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(_source_path(holder_dir, name).with_suffix(".release-lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file beside it, synced, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def source(holder_dir: Path, name: str) -> Source:
    """The registered source ``name`` (its contract path and every file version's hash)."""
    path = _source_path(holder_dir, name)
    if not path.exists():
        raise SourceError(f"source '{name}' is not registered (enclave data source add {name} CONTRACT.yaml)")
    try:
        return Source.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"the registry entry of source '{name}' ({path}) is unreadable: {exc}") from None


def sources(holder_dir: Path) -> list[Source]:
    folder = _sources_dir(holder_dir)
    if not folder.is_dir():
        return []
    return [source(holder_dir, p.stem) for p in sorted(folder.glob("*.json")) if NAME.match(p.stem)]


def _file_hashes(contract: Contract, contract_path: Path) -> dict[str, tuple[Path, str]]:
    """Each table's file (absolute) and its sha256; a missing file is named."""
    out, missing = {}, []
    for tname, t in contract.tables.items():
        path = (contract_path.parent / t.path).resolve()
        if not path.is_file():
            missing.append(f"table '{tname}': data file {path} not found")
            continue
        out[tname] = (path, file_sha256(path))
    if missing:
        raise ContractError(str(contract_path), missing)
    return out


def register(
    holder_dir: Path,
    name: str,
    contract_path: Path,
    *,
    by: str,
    contract: Contract | None = None,
    rows: dict[str, int] | None = None,
    new_source_only: bool = False,
) -> Registration:
    """Register ``name`` from ``contract_path``, or record a new file version or cut of it.

    ``rows`` (per table) when the caller has read the tables; otherwise rows are filled in when a
    release of that file version is recorded. ``new_source_only``: refuse if ``name`` is already
    registered from another contract file (``enclave data source add``).
    """
    _check_name(name)
    contract_path = Path(contract_path).resolve()
    contract = contract or load_contract(contract_path)
    if contract.name != name:
        raise SourceError(
            f"source name '{name}' differs from the contract's name '{contract.name}' ({contract_path});"
            " every release of a source is named after it, so they must be equal"
        )
    files = _file_hashes(contract, contract_path)
    with locked(holder_dir):
        for other in sources(holder_dir):
            if other.name == name:
                continue
            for tname, versions in other.files.items():
                for v in versions:
                    clash = [t for t, (_, h) in files.items() if h == v.sha256]
                    if clash:
                        raise SourceError(
                            f"table '{clash[0]}' of {contract_path.name} has the same content (sha256"
                            f" {v.sha256[:16]}...) as table '{tname}' of source '{other.name}' ({v.path});"
                            f" one raw file cannot be two sources: name the contract '{other.name}'"
                            f" (a cut of that source) instead"
                        )
        path = _source_path(holder_dir, name)
        now = _now()
        created = not path.exists()
        if created:
            src = Source(name, str(contract_path), now, by)
        else:
            src = source(holder_dir, name)
        cut = src.contract != str(contract_path)
        if cut and new_source_only:
            raise SourceError(
                f"source '{name}' is already registered from {src.contract}; a release made from"
                f" another contract file ({contract_path}) is a cut of it and is recorded as such"
            )
        new_cut = cut and all(c["contract"] != str(contract_path) for c in src.cuts)
        if new_cut:
            src.cuts.append({"contract": str(contract_path), "first_seen": now, "by": by})
        new_files = []
        for tname, (fpath, sha) in files.items():
            versions = src.files.setdefault(tname, [])
            known = next((v for v in versions if v.sha256 == sha), None)
            n = (rows or {}).get(tname)
            if known is None:
                versions.append(FileVersion(str(fpath), sha, n, now, by))
                new_files.append(tname)
            elif known.rows is None and n is not None:
                known.rows = n
        _write_json(path, src.as_dict())
        return Registration(src, created, cut, new_cut, [] if created else new_files)


def add_source(holder_dir: Path, name: str, contract_path: Path, *, by: str) -> Registration:
    """``enclave data source add``: the contract is checked against its data before registering."""
    from .contract import load_tables

    contract = load_contract(contract_path)
    tables = load_tables(contract, Path(contract_path).parent, source=str(contract_path))
    return register(holder_dir, name, contract_path, by=by, contract=contract,
                    rows={t: len(df) for t, df in tables.items()}, new_source_only=True)


# -- row and entity ids ----------------------------------------------------------------------------


def lineage_key(holder_dir: Path, secrets_dir: Path | None = None) -> bytes:
    """The holder's lineage key: derived from the holder's secret, used for nothing else.

    ``secrets_dir`` defaults to ``secrets`` beside ``holder_dir`` (``Settings`` puts both under
    ``$ENCLAVE_HOME``)."""
    from .keys import holder_secret

    secrets_dir = Path(secrets_dir) if secrets_dir else Path(holder_dir).parent / "secrets"
    return hmac.new(holder_secret(secrets_dir), b"lineage row ids", "sha256").digest()


def _value_ids(key: bytes, values: pd.Series) -> np.ndarray:
    """A 64-bit keyed BLAKE2b (a MAC, twice as fast as HMAC-SHA256 here) of each distinct value,
    normalised like pseudonyms; empty values get 0."""
    codes, uniques = pd.factorize(values)
    normalised = pd.Series(uniques, dtype=object).astype(str).str.strip().str.casefold()
    mac = hashlib.blake2b
    digests = b"".join([mac(v.encode("utf-8"), key=key, digest_size=8, person=b"enclave-lineage").digest()
                        for v in normalised])
    ids = np.append(np.frombuffer(digests, dtype=">i8").astype(np.int64), np.int64(0))
    return ids[codes]  # code -1 (empty) -> the last slot


def _mix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A 64-bit mix of two int64 arrays (splitmix64's finaliser over a ^ b*golden)."""
    with np.errstate(over="ignore"):
        x = a.astype(np.uint64) ^ (b.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x.view(np.int64)


def fingerprint(raw: pd.DataFrame) -> str:
    """A hash of a raw table's typed content: row numbers join only between equal fingerprints."""
    h = hashlib.sha256(",".join(map(str, raw.columns)).encode())
    h.update(pd.util.hash_pandas_object(raw, index=True).to_numpy().tobytes())
    return h.hexdigest()


def row_identities(contract: Contract, table: str, raw: pd.DataFrame, key: bytes) -> pd.DataFrame:
    """Ids of every raw row (indexed like ``raw``): ``entity`` and the row ids (module docstring)."""
    t = contract.tables[table]
    number = np.arange(len(raw), dtype=np.int64)
    out = pd.DataFrame({"row_number": number}, index=raw.index)
    ids = {c: _value_ids(key, raw[c]) for c in {t.primary_key, t.entity_column} - {None}}
    if t.primary_key:
        out["row_pk"] = ids[t.primary_key]
    entity_column = t.entity_column or t.primary_key
    if t.entity_column and raw[t.entity_column].notna().all():  # else it identifies no row
        values = raw[t.entity_column]
        occurrence = values.groupby(values, sort=False).cumcount().to_numpy(dtype=np.int64)
        out["row_entity"] = _mix(ids[t.entity_column], occurrence + 1)
    if entity_column:
        entity = ids[entity_column]
        empty = raw[entity_column].isna().to_numpy()
        # A row without an entity value is an entity of its own.
        out["entity"] = np.where(empty, _mix(number, np.full(len(raw), -1, dtype=np.int64)), entity)
    else:
        out["entity"] = _mix(number, np.full(len(raw), -2, dtype=np.int64))
    return out


def class_codes(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """One int64 per row, equal for rows equal on ``columns`` (empty values are a value)."""
    codes = np.zeros(len(df), dtype=np.int64)
    for col in columns:
        col_codes, uniques = pd.factorize(df[col], use_na_sentinel=False)
        codes, _ = pd.factorize(codes * (len(uniques) + 1) + col_codes)
    return codes.astype(np.int64)


def released_rows(contract: Contract, table: str, released: pd.DataFrame, raw: pd.DataFrame,
                  key: bytes, values: bool = True) -> pd.DataFrame:
    """Per released row (release order): its ids, its class over the quasi-identifiers and (with
    ``values``) the quasi-identifiers' released values (``qi.<column>``)."""
    position = raw.index.get_indexer(released.index)
    if (position < 0).any():
        raise ValueError(f"table '{table}': released rows must keep their raw row index (lineage joins on it)")
    ids = row_identities(contract, table, raw, key).iloc[position].reset_index(drop=True)
    qis = [c for c in contract.tables[table].quasi_identifiers() if c in released.columns]
    ids["class"] = class_codes(released, qis)
    for c in qis if values else ():
        ids[f"qi.{c}"] = released[c].reset_index(drop=True)
    return ids


# -- lineage of releases ---------------------------------------------------------------------------


def _split(release: str) -> tuple[str, str]:
    name, _, version = release.partition("@")
    if not version:
        raise SourceError(f"'{release}' is not a release name (name@version)")
    _check_name(name)
    return name, version


def _lineage_dir(holder_dir: Path, release: str) -> Path:
    name, version = _split(release)
    if "/" in version or version.startswith("."):
        raise SourceError(f"'{release}' is not a release name (name@version)")
    return Path(holder_dir) / LINEAGE / name / version


def record_release(
    holder_dir: Path,
    release: str,
    contract: Contract,
    released: dict[str, pd.DataFrame],
    raw: dict[str, pd.DataFrame],
    manifest: dict,
    *,
    contract_path: Path | None = None,
    secrets_dir: Path | None = None,
) -> Path:
    """Keep a published release's lineage; return its folder.

    ``released`` must still be indexed by raw row number (masked releases); ``secrets_dir`` as for
    :func:`lineage_key`.
    """
    name, version = _split(release)
    method = manifest["method"]
    folder = _lineage_dir(holder_dir, release)
    tables: dict[str, dict] = {}
    frames: dict[str, pd.DataFrame] = {}
    key = lineage_key(holder_dir, secrets_dir) if method == "masked" else b""
    for tname, t in contract.tables.items():
        info = {"rows": len(released[tname]), "file_sha256": manifest["source"][tname]["sha256"],
                "quasi_identifiers": [c for c in t.quasi_identifiers() if c in released[tname].columns],
                "entity_column": t.entity_column or t.primary_key}
        if method == "masked":
            frames[tname] = released_rows(contract, tname, released[tname], raw[tname], key)
            info["fingerprint"] = fingerprint(raw[tname])
            info["row_ids"] = [k for k in ROW_KINDS if k in frames[tname].columns]
        tables[tname] = info
    src = None
    with contextlib.suppress(SourceError):
        src = source(holder_dir, name)
    path = str(Path(contract_path).resolve()) if contract_path else None
    record = {
        "release": release, "source": name, "version": version, "method": method,
        "row_linked": method == "masked",
        "created_at": manifest.get("created_at"), "created_by": manifest.get("created_by"),
        "content_hash": manifest.get("content_hash"),
        "contract": {
            "path": path,
            "sha256": file_sha256(Path(contract_path)) if contract_path else None,
            "canonical_sha256": hashlib.sha256(
                json.dumps(manifest.get("contract"), sort_keys=True).encode()).hexdigest(),
            "cut": bool(src and path and src.contract != path),
        },
        "files": {t: info["file_sha256"] for t, info in tables.items()},
        "k": contract.privacy.k,
        "tables": tables,
        "composition": [g for g in manifest.get("gates", []) if g.get("gate") == "composition_k"],
    }
    with locked(holder_dir):
        if folder.exists():
            raise SourceError(f"lineage of {release} is already recorded ({folder})")
        folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{version}.", suffix=".partial"))
        try:
            for tname, frame in frames.items():
                frame.to_parquet(tmp / f"{tname}.parquet", index=False)
            _write_json(tmp / "release.json", record)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if src is not None:  # rows of file versions registered before they were read
            changed = False
            for tname, sha in record["files"].items():
                for v in src.files.get(tname, []):
                    if v.sha256 == sha and v.rows is None:
                        v.rows, changed = len(raw[tname]), True
            if changed:
                _write_json(_source_path(holder_dir, name), src.as_dict())
    return folder


def accept_unlinked(holder_dir: Path, release: str, manifest: dict, *, reason: str, by: str) -> Path:
    """Record that ``release``, published without lineage (before lineage was kept, or its
    recording failed), is not combined with later releases, and why. Until then the composition
    gate refuses every new masked release of its source."""
    if len(reason.strip()) < 10:
        raise SourceError("say why the release may stay uncombined (a reason of at least 10 characters)")
    name, version = _split(release)
    folder = _lineage_dir(holder_dir, release)
    record = {
        "release": release, "source": name, "version": version, "method": manifest.get("method"),
        "row_linked": False, "unlinked": {"reason": reason.strip(), "by": by, "at": _now()},
        "created_at": manifest.get("created_at"), "created_by": manifest.get("created_by"),
        "content_hash": manifest.get("content_hash"),
        "contract": {"path": None, "sha256": None, "cut": False},
        "files": {t: v.get("sha256") for t, v in manifest.get("source", {}).items()},
        "tables": {}, "composition": [],
    }
    with locked(holder_dir):
        if folder.exists():
            raise SourceError(f"lineage of {release} is already recorded ({folder})")
        folder.mkdir(parents=True, mode=0o700)
        _write_json(folder / "release.json", record)
    return folder


def releases(holder_dir: Path, name: str) -> list[dict]:
    """Lineage records of ``name``'s published releases, oldest first."""
    _check_name(name)
    folder = Path(holder_dir) / LINEAGE / name
    if not folder.is_dir():
        return []
    out = []
    for d in folder.iterdir():
        if d.is_dir() and not d.name.startswith(".") and (d / "release.json").is_file():
            out.append(json.loads((d / "release.json").read_text(encoding="utf-8")))
    return sorted(out, key=lambda r: (r.get("created_at") or "", _version_key(r["version"])))


def _version_key(version: str) -> tuple:
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def rows(holder_dir: Path, release: str, table: str, columns: list[str] | None = None) -> pd.DataFrame:
    """The row lineage of ``table`` in a masked ``release``."""
    return pd.read_parquet(_lineage_dir(holder_dir, release) / f"{table}.parquet", columns=columns)
