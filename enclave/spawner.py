"""SandboxSpawner: one sandbox per (operator, workspace) named server.

The spawner checks that the user is an operator of the workspace, builds the sandbox policy,
and starts the supervisor (``enclave.sandbox.supervisor``), which runs the single-user server on a
unix socket in a sandbox with no network, and each kernel and terminal in a sibling sandbox: a
bubblewrap sandbox on the host, or a container (``sandbox.backend``). The supervisor lives in its
own session, so sandboxes keep running across hub restarts; the spawner finds it again by the pid
kept in its state.

With the Docker backend in the container deployment, the hub runs in a container without the
Docker socket and the supervisors run in the launcher's (``sandbox.launcher``;
:mod:`enclave.sandbox.launcher`). This is one spawner for both backends, not a subclass of
DockerSpawner: every DockerSpawner method (create, start, poll, stop, remove) calls the Docker API
from the hub, which in this deployment must not hold it, and it would start the server's container
alone, when here a root supervisor must stay beside it to start kernels and terminals on the
server's request, prepare the home's quota image and receive its audit records (what the
supervisor's protocol does for both backends). The containers are made by the supervisor with the
Docker SDK that DockerSpawner is built on.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from jupyterhub.spawner import Spawner
from traitlets import Any, Integer, Unicode

from . import i18n, languages, workspaces
from .audit import socket_path as audit_socket_path
from .audit.client import AuditError
from .audit.hub import hub_records
from .audit.records import without_floats
from .exports.sockets import intake_socket
from .provisioning import lifecycle
from .rbac import EXPORTS_SERVICE, IDLE_CULLER_SERVICE
from .files import atomic_write
from .http_refusals import HTTPRefusal
from .i18n import N_
from .sandbox.launcher import LauncherClient, LauncherError, Supervisors
from .sandbox.launcher import socket_path as launcher_socket
from .sandbox.policy import (
    HUB_SOCKET_DIR,
    Identity,
    Limits,
    SandboxLayout,
    acro_environment,
    acro_thresholds,
    server_policy,
)

# The supervisors this hub process starts itself (sandbox.launcher off).
LOCAL_SUPERVISORS = Supervisors()
# Lab's user settings of its Language plugin, under the (user, workspace)'s Lab state.
LAB_LANGUAGE_SETTINGS = "user-settings/@jupyterlab/translation-extension/plugin.jupyterlab-settings"


# Bytes of a socket path that stand for themselves in the URL's host: no upper-case letter.
_CASELESS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-._~")


def unix_socket_url(path: str | Path) -> str:
    """An ``http+unix://`` URL for a socket path, the path percent-encoded as the host.

    JupyterHub keeps a server's host as ``urlparse(url).hostname`` and its HTTP client takes the
    host of the URL, and both lower-case it. So every byte but lower-case letters, digits and
    ``-._~`` is encoded, upper-case letters included: lower-casing then changes only the hex
    digits of escapes, and the path decodes the same (``/srv/Enclave`` stays ``/srv/Enclave``).
    """
    return "http+unix://" + "".join(chr(b) if b in _CASELESS else f"%{b:02x}" for b in os.fsencode(path))


class SandboxStartError(HTTPRefusal):
    """A sandbox cannot start. JupyterHub shows the message on the spawn page when the failure is
    immediate and on the spawn-pending page otherwise (``jupyterhub_message`` there, in English;
    Enclave's pages show ``enclave_message`` in the reader's language)."""

    def __init__(self, message: i18n.Message):
        super().__init__(500, message)
        self.jupyterhub_message = str(message)


def workspace_refusal(settings, username: str, workspace: str) -> tuple[workspaces.WorkspaceView | None, HTTPRefusal | None]:
    """The workspace ``username`` asks to start a sandbox in, or why they may not: it does not
    exist (404), they are not an operator of it, or :func:`lifecycle.start_refusal` refuses it (403)."""
    try:
        ws = workspaces.get(settings, workspace)
    except workspaces.UnknownWorkspace:
        return None, HTTPRefusal(404, i18n.Message("start.unknown_workspace", N_("There is no workspace named '%(workspace)s'."),
                                               {"workspace": workspace}))
    if username not in ws.operators:
        return ws, HTTPRefusal(403, i18n.Message("start.not_an_operator", N_("%(user)s is not an operator of workspace '%(workspace)s'."),
                                             {"user": username, "workspace": ws.name}))
    refusal = lifecycle.start_refusal(settings, username, ws)
    return ws, (HTTPRefusal(403, refusal) if refusal else None)


class SandboxSpawner(Spawner):
    enclave_settings = Any(help="enclave.settings.Settings of this hub").tag(config=True)
    pid = Integer(0)
    # This start's sandbox, as the audit log names it: <user>/<workspace>/<random>.
    sandbox_id = Unicode("")
    # Who asked for the stop under way, when it came through the API: (kind, name) (enclave.hub).
    stop_requested_by: tuple[str, str] | None = None

    def load_state(self, state):
        super().load_state(state)
        self.pid = state.get("pid", 0)
        self.sandbox_id = state.get("sandbox_id", "")

    def get_state(self):
        state = super().get_state()
        if self.pid:
            state["pid"] = self.pid
            state["sandbox_id"] = self.sandbox_id
        return state

    def clear_state(self):
        super().clear_state()
        self.pid = 0
        self.sandbox_id = ""

    # -- where things are --

    @property
    def _run_dir(self) -> Path:
        return self.enclave_settings.run_dir / "sandboxes" / self.user.name / self.name

    @property
    def _spec_path(self) -> Path:
        return self._run_dir / "spec.json"

    def _layout(self, ws: workspaces.WorkspaceView) -> SandboxLayout:
        s = self.enclave_settings
        home, home_image = s.operator_home(self.user.name, ws.name)
        return SandboxLayout(
            env=s.sandbox.python_env,
            home=home,
            home_image=home_image,
            run=self._run_dir,
            hub_socket_dir=s.hub_socket.parent,
            exports_socket_dir=intake_socket(s).parent,
            data=tuple(workspaces.data_mounts(s, ws)),
            lab_state=s.home / "lab-state" / self.user.name / ws.name,
        )

    def _workspace(self) -> workspaces.WorkspaceView:
        """The workspace this server is for, if the user may start it; else a clear refusal."""
        if not self.name:
            raise HTTPRefusal(400, i18n.Message("start.no_workspace", N_(
                "Choose a workspace: each workspace has its own server.")))
        # An unknown workspace, not an operator of it, a frozen, archived or expired workspace, or
        # an account no longer usable (the lifecycle).
        ws, refusal = workspace_refusal(self.enclave_settings, self.user.name, self.name)
        if refusal:
            raise refusal
        return ws

    def _hub_env(self) -> dict[str, str]:
        """The JupyterHub variables the server needs, with the hub reached over its socket.
        Nothing else of the hub's environment is passed on; the policy builds the sandbox's."""
        env = {k: v for k, v in self.get_env().items() if k.startswith(("JUPYTERHUB_", "JPY_"))}
        hub_api = unix_socket_url(f"{HUB_SOCKET_DIR}/{self.enclave_settings.hub_socket.name}") + "/hub/api"
        env["JUPYTERHUB_API_URL"] = hub_api
        env["JUPYTERHUB_ACTIVITY_URL"] = f"{hub_api}/users/{self.user.escaped_name}/activity"
        # Where the operator follows their export requests (the review service's own origin).
        env["ENCLAVE_EXPORTS_URL"] = self.enclave_settings.service_url(EXPORTS_SERVICE)
        return env

    def _lab_locale(self, layout: SandboxLayout) -> str:
        """JupyterLab's display language, as every page of Enclave's chooses it: the one the person
        chose on the hub's home page (stored on their account), else the one their browser asked
        for when it asked for this start (its ``Accept-Language``), else English. Read at each
        start: a change shows from the server's next start. A language kept in Lab's own user
        settings (which would win over it) is dropped: Lab's Language menu is not offered, but its
        settings could still be edited."""
        kept = layout.lab_state / LAB_LANGUAGE_SETTINGS
        # The server writes these folders: remove nothing a symbolic link among them points to.
        if kept.parent.resolve().is_relative_to(layout.lab_state.resolve()):
            kept.unlink(missing_ok=True)
        request = getattr(self.handler, "request", None)
        browser = request.headers.get("Accept-Language") if request is not None else None
        return i18n.negotiate(browser, languages.language_of(self.enclave_settings, self.user.name))

    # -- life cycle --

    async def start(self):
        s = self.enclave_settings
        ws = self._workspace()
        missing = [name for src, name in workspaces.data_mounts(s, ws) if not src.is_dir()]
        if missing:
            raise SandboxStartError(i18n.Message("start.releases_missing", N_(
                "Workspace '%(workspace)s' has releases attached that are not in the release store: %(releases)s"),
                {"workspace": ws.name, "releases": ", ".join(missing)}))
        layout = self._layout(ws)
        uid = s.sandbox.uid_base + self.orm_spawner.id
        identity = Identity(uid=uid, gid=uid, username=self.user.name, home=f"/home/{self.user.name}")
        limits = Limits(**ws.effective_limits(s.sandbox.limits).model_dump())
        terminals = ws.guard.get("terminals") is True
        acro = acro_thresholds(s.exports)
        policy = server_policy(layout, identity, limits, f"{self.user.name}-{ws.name}", self._hub_env(),
                               terminals=terminals, lab_locale=self._lab_locale(layout))

        self.sandbox_id = f"{self.user.name}/{ws.name}/{secrets.token_hex(6)}"
        # Recorded before it starts, with the policy it runs under; without its record, no sandbox.
        try:
            await hub_records(s).append(self.user.name, "sandbox.start", workspace=ws.name, sandbox=self.sandbox_id,
                                        detail={"policy": _policy_record(policy, layout), "server": self.name})
        except AuditError as exc:
            raise SandboxStartError(i18n.Message("start.not_recorded", N_(
                "The sandbox was not started: the audit log cannot record it (%(error)s)"), {"error": str(exc)})) from None
        self._run_dir.mkdir(parents=True, exist_ok=True)
        self._run_dir.chmod(0o700)  # root's: sandboxes see only the parts bound into them
        atomic_write(layout.workspace_file, json.dumps({
            "user": self.user.name,
            "workspace": ws.name,
            "releases": list(ws.releases),
            "limits": limits.__dict__,
            # Read by the guard inside the server (extensions/enclave_guard/enclave_guard/policy.py).
            "guard": {**ws.guard, "acro": acro},
        }, indent=2), mode=0o644)
        atomic_write(self._spec_path, json.dumps({
            "server": json.loads(policy.to_json()),
            "layout": {
                "env": str(layout.env), "home": str(layout.home), "home_image": str(layout.home_image),
                "run": str(layout.run),
                "hub_socket_dir": str(layout.hub_socket_dir),
                "exports_socket_dir": str(layout.exports_socket_dir),
                "lab_state": str(layout.lab_state),
                "data": [[str(src), name] for src, name in layout.data],
            },
            "bwrap": s.sandbox.bwrap,
            "backend": s.sandbox.backend,
            "image": s.sandbox.image,
            # ACRO in the kernel reads the workspace's thresholds from here (enclave_guard.disclosure).
            "kernel_env": acro_environment(s.exports),
            # The supervisor starts terminal sandboxes only if the workspace allows them.
            "terminals": terminals,
            # The receiver of this sandbox's audit records stamps them with these, not the sender's.
            "audit": {"user": self.user.name, "workspace": ws.name, "sandbox": self.sandbox_id,
                      "socket": str(audit_socket_path(s))},
        }), mode=0o600)

        socket_path = layout.server_run / "jupyter.sock"
        socket_path.unlink(missing_ok=True)
        try:
            self.pid = await self._supervisors.start(self._spec_path)
        except LauncherError as exc:
            self.stop_requested_by = ("sandbox", f"did not start: {exc}")
            await self._record_stop()
            raise SandboxStartError(i18n.Message("start.failed", N_("The sandbox did not start: %(reason)s"),
                                                 {"reason": str(exc)})) from None
        # Wait for the server's socket, so a sandbox that fails shows its reason on the spawn page.
        deadline = asyncio.get_running_loop().time() + s.sandbox.start_timeout
        while not socket_path.exists():
            if not await self._supervisor_alive():
                self.pid = 0
                reason = self._failure_reason()
                # Its start is recorded: so is its end, whatever it was.
                self.stop_requested_by = ("sandbox", f"did not start: {reason}")
                await self._record_stop()
                raise SandboxStartError(i18n.Message("start.failed", N_("The sandbox did not start: %(reason)s"),
                                                     {"reason": reason}))
            if asyncio.get_running_loop().time() > deadline:
                await self.stop(now=True)
                raise SandboxStartError(i18n.Message("start.timeout", N_("The sandbox did not start within %(seconds)s s"),
                                                     {"seconds": s.sandbox.start_timeout}))
            await asyncio.sleep(0.1)
        return unix_socket_url(socket_path)

    def _failure_reason(self) -> str:
        lines = []
        for name in ("server.log", "supervisor.log"):
            path = self._run_dir / name
            if path.exists():
                lines += [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if "Error" in ln or "error" in ln or "bwrap:" in ln]
        return (errors or lines or ["no output"])[-1][-500:]

    @property
    def _supervisors(self) -> Supervisors | LauncherClient:
        """Who runs this server's supervisor: this hub process, or the launcher when the hub runs in
        a container of its own (``sandbox.launcher``; enclave.sandbox.launcher says why)."""
        if self.enclave_settings.sandbox.launcher:
            return LauncherClient(launcher_socket(self.enclave_settings))
        return LOCAL_SUPERVISORS

    async def _supervisor_alive(self) -> bool:
        if not self.pid:
            return False
        try:
            return await self._supervisors.alive(self.pid, self._spec_path)
        except LauncherError as exc:
            # Not known to have ended: the hub keeps it, and polls again.
            self.log.error("cannot ask the launcher about %s: %s", self.sandbox_id, exc)
            return True

    async def poll(self):
        if await self._supervisor_alive():
            return None
        if self.pid:  # it ended without being asked (the server exited, or was killed)
            self.stop_requested_by = ("sandbox", "the server exited")
            # Not awaited: at the hub's start, spawners are polled before the audit service runs.
            asyncio.ensure_future(self._record_stop())
        self.pid = 0
        return 0

    async def stop(self, now=False):
        if not await self._supervisor_alive():
            return
        await self._record_stop()
        await self._supervisors.stop(self.pid, self._spec_path, now=now)
        self.pid = 0

    def _record_stop(self):
        """``sandbox.cull`` when the idle culler asked, else ``sandbox.stop`` naming who asked, as a
        coroutine to await (its fields are taken now). A stop goes ahead whether recorded or not:
        it only takes away."""
        kind, name = self.stop_requested_by or ("user", self.user.name)
        self.stop_requested_by = None
        if kind == "service" and name == IDLE_CULLER_SERVICE:
            action, actor, detail = "sandbox.cull", name, {"server": self.name}
            if self.orm_spawner.last_activity:
                idle = datetime.now(UTC).replace(tzinfo=None) - self.orm_spawner.last_activity.replace(tzinfo=None)
                detail["idle_seconds"] = int(idle.total_seconds())
        elif kind == lifecycle.STOP_KIND:  # the lifecycle stopped it: ``name`` says why
            action, actor, detail = "sandbox.stop", lifecycle.SYSTEM, {"server": self.name, "reason": name}
        elif kind == "sandbox":  # it ended by itself: ``name`` says how
            action, actor, detail = "sandbox.stop", self.user.name, {"server": self.name, "reason": name}
        else:
            action, actor, detail = "sandbox.stop", name or self.user.name, {"server": self.name,
                                                                           "reason": f"asked by {kind} {name}"}
        records, workspace, sandbox = hub_records(self.enclave_settings), self.name, self.sandbox_id or None

        async def record():
            try:
                await records.append(actor, action, workspace=workspace, sandbox=sandbox, detail=detail)
            except AuditError as exc:
                self.log.error("stop of %s not recorded: %s", sandbox, exc)

        return record()


def _policy_record(policy, layout: SandboxLayout) -> dict:
    """The sandbox policy as the audit log keeps it: the server's (everything but its environment,
    which holds its hub token), and the data its kernels and terminals see, read-only, under /data."""
    return without_floats({
        "name": policy.name, "argv": list(policy.argv), "identity": asdict(policy.identity),
        "limits": asdict(policy.limits), "network": policy.network, "workdir": policy.workdir,
        "mounts": [{"target": m.target, "kind": m.kind, "source": m.source, **({"size_mb": m.size_mb} if m.size_mb else {})}
                   for m in policy.mounts],
        "data": [{"target": f"/data/{name}", "kind": "ro", "source": str(source)} for source, name in layout.data],
    })
