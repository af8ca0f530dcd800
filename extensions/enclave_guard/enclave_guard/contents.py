"""The contents manager: the home is the only place, text is the only content, notebooks are budgeted.

Stock jupyter_server follows symlinks out of ``root_dir`` in the contents API and returns any file
as base64; this manager resolves every path to its real location first and refuses anything
outside the home, serves content only for notebooks and code/text files under a size cap, and
accepts from the browser only notebooks and code/text files under the upload cap. A read is output:
it is held to one execution's budget (``output_cell_max_kb``; a notebook's outputs are withheld, the
last cells' first, before the notebook is refused) and charged to the operator's egress budget, like
a directory listing.

Each refusal has a stable code (``guard.upload_too_large``) and its text in the operator's language
(:mod:`.messages`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from . import policy
from .audit import RecordNotTaken
from .messages import N_
from .outputs import limit_notebook, withhold_outputs
from .refusals import Refusal


def _parent(path: str) -> str:
    path = path.strip("/")
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _openable(path: str) -> bool:
    return policy.is_text_path(path) or policy.is_notebook_path(path)


def _served(model: dict) -> bytes:
    """The content of a model as it goes to or comes from the browser, as bytes."""
    content = model["content"]
    return (json.dumps(content, sort_keys=True) if isinstance(content, dict) else content).encode("utf-8", "replace")


def _size_and_hash(data: bytes) -> dict:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


class Refused(Refusal, PermissionError):
    """A contents request the guard refuses: a status, a stable code, the English text and its params.

    Also a PermissionError so that directory listings, which skip entries raising OSError,
    leave out what points outside the home instead of failing.
    """

    def __init__(self, status: int, code: str, text: str, **params):
        Refusal.__init__(self, status, code, text, **params)


class GuardContentsManager(AsyncLargeFileManager):
    # Set by the server extension when it loads; until then every request is refused.
    guard = None

    def _settings(self) -> policy.GuardSettings:
        if self.guard is None:
            raise Refused(503, "guard.not_loaded", N_("the Enclave guard is not loaded"))
        return self.guard.workspace.guard

    # -- where -------------------------------------------------------------------------------

    def _real_inside(self, path: str) -> str:
        """The OS path of ``path`` after resolving every symlink, which must stay in the home."""
        os_path = self._get_os_path(path.strip("/"))
        real = os.path.realpath(os_path)
        root = os.path.realpath(self.root_dir)
        if real != root and not real.startswith(root + os.sep):
            raise Refused(404, "guard.outside_home", N_("%(path)s: not in the workspace home"), path=path)
        return real

    # -- reads -------------------------------------------------------------------------------

    async def get(self, path, content=True, type=None, format=None, require_hash=False):
        settings = self._settings()
        real = self._real_inside(path)
        if not content or os.path.isdir(real):
            model = await super().get(path, content=content, type=type, format=format, require_hash=require_hash)
            # A listing: its names are shown in the browser too. (Refused past the budget, not recorded:
            # JupyterLab asks for one every few seconds.)
            if content and not (decision := self.guard.egress.admit(
                    "contents_read", len(json.dumps(model["content"], default=str)))).allowed:
                raise Refused(403, "guard.listing_held", N_("%(path)s: not listed: %(held)s"),
                              path=path.strip("/") or "/", held=decision.held)
            return model
        if format == "base64":
            raise Refused(403, "guard.binary_not_served",
                          N_("%(path)s: file content is not served in binary form; use it from a notebook"), path=path)
        notebook = policy.is_notebook_path(path)
        if type == "notebook" and not notebook:
            # Reading data.csv "as a notebook" would put its first bytes in the parse error.
            raise Refused(403, "guard.not_a_notebook", N_("%(path)s: only .ipynb files are opened as notebooks"),
                          path=path)
        if not notebook and not policy.is_text_path(path):
            raise Refused(403, "guard.type_not_opened",
                          N_("%(path)s: files of type '%(type)s' are not opened in the browser; read them from a"
                             " notebook, or request an export"), path=path, type=policy.suffix_of(path) or "none")
        size = os.stat(real).st_size
        if size > settings.read_max_bytes:
            raise Refused(403, "guard.read_too_large",
                          N_("%(path)s: %(size)s bytes is over the %(limit_mib)s MiB limit for opening files"),
                          path=path, size=size, limit_mib=settings.read_max_mb)
        model = await super().get(
            path, content=True, type=type, format=None if notebook else "text", require_hash=require_hash
        )
        if model["type"] == "notebook":
            limit_notebook(model["content"], settings.output_message_max_bytes, settings.output_cell_max_bytes)
            withhold_outputs(model["content"], settings.output_cell_max_bytes)
        elif model.get("format") != "text":
            raise Refused(403, "guard.not_text", N_("%(path)s: only text content is served"), path=path)
        served = _served(model)
        # One read is one execution's output: a file copied from a release into res.txt, or carried
        # in a notebook's Markdown and metadata, shows no more than a cell could have shown.
        if len(served) > settings.output_cell_max_bytes:
            refused = Refused(403, "guard.read_over_cell_budget",
                              N_("%(path)s: %(size)s bytes is over this workspace's budget of %(budget_kib)s KiB"
                                 " for one read (what one cell may show); read it from a notebook, or request an"
                                 " export"), path=path, size=f"{len(served):,}", budget_kib=settings.output_cell_max_kb)
            self._record("contents.read", outcome="denied", path=path, reason=str(refused.message),
                         code=refused.message.code, **_size_and_hash(served))
            raise refused
        decision = self.guard.egress.admit("contents_read", len(served))
        if not decision.allowed:
            self._record("contents.read", outcome="denied", path=path, reason=str(decision.held),
                         code="guard.read_held", **_size_and_hash(served))
            raise Refused(403, "guard.read_held", N_("%(path)s: not shown: %(held)s"), path=path,
                          held=decision.held)
        self._record("contents.read", path=path, **_size_and_hash(served))
        return model

    # -- writes ------------------------------------------------------------------------------

    async def save(self, model, path=""):
        settings = self._settings()
        self._real_inside(path)
        self._real_inside(_parent(path))
        if model.get("chunk") is not None:
            raise Refused(403, "guard.chunked_upload",
                          N_("%(path)s: chunked uploads are refused; files over the upload limit stay out"), path=path)
        kind = model.get("type")
        if kind == "notebook":
            if not policy.is_notebook_path(path):
                raise Refused(403, "guard.notebook_suffix", N_("%(path)s: notebooks are saved only as .ipynb files"),
                              path=path)
            content = model.get("content")
            if content is not None:
                limit_notebook(content, settings.output_message_max_bytes, settings.output_cell_max_bytes)
                size = len(json.dumps(content))
                if size > settings.upload_max_bytes:
                    raise Refused(413, "guard.notebook_too_large",
                                  N_("%(path)s: notebook of %(size)s bytes is over the %(limit_mib)s MiB limit"),
                                  path=path, size=size, limit_mib=settings.upload_max_mb)
        elif kind == "file":
            if not policy.is_text_path(path):
                raise Refused(403, "guard.upload_type_refused",
                              N_("%(path)s: files of type '%(type)s' cannot be uploaded or written from the browser;"
                                 " allowed: notebooks and %(allowed)s"),
                              path=path, type=policy.suffix_of(path) or "none",
                              allowed=", ".join(sorted(policy.TEXT_SUFFIXES)))
            if model.get("content") is not None:
                model = {**model, "content": self._as_text(path, model), "format": "text"}
                size = len(model["content"].encode("utf-8"))
                if size > settings.upload_max_bytes:
                    raise Refused(413, "guard.upload_too_large",
                                  N_("%(path)s: %(size)s bytes is over the %(limit_mib)s MiB upload limit"),
                                  path=path, size=size, limit_mib=settings.upload_max_mb)
        elif kind != "directory":
            raise Refused(400, "guard.unknown_content_type", N_("%(path)s: unknown content type '%(type)s'"),
                          path=path, type=str(kind))
        if model.get("content") is not None and kind != "directory":
            self._record("contents.save", path=path, **_size_and_hash(_served(model)))
        return await super().save(model, path)

    @staticmethod
    def _as_text(path: str, model: dict) -> str:
        content = model["content"]
        if model.get("format") != "base64":
            if not isinstance(content, str):
                raise Refused(400, "guard.text_not_string", N_("%(path)s: text content must be a string"), path=path)
            return content
        # The file browser uploads every file as base64; code and text are accepted as text.
        try:
            return base64.b64decode(content, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise Refused(403, "guard.not_utf8", N_("%(path)s: only UTF-8 text may be uploaded"), path=path) from None

    async def rename_file(self, old_path, new_path):
        real = self._real_inside(old_path)
        self._real_inside(_parent(new_path))
        # Renaming data.csv to data.txt would make it readable in the browser, and back again.
        if not os.path.isdir(real) and _openable(old_path) != _openable(new_path):
            raise Refused(403, "guard.rename_changes_openable",
                          N_("%(path)s -> %(new_path)s: a rename cannot change whether the browser may open a file"),
                          path=old_path, new_path=new_path)
        self._record("contents.rename", path=old_path, new_path=new_path)
        return await super().rename_file(old_path, new_path)

    async def delete_file(self, path):
        self._real_inside(path)
        self._record("contents.delete", path=path)
        return await super().delete_file(path)

    def _record(self, action: str, outcome: str = "ok", **detail) -> None:
        """Into the audit log before it happens; without its record, it does not happen. Paths
        relative to the home, as the browser names them (the API may send a leading '/')."""
        for key in ("path", "new_path"):
            if key in detail:
                detail[key] = detail[key].strip("/")
        try:
            self.guard.audit.write(action, outcome, **detail)
        except RecordNotTaken as exc:
            raise Refused(503, "guard.audit_unavailable",
                          N_("%(path)s: not done, as the audit log cannot record it (%(error)s)"),
                          path=detail["path"], error=str(exc)) from None

    async def copy(self, from_path, to_path=None):
        real = self._real_inside(from_path)
        if os.path.isdir(real):
            # shutil.copytree would copy what symlinks inside the folder point to.
            raise Refused(403, "guard.folder_copy", N_("%(path)s: folders cannot be copied from the browser"),
                          path=from_path)
        # Files are copied through get() and save(), so both policies apply.
        return await super().copy(from_path, to_path)

    # -- checkpoints: same rules (a checkpoint is a copy of the file) -------------------------

    async def create_checkpoint(self, path):
        self._real_inside(path)
        return await super().create_checkpoint(path)

    async def restore_checkpoint(self, checkpoint_id, path):
        self._real_inside(path)
        return await super().restore_checkpoint(checkpoint_id, path)

    async def list_checkpoints(self, path):
        self._real_inside(path)
        return await super().list_checkpoints(path)

    async def delete_checkpoint(self, checkpoint_id, path):
        self._real_inside(path)
        return await super().delete_checkpoint(checkpoint_id, path)
