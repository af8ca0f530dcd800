"""Sealed runs, assembled by the server: "Run on real data…" from JupyterLab (issue #18).

A sealed run executes one of the operator's notebooks on the real data, in the data holder's domain
(a sandbox of its own, started by the export review service on the hub side); what it produces
leaves only through export review. The operator names a release, the notebook, the inputs it reads
(code, parameters) and the outputs it will write; the server reads the notebook and the inputs from
the home by the rules export files are read by (:func:`.exports.read_home_file`: inside the home
once every symlink is resolved, regular files only, within the workspace's export size limit;
hidden files refused), hashes them and hands them to the service's intake
(:meth:`.intake.Intake.submit_sealed_run`). A request the guard refuses sends nothing.

Nothing that depends on the real data may reach the operator before review. The service shows a
run only as its state (``queued``, ``awaiting_approval``, ``running``, ``ended``: the same word for
success and failure) or ``refused`` with a reason (the data holder's, or the synthetic pre-run's
error, which depends only on what the operator already sees) or ``withdrawn``; :func:`shown` keeps
that and only that of whatever the service answers, so a field added on the hub side does not reach
the browser unless this module is changed to let it through.
"""

from __future__ import annotations

import hashlib

from .exports import ReadingRefusals, read_home_file
from .messages import N_
from .refusals import Refusal

NOTEBOOK_SUFFIX = ".ipynb"
# As many inputs as an export request has files: a run reads a few code and parameter files, and
# each is held in the server's memory until it is sent.
MAX_INPUTS = 20
MAX_OUTPUTS = 50
MAX_RELEASE_NAME = 200
# The states the operator may see (enclave.sealed.workflow.OPERATOR_STATES), and those a run may
# still be withdrawn from.
STATES = ("queued", "awaiting_approval", "running", "ended", "refused", "withdrawn")
WITHDRAWABLE = ("queued", "awaiting_approval")


class SealedRunError(Refusal):
    """A sealed run the guard refuses before anything reaches the service: a status, a stable code
    (``guard.sealed_run.*``), the English text and its params."""

    def __init__(self, status: int, code: str, text: str, **params):
        super().__init__(status, code, text, reason="Sealed run refused", **params)


READING = ReadingRefusals(
    error=SealedRunError,
    no_such_file=("guard.sealed_run.no_such_file", N_("%(path)s: no such file")),
    unreadable=("guard.sealed_run.unreadable", N_("%(path)s: cannot be read (%(error)s)")),
    not_a_file=("guard.sealed_run.not_a_file",
                N_("%(path)s: is a folder; a sealed run takes the notebook and its inputs as files")),
    too_large=("guard.sealed_run.too_large",
               N_("%(path)s: %(size)s bytes is over the limit of %(limit)s bytes for a sealed run's files")),
    grew_too_large=("guard.sealed_run.grew_too_large",
                    N_("%(path)s: over the limit of %(limit)s bytes for a sealed run's files")),
)


def home_path(raw) -> str:
    """A path in the home as the browser names it (a leading '/' means the home): refused when it
    is empty, steps out with '..', or names a hidden file or folder."""
    if not isinstance(raw, str) or not raw.strip("/"):
        raise SealedRunError(400, "guard.sealed_run.no_path",
                             N_("the notebook, each input and each output must be named by its path in your home"))
    path = raw.strip("/")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts) or any(ord(c) < 32 for c in path):
        raise SealedRunError(400, "guard.sealed_run.bad_path",
                             N_("%(path)s: not a plain path inside your home"), path=path)
    if any(part.startswith(".") for part in parts):
        raise SealedRunError(403, "guard.sealed_run.hidden_file",
                             N_("%(path)s: hidden files and folders cannot be part of a sealed run"), path=path)
    return path


def _paths(body: dict, key: str, most: int) -> list[str]:
    raw = body.get(key, [])
    if not isinstance(raw, list):
        raise SealedRunError(400, "guard.sealed_run.not_a_list", N_("'%(key)s' must be a list of paths in your home"),
                             key=key)
    if len(raw) > most:
        raise SealedRunError(400, "guard.sealed_run.too_many_paths",
                             N_("at most %(max)s paths in '%(key)s'"), key=key, max=most)
    paths: list[str] = []
    for item in raw:
        path = home_path(item)
        if path in paths:
            raise SealedRunError(400, "guard.sealed_run.named_twice", N_("%(path)s: named twice"), path=path)
        paths.append(path)
    return paths


def submission(contents_manager, body: dict, max_bytes: int) -> tuple[dict, list[tuple[str, bytes]]]:
    """The intake's ``request`` and files for a "Run on real data…" body ``{"release", "notebook",
    "inputs", "outputs"}``: the notebook and each input read from the home now (the run uses these
    bytes, whatever happens to the files later), with their SHA-256 in the manifest."""
    release = body.get("release")
    if not isinstance(release, str) or not release.strip() or len(release) > MAX_RELEASE_NAME:
        raise SealedRunError(400, "guard.sealed_run.no_release",
                             N_("choose the release the notebook is to run on"))
    notebook = home_path(body.get("notebook"))
    if not notebook.endswith(NOTEBOOK_SUFFIX):
        raise SealedRunError(400, "guard.sealed_run.not_a_notebook",
                             N_("%(path)s: only notebooks (.ipynb) run on the real data"), path=notebook)
    inputs = _paths(body, "inputs", MAX_INPUTS)
    if notebook in inputs:
        raise SealedRunError(400, "guard.sealed_run.notebook_as_input",
                             N_("%(path)s: the notebook is sent anyway; it is not also an input"), path=notebook)
    outputs = _paths(body, "outputs", MAX_OUTPUTS)
    files = [(path, read_home_file(contents_manager, path, max_bytes, READING)) for path in (notebook, *inputs)]
    run = {
        "release": release.strip(),
        "notebook": notebook,
        "inputs": inputs,
        "outputs": outputs,
        "manifest": {path: hashlib.sha256(data).hexdigest() for path, data in files},
    }
    return run, files


def _refusal(doc) -> dict | None:
    """Why a run was refused, as the operator reads it: the service's ``message`` (in the operator's
    language), else its English text filled with its params."""
    if not isinstance(doc, dict):
        return None
    params = doc.get("params") if isinstance(doc.get("params"), dict) else {}
    text = doc.get("text") if isinstance(doc.get("text"), str) else ""
    message = doc.get("message")
    if not isinstance(message, str) or not message:
        try:
            message = text % params if params else text
        except (KeyError, TypeError, ValueError):
            message = text
    return {"code": doc.get("code"), "text": text, "params": params, "message": message}


def shown(run: dict) -> dict:
    """What the Exports panel shows of a run: its id, release, notebook, when it was submitted, its
    state, the reason it was refused, and whether it may still be withdrawn. Nothing else the
    service may answer is passed on (see the module's docstring); a state outside those the operator
    may see is shown as ``running``, as the service itself shows its synthetic pre-run."""
    state = run.get("state")
    out = {
        "id": run.get("id"),
        "release": run.get("release"),
        "notebook": run.get("notebook"),
        "submitted_at": run.get("submitted_at"),
        "state": state if state in STATES else "running",
        "withdrawable": state in WITHDRAWABLE,
    }
    if state == "refused":
        out["refusal"] = _refusal(run.get("refusal"))
    return out

