"""The data holder's registry of raw sources, and the records of their releases' lineage.

A raw source is registered by name (``enclave data source add NAME CONTRACT.yaml``; the first
``enclave data release`` of an unregistered contract registers it too). Every release of a source
is ``NAME@version``, which is how the hub relates releases to their source and holder. The
registry keeps the contract's absolute path, who registered it and when, the other contract files
released from it ("cuts": another selection or treatment of the same raw files), and every
version of each table's file ever seen (path, sha256, rows, first seen): a file whose content
changes stays the same source, with a new file version. A file whose content already belongs to
another source is refused, since two names for one raw file would escape the composition check.

This module reads and writes JSON only (no pandas), so the commands listing sources and lineage
start fast; :mod:`synthetic.lineage` computes and stores the rows' lineage.

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
import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from enclave.files import atomic_write
from enclave.i18n import Message, N_

from .store import sha256_file

if TYPE_CHECKING:
    from .contract import Contract

SOURCES = "sources"
LINEAGE = "lineage"
# A source's name: its releases are NAME@version (the contract's `name` follows the same rule).
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")


class SourceError(Exception):
    """A source cannot be registered or found: a stable ``code`` and an English ``text`` marked with
    ``N_`` (``%(name)s`` placeholders filled from ``params``); ``str()`` is the English, :meth:`render`
    the text in a locale."""

    def __init__(self, code: str, text: str, /, **params) -> None:
        self.message = Message(code, text, params)
        self.code = code
        super().__init__(str(self.message))

    def render(self, locale: str = "en") -> str:
        return self.message.render(locale)


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
        raise SourceError("source.bad_name", N_("'%(name)s' is not a source name (lower-case letters, digits, '_',"
                                                " '.', '-')"), name=name)


def _source_path(holder_dir: Path, name: str) -> Path:
    _check_name(name)
    return _sources_dir(holder_dir) / f"{name}.json"


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created 0600 in a 0700 folder) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def locked(holder_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Hold the registry's lock: registrations, lineage records and composition checks of one
    holder never interleave (a release checked against its source's releases while another is
    being recorded would miss it)."""
    return _exclusive(_sources_dir(holder_dir) / ".lock")


def releasing(holder_dir: Path, name: str) -> contextlib.AbstractContextManager[None]:
    """Hold ``name``'s release lock for a whole release (composition check, publishing, lineage
    record): two releases of one source at once would each be checked without the other."""
    return _exclusive(_source_path(holder_dir, name).with_suffix(".release-lock"))


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` atomically (readable by root alone), making its folder if needed."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, json.dumps(data, ensure_ascii=False, indent=2))


def source(holder_dir: Path, name: str) -> Source:
    """The registered source ``name`` (its contract path and every file version's hash)."""
    path = _source_path(holder_dir, name)
    if not path.exists():
        raise SourceError("source.unknown", N_("source '%(name)s' is not registered (enclave data source add %(name)s"
                                               " CONTRACT.yaml)"), name=name)
    try:
        return Source.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise SourceError("source.unreadable", N_("the registry entry of source '%(name)s' (%(path)s) is unreadable:"
                                                  " %(problem)s"), name=name, path=str(path), problem=str(exc)) from None


def sources(holder_dir: Path) -> list[Source]:
    folder = _sources_dir(holder_dir)
    if not folder.is_dir():
        return []
    return [source(holder_dir, p.stem) for p in sorted(folder.glob("*.json")) if NAME.match(p.stem)]


def _file_hashes(contract: Contract, contract_path: Path) -> dict[str, tuple[Path, str]]:
    """Each table's file (absolute) and its sha256; a missing file is named."""
    from .contract import ContractError, Problem

    out, missing = {}, []
    for tname, t in contract.tables.items():
        path = (contract_path.parent / t.path).resolve()
        if not path.is_file():
            missing.append(Problem("contract.data_file_not_found", N_("table '%(table)s': data file %(path)s not"
                                                                      " found"), {"table": tname, "path": str(path)}))
            continue
        out[tname] = (path, sha256_file(path))
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
    if contract is None:
        from .contract import load_contract

        contract = load_contract(contract_path)
    if contract.name != name:
        raise SourceError(
            "source.name_mismatch",
            N_("source name '%(name)s' differs from the contract's name '%(contract_name)s' (%(contract)s); every"
               " release of a source is named after it, so they must be equal"),
            name=name, contract_name=contract.name, contract=str(contract_path))
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
                            "source.file_of_another",
                            N_("table '%(table)s' of %(contract)s has the same content (sha256 %(sha256)s...) as"
                               " table '%(other_table)s' of source '%(other)s' (%(path)s); one raw file cannot be"
                               " two sources: name the contract '%(other)s' (a cut of that source) instead"),
                            table=clash[0], contract=contract_path.name, sha256=v.sha256[:16], other_table=tname,
                            other=other.name, path=v.path)
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
                "source.registered_elsewhere",
                N_("source '%(name)s' is already registered from %(registered)s; a release made from another"
                   " contract file (%(contract)s) is a cut of it and is recorded as such"),
                name=name, registered=src.contract, contract=str(contract_path))
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
    from .contract import load_contract, load_tables

    contract = load_contract(contract_path)
    tables = load_tables(contract, Path(contract_path).parent, source=str(contract_path))
    return register(holder_dir, name, contract_path, by=by, contract=contract,
                    rows={t: len(df) for t, df in tables.items()}, new_source_only=True)


# -- records of published releases -----------------------------------------------------------------


def _split(release: str) -> tuple[str, str]:
    name, _, version = release.partition("@")
    if not version:
        raise SourceError("release.bad_name", N_("'%(release)s' is not a release name (name@version)"), release=release)
    _check_name(name)
    return name, version


def _lineage_dir(holder_dir: Path, release: str) -> Path:
    name, version = _split(release)
    if "/" in version or version.startswith("."):
        raise SourceError("release.bad_name", N_("'%(release)s' is not a release name (name@version)"), release=release)
    return Path(holder_dir) / LINEAGE / name / version


def accept_unlinked(holder_dir: Path, release: str, manifest: dict, *, reason: str, by: str) -> Path:
    """Record that ``release``, published without lineage (before lineage was kept, or its
    recording failed), is not combined with later releases, and why. Until then the composition
    gate refuses every new masked release of its source."""
    if len(reason.strip()) < 10:
        raise SourceError("lineage.reason_missing", N_("say why the release may stay uncombined (a reason of at"
                                                       " least 10 characters)"))
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
            raise SourceError("lineage.recorded", N_("lineage of %(release)s is already recorded (%(folder)s)"),
                              release=release, folder=str(folder))
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
