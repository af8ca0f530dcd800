"""The sealed-run runner: one operator's notebook executed headless on a data folder, in a sandbox
of its own, with only its executed notebook and chosen outputs collected (issue #18).

The service around it (queue, per-day limits, the holder's approval, the synthetic pre-run, export
requests from the results, the audit records) calls :func:`run` with a :class:`RunRequest` and gets
an :class:`Outcome`; nothing else of a run is kept. One run, as root on the hub's host:

1. The request is checked (:func:`check_request`): names, the uid (the run's own, from
   :func:`sealed_run_uid`'s range, below every workspace sandbox's, and running nothing), paths of
   the notebook, inputs and outputs (relative, no ``..``, no duplicates, nothing in the run's own
   ``.sealed-run/`` folder), the notebook (a Jupyter notebook), the limits. A request that fails a
   check ends as ``refused``, with the reason's code and text, before anything is made.
2. The run's folder ``run_dir/sealed/<run id>`` (root's, 0700) gets a copy of the data folder, read-only
   for the run's uid alone and hashed as it is copied (the sealed view is root's 0600: the copy is
   what the run reads, and its hash is the provenance of exactly that); and a home on a disk image of
   ``disk_mb`` (:mod:`enclave.sandbox.home_image`: the host's kernel stops a write past the quota
   with ENOSPC, the image is preallocated so filling it takes nothing more from the host, and it is
   mounted ``noexec``; a tmpfs would have been counted against memory and filled by the host before
   the start all the same). The notebook and the inputs are written into it, and nothing else.
3. The sandbox (:func:`enclave.sandbox.policy.sealed_run_policy`: no network, no socket, the data
   read-only at ``/data/<release>``) is started with the host's backend (``settings.sandbox.backend``:
   bubblewrap, or a container of ``settings.sandbox.image``), in a cgroup of the run's memory, pids
   and CPU limits, with rlimits as every sandbox has them. Past ``limits.seconds`` it is killed, and
   the run ends as ``timed_out`` with nothing collected but the fact.
4. Once every process of the run is gone, only the executed notebook and the selected outputs are
   read from the home: each opened a path component at a time without following a link, only if it
   is a regular file, at most ``limits.output_max_mb``. Then the home is unmounted and the run's
   folder, image and data copy removed.

The run's state and error come from the driver in the sandbox (its exit code and result file) or
from the executed notebook; both run beside the operator's code as the same uid, so that code could
forge them, as it could catch its own exceptions: they say what happened to reviewers, who see the
notebook, never to the operator before review.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

from ..i18n import Message, N_
from ..refusals import Refusal
from ..sandbox import bubblewrap
from ..sandbox.home_image import HomeImageError, mount_home, unmount_home
from ..sandbox.limits import CGROUP_ROOT, PARENT, SandboxCgroup
from ..sandbox.policy import (
    SEALED_EXECUTED,
    SEALED_RESULT,
    SEALED_RUN_FOLDER,
    Identity,
    Limits,
    sealed_run_policy,
)

if TYPE_CHECKING:
    from ..settings import Settings

State = Literal["succeeded", "failed", "timed_out", "refused"]
DataKind = Literal["sealed_view", "synthetic_release"]

# Sealed runs take their uids from the SEALED_RUN_UIDS uids just below sandbox.uid_base: workspace
# sandboxes have uid_base + their server's id, so no run ever shares a uid with one.
SEALED_RUN_UIDS = 10_000
RUN_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
WORKSPACE = re.compile(r"^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$|^[a-z0-9]$")
USER = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
RELEASE = re.compile(r"^([a-z0-9][a-z0-9_.-]{0,99})@([A-Za-z0-9][A-Za-z0-9_.-]{0,49})$")
# How much of the run's own output (the driver's and the kernel's stderr) is kept for reviewers.
LOG_MAX_BYTES = 64 * 1024
# How long a killed sandbox is given to be gone before its cgroup is emptied by force.
KILL_GRACE_SECONDS = 10


class SealedRunRefusal(Refusal):
    """A run that is not started, with the reason (a stable code and its text)."""


@dataclass(frozen=True)
class RunLimits:
    """``seconds``: the whole run, from the sandbox's start (then it is killed); ``cell_seconds``:
    each cell (default: the whole run's); ``memory_mb`` (no swap), ``disk_mb`` (the home's hard
    quota, inputs included), ``cpus``, ``pids``, ``tmp_mb`` (the sandbox's /tmp, counted against its
    memory); ``output_max_mb``: the most collected of one file, the executed notebook included."""

    seconds: int
    memory_mb: int
    disk_mb: int
    cell_seconds: int | None = None
    cpus: float = 1.0
    pids: int = 256
    tmp_mb: int = 256
    output_max_mb: int = 16

    def sandbox_limits(self) -> Limits:
        # A file can be no larger than the home, nor than /tmp.
        return Limits(memory_mb=self.memory_mb, pids=self.pids, cpus=self.cpus,
                      max_file_mb=max(self.disk_mb, self.tmp_mb), disk_mb=self.disk_mb, tmp_mb=self.tmp_mb)


@dataclass(frozen=True)
class RunRequest:
    """One run. ``data_dir`` is mounted read-only at ``/data/<release>``: the workspace's sealed view
    of ``release`` (``synthetic.sealed.for_workspace(...).path``, ``data_kind="sealed_view"``), or the
    workspace's view of the synthetic release itself for the pre-run (``"synthetic_release"``).
    ``notebook_path`` is where the notebook is put in the home (its folder is the kernel's working
    directory); ``inputs`` are (path in the home → bytes), as a mapping or as pairs; ``outputs`` the
    paths in the home to collect when the run ends. ``uid``: the run's own (:func:`sealed_run_uid`).
    ``workspace_env``: the workspace's settings for code (ACRO's thresholds), as its kernels have."""

    run_id: str
    user: str
    workspace: str
    release: str
    data_dir: Path
    data_kind: DataKind
    notebook: bytes
    limits: RunLimits
    uid: int
    notebook_path: str = "notebook.ipynb"
    inputs: Mapping[str, bytes] | Sequence[tuple[str, bytes]] = ()
    outputs: Sequence[str] = ()
    workspace_env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunError:
    """What ended a run that did not succeed: the exception's type and message (from the executed
    notebook, or nbclient's when no cell raised, e.g. ``CellTimeoutError``, ``DeadKernelError``), or
    for a refusal its code and English text (``refusal`` keeps the message to render in any language)."""

    type: str
    message: str
    refusal: Message | None = None


@dataclass(frozen=True)
class Provenance:
    notebook_sha256: str
    notebook_path: str
    inputs: dict[str, str]  # path → sha256
    release: str
    release_content_hash: str | None  # the release store's, None when the store does not hold it
    data_kind: DataKind
    data_hash: str  # over the data folder's files as the run read them (a release's content hash rule)
    environment: dict[str, str]
    backend: str
    uid: int


@dataclass(frozen=True)
class Outcome:
    """``executed_notebook`` and ``outputs`` (path → bytes): only for ``succeeded`` and ``failed``;
    ``withheld``: the selected outputs not collected, with why (``missing``, ``not_a_regular_file``,
    ``too_large``); ``log``: the end of what the run's processes printed (for reviewers only, like
    everything here: it is computed on the data)."""

    run_id: str
    state: State
    limits: RunLimits
    duration_seconds: float
    executed_notebook: bytes | None = None
    outputs: dict[str, bytes] = field(default_factory=dict)
    withheld: dict[str, str] = field(default_factory=dict)
    error: RunError | None = None
    provenance: Provenance | None = None
    log: str = ""


def sealed_run_uid(settings: Settings, slot: int) -> int:
    """The uid of run slot ``slot`` (0 ≤ slot < SEALED_RUN_UIDS): the service hands each running run
    a slot of its own."""
    if not 0 <= slot < SEALED_RUN_UIDS:
        raise ValueError(f"a sealed run's slot is between 0 and {SEALED_RUN_UIDS - 1} (got {slot})")
    return settings.sandbox.uid_base - SEALED_RUN_UIDS + slot


# -- checking a request -------------------------------------------------------------------------------


def _home_path(path: str) -> str:
    """``path`` normalised as a relative path inside the home, or a refusal naming the problem."""
    if not isinstance(path, str) or not path.strip():
        raise SealedRunRefusal("sealed_run.empty_path", N_("an input, output or notebook has an empty path"))
    pure = PurePosixPath(path)
    if pure.is_absolute():
        raise SealedRunRefusal("sealed_run.absolute_path", N_("'%(path)s' is an absolute path: inputs, outputs and the"
                                                              " notebook are paths relative to the home"), path=path)
    if ".." in pure.parts:
        raise SealedRunRefusal("sealed_run.parent_path", N_("'%(path)s' goes up with '..': inputs, outputs and the"
                                                            " notebook stay inside the home"), path=path)
    if any(ord(c) < 32 for c in path):
        raise SealedRunRefusal("sealed_run.bad_path", N_("'%(path)s' holds control characters"),
                               path=path.encode("unicode_escape").decode())
    normal = str(pure)
    if normal == "." or pure.parts[0] == SEALED_RUN_FOLDER:
        raise SealedRunRefusal("sealed_run.reserved_path", N_("'%(path)s': %(folder)s/ is the run's own folder"),
                               path=path, folder=SEALED_RUN_FOLDER)
    return normal


def _unique_paths(paths: Sequence[str]) -> list[str]:
    seen: dict[str, str] = {}
    for path in paths:
        normal = _home_path(path)
        if normal in seen:
            raise SealedRunRefusal("sealed_run.duplicate_path", N_("'%(path)s' is named twice"), path=normal)
        seen[normal] = path
    for normal in seen:  # "a" and "a/b" cannot both be files
        for parent in PurePosixPath(normal).parents:
            if str(parent) in seen:
                raise SealedRunRefusal("sealed_run.file_is_folder", N_("'%(path)s' is inside '%(parent)s', which is"
                                                                       " a file"), path=normal, parent=str(parent))
    return list(seen)


@dataclass(frozen=True)
class CheckedRequest:
    notebook_path: str
    inputs: list[tuple[str, bytes]]
    outputs: list[str]


def check_request(settings: Settings, request: RunRequest) -> CheckedRequest:
    """The request's paths normalised; a :class:`SealedRunRefusal` naming the first problem."""
    if not isinstance(request.run_id, str) or not RUN_ID.match(request.run_id):
        raise SealedRunRefusal("sealed_run.bad_id", N_("'%(run_id)s' is not a run id (lower-case letters, digits"
                                                       " and '-', at most 63)"), run_id=str(request.run_id))
    if not USER.match(request.user):
        raise SealedRunRefusal("sealed_run.bad_user", N_("'%(user)s' is not a user name"), user=request.user)
    if not WORKSPACE.match(request.workspace):
        raise SealedRunRefusal("sealed_run.bad_workspace", N_("'%(workspace)s' is not a workspace name"),
                               workspace=request.workspace)
    if not RELEASE.match(request.release) or ".." in request.release:
        raise SealedRunRefusal("sealed_run.bad_release", N_("'%(release)s' is not a release name (name@version)"),
                               release=request.release)
    if request.data_kind not in ("sealed_view", "synthetic_release"):
        raise SealedRunRefusal("sealed_run.bad_data_kind", N_("the data folder is a 'sealed_view' or a"
                                                              " 'synthetic_release', not '%(kind)s'"),
                               kind=str(request.data_kind))
    data = Path(request.data_dir)
    if not data.is_absolute() or data.is_symlink() or not data.is_dir():
        raise SealedRunRefusal("sealed_run.no_data", N_("the data folder %(path)s is not a folder (an absolute path,"
                                                        " not a link)"), path=str(data))
    low, high = settings.sandbox.uid_base - SEALED_RUN_UIDS, settings.sandbox.uid_base
    if not (isinstance(request.uid, int) and max(low, 1000) <= request.uid < high):
        raise SealedRunRefusal("sealed_run.bad_uid", N_("uid %(uid)s is not a sealed run's: runs take uids from"
                                                        " %(low)s to %(high)s, below every workspace sandbox's"),
                               uid=str(request.uid), low=str(max(low, 1000)), high=str(high - 1))
    busy = processes_of_uid(request.uid)
    if busy:
        raise SealedRunRefusal("sealed_run.uid_in_use", N_("uid %(uid)s runs processes (%(pids)s): each run needs a"
                                                           " uid of its own"),
                               uid=str(request.uid), pids=", ".join(map(str, busy[:5])))
    _check_limits(request.limits)
    notebook_path = _home_path(request.notebook_path)
    if not notebook_path.endswith(".ipynb"):
        raise SealedRunRefusal("sealed_run.not_a_notebook_path", N_("the notebook '%(path)s' is not named *.ipynb"),
                               path=notebook_path)
    _check_notebook(request.notebook)
    pairs = list(request.inputs.items()) if isinstance(request.inputs, Mapping) else list(request.inputs)
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[1], bytes)):
            raise SealedRunRefusal("sealed_run.bad_input", N_("an input is a (path, bytes) pair, not %(value)s"),
                                   value=repr(pair)[:80])
    input_paths = _unique_paths([p for p, _ in pairs])
    _unique_paths([*input_paths, notebook_path])  # the notebook is not also an input
    outputs = _unique_paths(list(request.outputs))
    return CheckedRequest(notebook_path, list(zip(input_paths, (b for _, b in pairs))), outputs)


def _check_limits(limits: RunLimits) -> None:
    floors = {"seconds": 1, "memory_mb": 128, "disk_mb": 16, "cpus": 0.01, "pids": 16, "tmp_mb": 16,
              "output_max_mb": 1}
    for name, floor in floors.items():
        value = getattr(limits, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < floor:
            raise SealedRunRefusal("sealed_run.bad_limit", N_("limit %(name)s must be at least %(floor)s (got"
                                                              " %(value)s)"), name=name, floor=str(floor),
                                   value=str(value))
    if limits.cell_seconds is not None and not (isinstance(limits.cell_seconds, int) and limits.cell_seconds >= 1):
        raise SealedRunRefusal("sealed_run.bad_limit", N_("limit %(name)s must be at least %(floor)s (got"
                                                          " %(value)s)"), name="cell_seconds", floor="1",
                               value=str(limits.cell_seconds))


def _check_notebook(notebook: bytes) -> None:
    import nbformat

    try:
        nbformat.validate(nbformat.reads(notebook.decode("utf-8"), as_version=4))
    except (UnicodeDecodeError, ValueError, nbformat.ValidationError, AttributeError, KeyError, TypeError) as exc:
        raise SealedRunRefusal("sealed_run.bad_notebook", N_("the notebook is not a Jupyter notebook (%(problem)s)"),
                               problem=str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__) from None


def processes_of_uid(uid: int) -> list[int]:
    """Pids of the host's processes (zombies aside) whose real or effective uid is ``uid``."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("State:") and line.split()[1] == "Z":
                        break  # a zombie runs nothing and holds nothing
                    if line.startswith("Uid:"):
                        if str(uid) in line.split()[1:3]:
                            pids.append(int(entry.name))
                        break
        except OSError:  # gone meanwhile
            continue
    return pids


def read_inputs(home: Path, paths: Sequence[str], max_mb: int) -> list[tuple[str, bytes]]:
    """The files ``paths`` of an operator's ``home`` (a folder on the host) as a run's inputs: each
    opened a path component at a time without following a link, a regular file of at most
    ``max_mb`` MiB; a :class:`SealedRunRefusal` naming the first that is not."""
    inputs = []
    for rel in _unique_paths(list(paths)):
        content, why = _read_inside(Path(home), rel, max_mb * 2**20)
        if why == "missing":
            raise SealedRunRefusal("sealed_run.input_missing", N_("input '%(path)s' is not in the home"), path=rel)
        if why == "not_a_regular_file":
            raise SealedRunRefusal("sealed_run.input_not_a_file", N_("input '%(path)s' is not a file (a link, a"
                                                                     " folder or a special file)"), path=rel)
        if why == "too_large":
            raise SealedRunRefusal("sealed_run.input_too_large", N_("input '%(path)s' is larger than %(max_mb)s MiB"),
                                   path=rel, max_mb=str(max_mb))
        inputs.append((rel, content))
    return inputs


# -- running ------------------------------------------------------------------------------------------


async def run(settings: Settings, request: RunRequest) -> Outcome:
    """Run ``request`` to its end and return what came of it; every file of the run is gone when this
    returns (the outcome holds the collected bytes)."""
    try:
        checked = check_request(settings, request)
        folder = settings.run_dir / "sealed" / request.run_id
        folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            raise SealedRunRefusal("sealed_run.id_in_use", N_("run %(run_id)s is running or was not cleaned up"
                                                              " (%(path)s)"), run_id=request.run_id,
                                   path=str(folder)) from None
    except SealedRunRefusal as refusal:
        return Outcome(request.run_id, "refused", request.limits, 0.0,
                       error=RunError(refusal.code, str(refusal), refusal.message))
    try:
        return await _Run(settings, request, checked, folder).run()
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)


@dataclass
class _Run:
    settings: Settings
    request: RunRequest
    checked: CheckedRequest
    folder: Path
    cgroup: SandboxCgroup | None = None

    @property
    def home(self) -> Path:
        return self.folder / "home"

    @property
    def image(self) -> Path:
        return self.folder / "home.ext4"

    async def run(self) -> Outcome:
        request, limits = self.request, self.request.limits
        uid = request.uid
        try:
            try:
                data_hash = await asyncio.to_thread(_copy_data, request.data_dir, self.folder / "data", uid)
                await asyncio.to_thread(self._make_home)
            except SealedRunRefusal as refusal:
                return Outcome(request.run_id, "refused", limits, 0.0,
                               error=RunError(refusal.code, str(refusal), refusal.message))
            provenance = Provenance(
                notebook_sha256=hashlib.sha256(request.notebook).hexdigest(),
                notebook_path=self.checked.notebook_path,
                inputs={p: hashlib.sha256(b).hexdigest() for p, b in self.checked.inputs},
                release=request.release, release_content_hash=_release_content_hash(self.settings, request.release),
                data_kind=request.data_kind, data_hash=data_hash,
                environment=await asyncio.to_thread(environment_identity, self.settings),
                backend=self.settings.sandbox.backend, uid=uid)
            identity = Identity(uid=uid, gid=uid, username=request.user, home=f"/home/{request.user}")
            policy = sealed_run_policy(
                self.settings.sandbox.python_env, identity, limits.sandbox_limits(), f"sealed-{request.run_id}",
                self.home, (self.folder / "data", request.release), self.checked.notebook_path,
                limits.cell_seconds or limits.seconds, dict(request.workspace_env))
            self.cgroup = SandboxCgroup.create(f"sealed-{request.run_id}-{uid}", policy.limits)
            log_path = self.folder / "run.log"
            started = time.monotonic()
            sandbox = await self._start(policy, log_path)
            try:
                await asyncio.wait_for(sandbox.wait(), limits.seconds)
                timed_out = False
            except TimeoutError:
                timed_out = True
                await _stop(sandbox)
            duration = time.monotonic() - started
            # Every process of the run is gone before anything is read from its home.
            await asyncio.to_thread(self._end_processes)
            await asyncio.to_thread(sandbox.remove)
            if timed_out:
                return Outcome(request.run_id, "timed_out", limits, duration, provenance=provenance,
                               error=RunError("TimeoutError", f"the run was stopped after {limits.seconds} s"))
            return await asyncio.to_thread(self._collect, sandbox.returncode, duration, provenance, log_path)
        finally:
            await asyncio.to_thread(self._clean_up)

    def _make_home(self) -> None:
        uid = self.request.uid
        try:
            mount_home(self.image, self.home, self.request.limits.disk_mb, uid, uid)
        except HomeImageError as exc:
            raise SealedRunRefusal("sealed_run.no_home", N_("the run's home could not be made: %(problem)s"),
                                   problem=str(exc)) from None
        files = [(self.checked.notebook_path, self.request.notebook), *self.checked.inputs]
        try:
            for rel, content in files:
                _write_new(self.home, rel, content, uid)
        except OSError as exc:
            raise SealedRunRefusal("sealed_run.inputs_do_not_fit", N_("the notebook and inputs could not be written"
                                                                      " into the run's home of %(disk_mb)s MiB"
                                                                      " (%(problem)s)"),
                                   disk_mb=str(self.request.limits.disk_mb), problem=exc.strerror or str(exc)) from None

    async def _start(self, policy, log_path: Path):
        files = self.folder / "files"
        if self.settings.sandbox.backend == "docker":
            import docker as docker_sdk

            from ..sandbox import docker as docker_backend

            client = await asyncio.to_thread(docker_sdk.from_env)
            return await docker_backend.start(client, policy, self.settings.sandbox.image, files, log_path,
                                              self.cgroup and self.cgroup.docker_parent, self.folder)
        try:
            return await bubblewrap.start(policy, self.settings.sandbox.bwrap, files, log_path, self.cgroup)
        except RuntimeError as exc:
            raise RuntimeError(f"sealed run {self.request.run_id}: {exc}: {_tail(log_path)}") from None

    def _end_processes(self) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()  # kills whatever is left in it first
            self.cgroup = None

    def _collect(self, returncode: int | None, duration: float, provenance: Provenance, log_path: Path) -> Outcome:
        request, cap = self.request, self.request.limits.output_max_mb * 2**20
        run_folder = f"{SEALED_RUN_FOLDER}/"
        executed, _ = _read_inside(self.home, run_folder + SEALED_EXECUTED, cap)
        result_bytes, _ = _read_inside(self.home, run_folder + SEALED_RESULT, 64 * 1024)
        outputs, withheld = {}, {}
        for rel in self.checked.outputs:
            content, why = _read_inside(self.home, rel, cap)
            if content is None:
                withheld[rel] = why
            else:
                outputs[rel] = content
        result = _json_object(result_bytes)
        error = None
        if returncode == 0 and result.get("state") == "succeeded":
            state: State = "succeeded"
        else:
            state = "failed"
            error = (_error_of(result.get("error")) or _notebook_error(executed)
                     or RunError("SandboxExit", f"the run ended with exit code {returncode} and no result"
                                                " (killed, or out of memory?)"))
        return Outcome(request.run_id, state, request.limits, duration, executed_notebook=executed,
                       outputs=outputs, withheld=withheld, error=error, provenance=provenance,
                       log=_tail(log_path))

    def _clean_up(self) -> None:
        self._end_processes()
        unmount_home(self.home)
        self.image.unlink(missing_ok=True)


async def _stop(sandbox) -> None:
    """Kill the sandbox's first process (and so, as the init of its pid namespace, every process in
    it), then wait for its bwrap to reap it and exit: bwrap killed first would leave it a zombie of
    the host's init. A container is killed as a whole."""
    sandbox.signal(signal.SIGKILL)
    try:
        await asyncio.wait_for(sandbox.wait(), KILL_GRACE_SECONDS)
    except TimeoutError:
        sandbox.kill()
        await sandbox.wait()


def remove_leftovers(settings: Settings) -> list[str]:
    """What runs left when the process running them died (a hub or service crash): their sandboxes
    (bubblewrap's in their cgroups, or containers), mounted homes, images and data copies, under
    ``run_dir/sealed``. Run when the service starts, before it runs anything; returns the run ids."""
    root = settings.run_dir / "sealed"
    if not root.is_dir():
        return []
    if settings.sandbox.backend == "docker":
        import docker as docker_sdk

        from ..sandbox import docker as docker_backend

        docker_backend.remove_orphans(docker_sdk.from_env(), root)
    left = sorted(p for p in root.iterdir() if p.is_dir() and RUN_ID.match(p.name))
    for folder in left:
        # The run's cgroup is named after the run and its uid (:meth:`_Run.run`).
        for parent in [CGROUP_ROOT / PARENT, *(CGROUP_ROOT / c / PARENT for c in ("memory", "pids", "cpu"))]:
            for d in parent.glob(f"sealed-{folder.name}-*") if parent.is_dir() else ():
                SandboxCgroup([d]).remove()
        unmount_home(folder / "home")
        shutil.rmtree(folder, ignore_errors=True)
    return [p.name for p in left]


# -- files ----------------------------------------------------------------------------------------------


def _copy_data(source: Path, target: Path, uid: int) -> str:
    """Copy the data folder for the run: root's, readable by the run's group alone (its gid is its
    uid), read-only in the sandbox anyway. Links and special files in it are refused. Returns the
    content hash of what was copied (``synthetic.store.content_hash`` over relative path → sha256:
    for a flat folder, the hash of a workspace's view of a release)."""
    digests: dict[str, str] = {}
    target.mkdir(mode=0o750)
    os.chown(target, 0, uid)
    for dirpath, dirnames, filenames in os.walk(source):
        rel_dir = Path(dirpath).relative_to(source)
        for name in sorted(dirnames + filenames):
            src = Path(dirpath) / name
            st = src.lstat()
            dst = target / rel_dir / name
            rel = str(rel_dir / name) if str(rel_dir) != "." else name
            if stat.S_ISDIR(st.st_mode):
                dst.mkdir(mode=0o750)
                os.chown(dst, 0, uid)
            elif stat.S_ISREG(st.st_mode):
                h = hashlib.sha256()
                fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
                with os.fdopen(fd, "rb") as fin, open(dst, "xb") as fout:
                    while chunk := fin.read(1 << 20):
                        h.update(chunk)
                        fout.write(chunk)
                os.chown(dst, 0, uid)
                dst.chmod(0o440)
                digests[rel] = h.hexdigest()
            else:
                raise SealedRunRefusal("sealed_run.data_not_plain", N_("the data folder holds %(path)s, which is not"
                                                                       " a file or folder (a link?)"),
                                       path=str(src))
    target.chmod(0o550)
    h = hashlib.sha256()
    for path in sorted(digests):
        h.update(f"{path}\0{digests[path]}\n".encode())
    return h.hexdigest()


def _write_new(home: Path, rel: str, content: bytes, uid: int) -> None:
    """Write a new file of the fresh home (its folders made as needed), the run's uid's, 0600."""
    path = home / rel
    for parent in reversed(PurePosixPath(rel).parents[:-1]):
        folder = home / parent
        if not folder.is_dir():
            folder.mkdir(mode=0o700)
            os.chown(folder, uid, uid)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    os.chown(path, uid, uid)


def _read_inside(root: Path, rel: str, cap: int) -> tuple[bytes | None, str]:
    """The bytes of the regular file ``rel`` under ``root``, opened one component at a time without
    following any link; (None, why) when it is missing, not a regular file, or over ``cap`` bytes."""
    parts = PurePosixPath(rel).parts
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    fds = [os.open(root, flags | os.O_DIRECTORY)]
    try:
        for part in parts[:-1]:
            try:
                fds.append(os.open(part, flags | os.O_DIRECTORY, dir_fd=fds[-1]))
            except FileNotFoundError:
                return None, "missing"
            except OSError:  # ELOOP (a link), ENOTDIR
                return None, "not_a_regular_file"
        try:
            fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fds[-1])
        except FileNotFoundError:
            return None, "missing"
        except OSError:
            return None, "not_a_regular_file"
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None, "not_a_regular_file"
        with os.fdopen(fd, "rb") as f:
            content = f.read(cap + 1)
        if len(content) > cap:
            return None, "too_large"
        return content, ""
    finally:
        for fd in fds:
            os.close(fd)


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_MAX_BYTES))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _json_object(content: bytes | None) -> dict:
    try:
        value = json.loads(content) if content else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _error_of(value) -> RunError | None:
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return RunError(value["type"][:200], str(value.get("message", ""))[:10_000])
    return None


def _notebook_error(executed: bytes | None) -> RunError | None:
    """The first error output of the executed notebook."""
    try:
        nb = json.loads(executed) if executed else {}
        for cell in nb.get("cells", []):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    return RunError(str(output.get("ename", ""))[:200], str(output.get("evalue", ""))[:10_000])
    except (ValueError, AttributeError, TypeError):
        return None
    return None


# -- provenance -----------------------------------------------------------------------------------------


def _release_content_hash(settings: Settings, release: str) -> str | None:
    from synthetic import store

    try:
        return store.manifest(settings.release_store, release).get("content_hash")
    except store.StoreError:
        return None


def environment_identity(settings: Settings) -> dict[str, str]:
    """What identifies the operators' environment a run used: the image's id (Docker backend), or the
    hash of the environment's installed distributions (names and versions) and of the requirements
    file it was built from (bubblewrap)."""
    if settings.sandbox.backend == "docker":
        import docker as docker_sdk

        image = docker_sdk.from_env().images.get(settings.sandbox.image)
        return {"image": settings.sandbox.image, "image_id": image.id}
    env = Path(settings.sandbox.python_env)
    dists = sorted(p.name for p in env.glob("lib/python3*/site-packages/*.dist-info"))
    identity = {"python_env": str(env),
                "distributions_sha256": hashlib.sha256("\n".join(dists).encode()).hexdigest()}
    from ..settings import REPO_ROOT

    requirements = REPO_ROOT / "requirements" / "sandbox.txt"
    if requirements.is_file():
        identity["requirements_sha256"] = hashlib.sha256(requirements.read_bytes()).hexdigest()
    return identity
