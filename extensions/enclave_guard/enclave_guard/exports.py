"""Export requests, assembled by the server: the bytes, their SHA-256 and where they came from.

The browser names files; the server reads them from the home (same realpath rule as the contents
API), snapshots their bytes and hashes, and adds provenance nobody types: workspace, user, path,
the executions that wrote the file when the execution record knows them, the releases mounted in
/data and the package environment. ACRO's ``results.json`` travels with an output it describes.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from importlib import metadata

from tornado import web

from .messages import N_
from .refusals import Refusal

ACRO_RESULTS = "results.json"
MAX_FILES = 20
MAX_JUSTIFICATION = 4000


class ExportError(Refusal):
    """An export request the guard refuses before it reaches review: a status, a stable code, the
    English text and its params."""

    def __init__(self, status: int, code: str, text: str, **params):
        super().__init__(status, code, text, reason="Export refused", **params)


def package_environment() -> dict[str, str]:
    """Names and versions of the Python packages the operator's code ran with."""
    return {d.metadata["Name"].lower(): d.version for d in metadata.distributions() if d.metadata["Name"]}


@dataclass
class Snapshot:
    name: str
    path: str
    data: bytes
    role: str  # "output", or "acro-results" for ACRO's record of an output

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def as_json(self) -> dict:
        return {"name": self.name, "path": self.path, "sha256": self.sha256, "size": len(self.data), "role": self.role}


@dataclass(frozen=True)
class ReadingRefusals:
    """How a refusal to read a file of the home is worded for one purpose. Export requests and sealed
    runs read the home by the same rules (:func:`read_home_file`) but refuse in their own words and
    codes: each rule's ``(code, English text)``, and the refusal class that carries them. The texts
    take ``path``; ``unreadable`` also ``error``, ``too_large`` ``size`` and ``limit``,
    ``grew_too_large`` ``limit``."""

    error: type[Refusal]
    no_such_file: tuple[str, str]
    unreadable: tuple[str, str]
    not_a_file: tuple[str, str]
    too_large: tuple[str, str]
    grew_too_large: tuple[str, str]


def read_home_file(contents_manager, path: str, max_bytes: int, refusals: ReadingRefusals) -> bytes:
    """The bytes of the regular file at ``path`` in the home: every symlink resolved and the result
    inside the home (the contents API's rule), never a folder, never more than ``max_bytes``."""
    real = contents_manager._real_inside(path)

    def refuse(status: int, rule: tuple[str, str], **params) -> Refusal:
        return refusals.error(status, rule[0], rule[1], path=path, **params)

    try:
        # O_NOFOLLOW: the path was resolved above; a symlink swapped in since is not followed.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise refuse(404, refusals.no_such_file) from None
    except OSError as exc:
        raise refuse(403, refusals.unreadable, error=exc.strerror) from None
    try:
        # Looked at before a file object is made of it: Python refuses to make one of a folder.
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refuse(400, refusals.not_a_file)
        if st.st_size > max_bytes:
            raise refuse(413, refusals.too_large, size=st.st_size, limit=max_bytes)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise refuse(413, refusals.grew_too_large, limit=max_bytes)
    return data


EXPORT_READING = ReadingRefusals(
    error=ExportError,
    no_such_file=("guard.export.no_such_file", N_("%(path)s: no such file")),
    unreadable=("guard.export.unreadable", N_("%(path)s: cannot be read (%(error)s)")),
    not_a_file=("guard.export.not_a_file", N_("%(path)s: only files can be exported, not folders")),
    too_large=("guard.export.too_large", N_("%(path)s: %(size)s bytes is over the export limit of %(limit)s bytes")),
    grew_too_large=("guard.export.grew_too_large", N_("%(path)s: over the export limit of %(limit)s bytes")),
)


def _acro_results_for(contents_manager, path: str, names: set[str], max_bytes: int) -> Snapshot | None:
    """ACRO's results.json next to an output, when it describes that output (by any of ``names``)."""
    folder = path.rsplit("/", 1)[0] if "/" in path else ""
    results_path = f"{folder}/{ACRO_RESULTS}" if folder else ACRO_RESULTS
    try:
        data = read_home_file(contents_manager, results_path, max_bytes, EXPORT_READING)
        doc = json.loads(data)
    except (web.HTTPError, ValueError):
        return None
    entries = doc.get("results", {}) if isinstance(doc, dict) else {}
    described = {
        fe.get("name")
        for entry in entries.values() if isinstance(entry, dict)
        for fe in entry.get("files") or [] if isinstance(fe, dict)
    }
    return Snapshot(ACRO_RESULTS, results_path, data, "acro-results") if names & described else None


def _home_path(raw) -> str:
    """A path in the home as the browser names it; hidden files and folders are refused."""
    if not isinstance(raw, str) or not raw.strip("/"):
        raise ExportError(400, "guard.export.no_path", N_("each file must be named by its path in the home"))
    path = raw.strip("/")
    if any(part.startswith(".") for part in path.split("/")):
        raise ExportError(403, "guard.export.hidden_file", N_("%(path)s: hidden files cannot be exported"), path=path)
    return path


def _snapshot_all(contents_manager, pairs: list[tuple[str, str]], max_bytes: int) -> list[Snapshot]:
    """Each ``(name, path)``: the file at ``path`` in the home, sent as ``name``, with ACRO's record of it."""
    if len(pairs) > MAX_FILES:
        raise ExportError(400, "guard.export.too_many_files", N_("at most %(max)s files per export request"),
                          max=MAX_FILES)
    snaps: list[Snapshot] = []
    for name, path in pairs:
        if any(s.name == name for s in snaps):
            raise ExportError(400, "guard.export.duplicate_name",
                              N_("two files named '%(name)s': export them in separate requests"), name=name)
        snaps.append(Snapshot(name, path, read_home_file(contents_manager, path, max_bytes, EXPORT_READING), "output"))
        if name != ACRO_RESULTS:
            acro = _acro_results_for(contents_manager, path, {name, path.rsplit("/", 1)[-1]}, max_bytes)
            if acro is not None and not any(s.name == ACRO_RESULTS for s in snaps):
                snaps.append(acro)
    return snaps


def snapshot(contents_manager, paths: list, max_bytes: int) -> list[Snapshot]:
    """The files a new export request names, read from the home."""
    if not isinstance(paths, list) or not paths:
        raise ExportError(400, "guard.export.no_paths", N_("'paths' must be a non-empty list of file paths"))
    pairs = []
    for raw in paths:
        path = _home_path(raw)
        pairs.append((path.rsplit("/", 1)[-1], path))
    return _snapshot_all(contents_manager, pairs, max_bytes)


def snapshot_versions(contents_manager, versions, request: dict, max_bytes: int) -> list[Snapshot]:
    """New versions of files of ``request`` (the review service's view of it): ``versions`` is a list
    of ``{"name": <a file of the request>, "path": <the file in the home that replaces it>}``. Read
    from the home by the same rules as a first submission; each is sent under the request's name
    for the file, so the review service records it as that file's next version."""
    if not isinstance(versions, list) or not versions:
        raise ExportError(400, "guard.export.no_versions",
                          N_("'files' must be a non-empty list of {\"name\": <file of the request>, \"path\": <file"
                             " in the home>}"))
    current = {f["name"] for f in request.get("files", [])}
    pairs = []
    for item in versions:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ExportError(400, "guard.export.bad_version",
                              N_("each new version must be {\"name\": <file of the request>, \"path\": <file in the"
                                 " home>}"))
        if item["name"] not in current:
            raise ExportError(400, "guard.export.not_a_file_of_the_request",
                              N_("'%(name)s' is not a file of this export request (its files: %(files)s)"),
                              name=item["name"], files=", ".join(sorted(current)))
        pairs.append((item["name"], _home_path(item.get("path"))))
    return _snapshot_all(contents_manager, pairs, max_bytes)


def justification_of(body: dict) -> str:
    text = body.get("justification")
    if not isinstance(text, str) or not text.strip():
        raise ExportError(400, "guard.export.no_justification",
                          N_("a justification is required: say what the output is and why it must leave"))
    if len(text) > MAX_JUSTIFICATION:
        raise ExportError(400, "guard.export.justification_too_long",
                          N_("the justification is over %(max)s characters"), max=MAX_JUSTIFICATION)
    return text.strip()


def manifest(guard, snaps: list[Snapshot]) -> dict:
    """The intake manifest: each file's SHA-256 and the provenance captured for it."""
    ws = guard.workspace
    return {"files": {
        s.name: {
            "sha256": s.sha256,
            "provenance": {
                "workspace": ws.workspace,
                "user": ws.user,
                "path": s.path,
                "role": s.role,
                "releases": list(ws.releases),
                "executions": [
                    {k: e[k] for k in ("time", "user", "kernel_id", "msg_id", "notebook", "code")}
                    for e in guard.audit.executions_mentioning(s.path.rsplit("/", 1)[-1])
                ],
                "packages": guard.packages,
            },
        }
        for s in snaps
    }}


def title_for(snaps: list[Snapshot]) -> str:
    names = ", ".join(s.name for s in snaps if s.role == "output")
    return (f"Export of {names}")[:200]
