"""Sealed views: the real rows behind a synthetic release, kept on the data holder's side.

A synthetic release ``<source>@<version>`` is generated from its source's raw rows. Its *sealed
view* is those rows themselves, in the release's shape: the same tables, column names, column
order and types (the release's Parquet schema, metadata included), so that code written against
the release reads the sealed view unchanged. Sealed runs (issue #18) execute an operator's
notebook on it; nothing of it reaches a person except results that pass export review.

**What the view holds.** Exactly what the release's generator learned from
(:mod:`synthetic.pipeline`): the raw files the release was made from (their hashes must still be
the release's), every column treated as the release's contract says, with the release's own
pseudonym key (pseudonyms, resident-ID derived fields, bands, top/bottom coding, shifted dates),
nothing suppressed; then direct identifiers other than keys and the entity column, and free text,
removed (:func:`synthetic.synthesis.prepare`). Keys and the entity column hold the release key's
pseudonyms: under a contract's shared key (``pseudonym_key``) they equal the pseudonyms of masked
releases under that key for the same person. Rows are in an order drawn from the holder's secret,
as releases are, never the raw file's.

**Where.** Under ``holder_dir`` (root's; 0700 folders, 0600 files), never in the release store and
never mounted into a workspace's sandbox::

    sealed/<release>/manifest.json       release and its content hash, the source, the raw files'
                                         hashes, the view's files and content hash, when, by whom
    sealed/<release>/data/               <table>.parquet, <table>.csv, README.txt (the release's names)
    sealed/<release>/workspaces/<ws>/    a workspace's sealed view: only the columns it was granted,
                                         the same files as its view of the release under /data/<release>
    sealed/<release>/workspaces/<ws>.json  which columns, from which view, its content hash

Sealed views are made for synthetic releases only: code is developed on generated rows and then run
on the real ones; a masked release already holds real rows, generalised and suppressed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from enclave.files import atomic_write
from enclave.i18n import Message, N_
from enclave.refusals import Refusal

from . import keys, masking, sources, store

if TYPE_CHECKING:
    from enclave.settings import Settings

    from .pipeline import HolderSettings

SEALED = "sealed"
MANIFEST = "manifest.json"
DATA = "data"
WORKSPACES = "workspaces"
# Same rule as enclave.db.WORKSPACE_NAME: a workspace's sealed view is a folder of that name.
WORKSPACE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$|^[a-z0-9]$")


class SealedViewError(Refusal):
    """A sealed view that cannot be made, found or given, with the reason (a stable code and its text)."""


@dataclass(frozen=True)
class SealedView:
    release: str
    path: Path  # the view's data folder
    content_hash: str
    manifest: dict


@dataclass(frozen=True)
class WorkspaceSealedView:
    workspace: str
    release: str
    path: Path  # what a sealed run mounts at /data/<release>
    content_hash: str
    columns: dict[str, list[str]] | None  # None: every column of the release


def sealed_dir(holder_dir: Path, release: str) -> Path:
    """The folder of ``release``'s sealed view (the name is checked so it cannot leave ``sealed/``)."""
    if not store.RELEASE.match(release) or ".." in release:
        raise SealedViewError("sealed.bad_release", N_("'%(release)s' is not a release name (name@version)"),
                              release=release)
    return Path(holder_dir) / SEALED / release


# -- building the view --------------------------------------------------------------------------------


def build(settings: HolderSettings, release: str, *, by: str) -> SealedView:
    """Build (or rebuild) the sealed view of synthetic ``release``; refuse with a
    :class:`SealedViewError` naming the reason when it cannot be made faithfully."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .contract import Contract, load_tables
    from .synthesis import prepare

    folder = sealed_dir(settings.holder_dir, release)
    released = _synthetic_release(settings.release_store, release)
    source = release.partition("@")[0]
    contract = Contract.model_validate(released["contract"])
    files = _raw_files(settings.holder_dir, release, released)
    key = _release_key(settings.secrets_dir, contract, release)
    # The raw files are read where the registry has them; their hashes are checked again after
    # reading, so the rows read are the release's even if a file is replaced meanwhile.
    located = contract.model_copy(update={"tables": {
        t: spec.model_copy(update={"path": str(files[t])}) for t, spec in contract.tables.items()}})
    raw = load_tables(located, Path("/"), source=f"{source} (sealed view of {release})")
    _raw_files(settings.holder_dir, release, released)
    masked = masking.mask_tables(contract, raw, key, suppress=False, progress=False)
    prepared = prepare(contract, masked.tables).tables

    release_data = store.release_path(settings.release_store, release) / store.DATA
    parent = folder.parent
    _private_dir(parent)
    with _locked(parent):
        tmp = Path(tempfile.mkdtemp(prefix=f".{release}.", suffix=".partial", dir=parent))
        try:
            data = tmp / DATA
            data.mkdir(mode=0o700)
            lines = [f"Sealed view of release {release}: the real rows of source {source} (data holder's side only).",
                     "Same tables, columns and types as the release; identifiers treated as in the release.", ""]
            if released.get("generated"):
                lines += ["GENERATED DATA: every person and enterprise in this source is made up.", ""]
            tables = {}
            for tname in contract.tables:
                schema = pq.read_schema(release_data / f"{tname}.parquet")
                df = _fitted(prepared[tname], schema, release, tname)
                df = keys.shuffle(df, settings.secrets_dir, f"{release} sealed view", tname).reset_index(drop=True)
                try:
                    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
                except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
                    raise _misfit(release, tname, str(exc)) from None
                table = table.replace_schema_metadata(schema.metadata)
                pq.write_table(table, data / f"{tname}.parquet")
                # The CSV from the typed rows, written as the release writes its own.
                table.to_pandas().to_csv(data / f"{tname}.csv", index=False, date_format="%Y-%m-%d")
                tables[tname] = {"rows": table.num_rows, "columns": list(schema.names)}
                lines.append(f"Table {tname}: {table.num_rows} rows; columns: {', '.join(schema.names)}")
            (data / "README.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
            digests = {f"{DATA}/{p.name}": store.sha256_file(p) for p in sorted(data.iterdir())}
            manifest = {
                "release": release,
                "release_content_hash": released["content_hash"],
                "source": source,
                "source_files": {t: {"path": str(files[t]), "sha256": released["source"][t]["sha256"],
                                     "rows": len(raw[t])} for t in contract.tables},
                "pseudonym_key": released.get("pseudonym_key", {}).get("name"),
                "tables": tables,
                "files": digests,
                "content_hash": store.content_hash(digests),
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "created_by": by,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
            _make_private(tmp)
            _replace(tmp, folder)
        except BaseException:
            _remove(tmp)
            raise
    return SealedView(release, folder / DATA, manifest["content_hash"], manifest)


def remove(holder_dir: Path, release: str) -> None:
    """Remove ``release``'s sealed view (and its workspaces' views), if any."""
    folder = sealed_dir(holder_dir, release)
    if folder.exists():
        with _locked(folder.parent):
            _replace_with_nothing(folder)


def _synthetic_release(release_store: Path, release: str) -> dict:
    """The manifest of ``release``, which must be a synthetic release in the store."""
    try:
        manifest = store.manifest(release_store, release)
    except store.StoreError:
        raise SealedViewError("sealed.release_unknown", N_("release '%(release)s' is not in the release store"
                                                           " (%(store)s)"), release=release,
                              store=str(release_store)) from None
    if manifest.get("method") != "synthetic":
        raise SealedViewError(
            "sealed.not_synthetic",
            N_("%(release)s is not a synthetic release (method: %(method)s): sealed views are made for synthetic"
               " releases only (code is developed on generated rows, then run on the real ones; a masked release"
               " already holds real rows, generalised and suppressed, so code written against it would not fit"
               " them)"),
            release=release, method=manifest.get("method"))
    return manifest


def _raw_files(holder_dir: Path, release: str, manifest: dict) -> dict[str, Path]:
    """Each table's raw file, as the source registry has it, unchanged since the release."""
    name = release.partition("@")[0]
    try:
        src = sources.source(holder_dir, name)
    except sources.SourceError as exc:
        if exc.code != "source.unknown":
            raise SealedViewError.from_refusal(exc) from None
        raise SealedViewError(
            "sealed.source_not_registered",
            N_("%(release)s was made from source '%(source)s', which is not registered on the data holder's side;"
               " the sealed view is made from its raw files (enclave data source add %(source)s CONTRACT.yaml)"),
            release=release, source=name) from None
    out = {}
    for tname, info in manifest["source"].items():
        then = info["sha256"]
        version = next((v for v in src.files.get(tname, []) if v.sha256 == then), None)
        if version is None:
            raise SealedViewError(
                "sealed.file_not_registered",
                N_("table '%(table)s' of %(release)s was made from a file (sha256 %(sha256)s) that source"
                   " '%(source)s' does not list: the raw file behind the release is not registered"),
                table=tname, release=release, sha256=then, source=name)
        path = Path(version.path)
        if not path.is_file():
            raise SealedViewError("sealed.file_missing", N_("table '%(table)s' of %(release)s: its raw file %(path)s"
                                                            " is missing"), table=tname, release=release, path=str(path))
        now = store.sha256_file(path)
        if now != then:
            raise SealedViewError(
                "sealed.file_changed",
                N_("table '%(table)s' of %(release)s: its raw file %(path)s changed since the release (sha256 %(now)s"
                   " now, %(then)s when released); a sealed view holds the rows the release was made from, so"
                   " publish a new release of the new file"),
                table=tname, release=release, path=str(path), now=now, then=then)
        out[tname] = path
    return out


def _release_key(secrets_dir: Path, contract, release: str) -> bytes:
    """The release's pseudonym key, which must exist already: a key made anew would give other
    pseudonyms than the release's."""
    name = contract.pseudonym_key or keys.HOLDER_SECRET
    path = masking.key_path(secrets_dir, name)
    if not path.is_file():
        raise SealedViewError(
            "sealed.key_missing",
            N_("the pseudonym key of %(release)s (%(path)s) is missing: the view's pseudonyms would not be the"
               " release's"), release=release, path=str(path))
    return keys.release_key(secrets_dir, contract, release)


def _fitted(df, schema, release: str, table: str):
    """``df``'s columns in the release's order; a column missing on either side is refused."""
    missing = [c for c in schema.names if c not in df.columns]
    extra = [c for c in df.columns if c not in schema.names]
    if missing or extra:
        raise _misfit(release, table, f"release columns not in the raw rows: {missing}; raw columns not in the"
                                      f" release: {extra}")
    return df[list(schema.names)]


def _misfit(release: str, table: str, problem: str) -> SealedViewError:
    return SealedViewError("sealed.schema_mismatch", N_("table '%(table)s' of %(release)s: the raw rows do not fit the"
                                                        " release's schema (%(problem)s)"),
                           table=table, release=release, problem=problem)


# -- checking it ----------------------------------------------------------------------------------------


def read_manifest(holder_dir: Path, release: str) -> dict:
    path = sealed_dir(holder_dir, release) / MANIFEST
    if not path.is_file():
        raise SealedViewError("sealed.not_built", N_("the sealed view of %(release)s is not built (enclave data"
                                                     " sealed-view %(release)s)"), release=release)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SealedViewError("sealed.manifest_unreadable", N_("the manifest of the sealed view of %(release)s"
                                                               " (%(path)s) is unreadable: %(problem)s"),
                              release=release, path=str(path), problem=str(exc)) from None


def check(settings: HolderSettings, release: str) -> list[Message]:
    """Problems found re-hashing ``release``'s sealed view against its manifest, and checking that
    only root can read it and that the release is still the one it was made for; empty when intact."""
    folder = sealed_dir(settings.holder_dir, release)
    manifest = read_manifest(settings.holder_dir, release)
    problems = []
    if manifest.get("release") != release:
        problems.append(Message("sealed.check.other_release", N_("the manifest names release '%(named)s', not"
                                                                 " '%(release)s'"),
                                {"named": manifest.get("release"), "release": release}))
    listed: dict[str, str] = manifest.get("files", {})
    data = folder / DATA
    present = {f"{DATA}/{p.name}" for p in data.iterdir()} if data.is_dir() else set()
    for path in sorted(present - set(listed)):
        problems.append(Message("sealed.check.unlisted", N_("%(path)s: not listed in the manifest"), {"path": path}))
    for path, digest in sorted(listed.items()):
        if path not in present:
            problems.append(Message("sealed.check.missing", N_("%(path)s: missing"), {"path": path}))
        elif store.sha256_file(folder / path) != digest:
            problems.append(Message("sealed.check.differs", N_("%(path)s: content differs from the manifest"
                                                               " (sha256)"), {"path": path}))
    if store.content_hash(listed) != manifest.get("content_hash"):
        problems.append(Message("sealed.check.content_hash", N_("the content hash in the manifest does not match its"
                                                                " file list"), {}))
    for path in [folder, *sorted(folder.rglob("*"))]:
        st = path.lstat()
        if st.st_uid != 0 or st.st_mode & 0o077:
            problems.append(Message("sealed.check.readable", N_("%(path)s can be read by others than root (owner uid"
                                                                " %(uid)s, mode %(mode)s)"),
                                    {"path": str(path), "uid": st.st_uid, "mode": oct(st.st_mode & 0o777)}))
    try:
        now = store.manifest(settings.release_store, release).get("content_hash")
    except store.StoreError:
        now = None
    if now != manifest.get("release_content_hash"):
        problems.append(Message("sealed.check.release_changed", N_("release %(release)s has content hash %(now)s; the"
                                                                   " view was made from %(then)s"),
                                {"release": release, "now": now or "-", "then": manifest.get("release_content_hash")}))
    return problems


# -- a workspace's sealed view -------------------------------------------------------------------------


def for_workspace(settings: Settings, workspace: str, release: str) -> WorkspaceSealedView:
    """The sealed view of ``release`` for ``workspace``: the columns the workspace was granted of the
    release (all of them when it was attached whole), as :func:`workspace_view` makes it."""
    from enclave import workspaces

    view = workspaces.get(settings, workspace)
    if release not in view.releases:
        raise SealedViewError(
            "sealed.not_attached",
            N_("release '%(release)s' is not attached to workspace '%(workspace)s': a sealed view is given only with"
               " the columns a workspace was granted"), release=release, workspace=workspace)
    return workspace_view(settings, workspace, release, view.views.get(release))


def workspace_view(settings: HolderSettings, workspace: str, release: str,
                   selection: dict[str, list[str]] | None) -> WorkspaceSealedView:
    """``selection``'s columns of ``release``'s sealed view (``None``: all), laid out as the
    workspace's view of the release (:func:`enclave.supply.build_view`), so a notebook reads the same
    paths under ``/data/<release>``. Made again when the selection or the sealed view changed."""
    from enclave import supply

    if not WORKSPACE_NAME.match(workspace):
        raise SealedViewError("sealed.bad_workspace", N_("'%(workspace)s' is not a workspace name"),
                              workspace=workspace)
    manifest = read_manifest(settings.holder_dir, release)
    problems = check(settings, release)
    if problems:
        raise SealedViewError("sealed.damaged", N_("the sealed view of %(release)s does not match its manifest:"
                                                   " %(problems)s (rebuild it: enclave data sealed-view %(release)s)"),
                              release=release, problems="; ".join(map(str, problems)))
    folder = sealed_dir(settings.holder_dir, release)
    source = folder / DATA
    if selection is not None:
        unknown = [f"{t}.{c}" for t, cols in selection.items() for c in cols
                   if c not in manifest["tables"].get(t, {}).get("columns", [])]
        if unknown:
            raise SealedViewError("sealed.unknown_columns", N_("the sealed view of %(release)s has no column(s)"
                                                               " %(columns)s"), release=release,
                                  columns=", ".join(unknown))
    root = folder / WORKSPACES
    target, record_path = root / workspace, root / f"{workspace}.json"
    wanted = {"workspace": workspace, "release": release, "columns": selection,
              "sealed_content_hash": manifest["content_hash"]}
    _private_dir(root)
    with _locked(root):
        if record_path.is_file() and target.is_dir():
            made = json.loads(record_path.read_text(encoding="utf-8"))
            if {k: made.get(k) for k in wanted} == wanted and made.get("content_hash") == _hash_files(target):
                return WorkspaceSealedView(workspace, release, target, made["content_hash"], selection)
        tmp = Path(tempfile.mkdtemp(prefix=f".{workspace}.", suffix=".partial", dir=root))
        try:
            if selection is None:
                # Attached whole: the workspace sees the release's data/ folder as it is.
                for p in sorted(source.iterdir()):
                    shutil.copyfile(p, tmp / p.name)
            else:
                lines = [f"Sealed column view of release {release} for workspace {workspace} (minimum necessary).",
                         ""]
                if "GENERATED DATA" in (source / "README.txt").read_text(encoding="utf-8"):
                    lines += ["GENERATED DATA: every person and enterprise in this source is made up.", ""]
                lines += supply.cut_columns(source, tmp, selection)
                (tmp / "README.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
            digest = _hash_files(tmp)
            _make_private(tmp)
            _replace(tmp, target)
        except BaseException:
            _remove(tmp)
            raise
        record = {**wanted, "content_hash": digest, "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
        atomic_write(record_path, json.dumps(record, indent=2, ensure_ascii=False))
    return WorkspaceSealedView(workspace, release, target, digest, selection)


def _hash_files(root: Path) -> str:
    """The same hash as a workspace's view of a release (:func:`enclave.supply._hash_files`)."""
    return store.content_hash({p.name: store.sha256_file(p) for p in sorted(root.iterdir()) if p.is_file()})


# -- files that only root reads ---------------------------------------------------------------------


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)


def _make_private(root: Path) -> None:
    for dirpath, _dirs, filenames in os.walk(root):
        os.chmod(dirpath, 0o700)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o600)


def _replace(new: Path, target: Path) -> None:
    """Put the finished folder ``new`` at ``target``, replacing what was there."""
    if target.exists():
        _replace_with_nothing(target)
    os.rename(new, target)


def _replace_with_nothing(target: Path) -> None:
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    os.rename(target, old / target.name)
    _remove(old)


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One change at a time under ``folder`` (its ``.lock``, 0600)."""
    fd = os.open(folder / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
