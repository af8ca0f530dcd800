"""Where workspaces' supervisors run, and the launcher that runs them for a hub in a container.

Each workspace server has a supervisor (:mod:`enclave.sandbox.supervisor`): a root process that
prepares the home and starts the server's, kernels' and terminals' sandboxes. On a host the hub
starts supervisors itself (:class:`Supervisors`). In the container deployment
(``docker-compose.yml``, ``sandbox.launcher = true``) they run in the **launcher**, a container of
its own and the only one that holds the Docker API socket and may loop-mount homes' quota images;
the hub asks it over ``$ENCLAVE_HOME/run/launcher.sock`` (:class:`LauncherClient`). So restarting
the hub's container leaves every sandbox running, as restarting a host hub does. The hub holds no
Docker socket; it can ask only for supervisors of specs it wrote, which the launcher runs as the
hub would (the hub stays trusted: it writes the sandbox policy the spec holds).

Protocol: one JSON object per line, one request per connection, and its reply::

    {"op": "start", "spec": PATH}                       -> {"ok": true, "pid": N}
    {"op": "alive", "spec": PATH, "pid": N}             -> {"ok": true, "alive": BOOL}
    {"op": "stop",  "spec": PATH, "pid": N, "now": B}   -> {"ok": true}
    {"op": "status", "image": NAME}                     -> {"ok": true, "version": V, "image": B, "error": E}
    (a refusal)                                         -> {"ok": false, "error": "..."}

``spec`` is a supervisor's spec, written by the hub's spawner: it must lie under
``$ENCLAVE_HOME/run/sandboxes/``, so the socket starts nothing but supervisors of this deployment.

Run as ``python -I -m enclave.sandbox.launcher`` (root, with the same ``ENCLAVE_*`` settings as the hub).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("enclave.launcher")

SUPERVISOR_MODULE = "enclave.sandbox.supervisor"
STOP_SECONDS = 10
KILL_SECONDS = 2


class LauncherError(RuntimeError):
    """The launcher cannot be reached, or refused a request (its reason)."""


class Supervisors:
    """The supervisors this process started, found by pid; after a restart of this process, by pid
    and command line, so a pid reused by another program is never taken for one. Its operations
    are coroutines, as :class:`LauncherClient`'s are: the spawner uses either."""

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen] = {}

    async def start(self, spec: Path) -> int:
        with open(spec.parent / "supervisor.log", "ab") as log_file:
            child = subprocess.Popen(
                # Isolated mode and "/" as working directory: nothing on sys.path that a user can write.
                [sys.executable, "-I", "-m", SUPERVISOR_MODULE, str(spec)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True,
                cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )
        self._children[child.pid] = child
        return child.pid

    async def alive(self, pid: int, spec: Path) -> bool:
        return self._alive(pid, spec)

    def _alive(self, pid: int, spec: Path) -> bool:
        if not pid:
            return False
        child = self._children.get(pid)
        if child is not None:
            if child.poll() is None:
                return True
            del self._children[pid]  # reaped
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        state = stat.rsplit(")", 1)[1].split()[0]
        return state != "Z" and SUPERVISOR_MODULE.encode() in cmdline and str(spec).encode() in cmdline

    async def stop(self, pid: int, spec: Path, now: bool = False) -> None:
        """SIGTERM (the supervisor stops its sandboxes and removes their runtime files), then
        SIGKILL if it has not ended in time: a bubblewrap sandbox dies with its supervisor
        (``--die-with-parent``); containers are left to the next supervisor of that server."""
        if not self._alive(pid, spec):
            return
        os.kill(pid, signal.SIGTERM)
        for _ in range(int((KILL_SECONDS if now else STOP_SECONDS) / 0.1)):
            if not self._alive(pid, spec):
                return
            await asyncio.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        while self._alive(pid, spec):
            await asyncio.sleep(0.1)


    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(pid, Path(child.args[-1])) for pid, child in list(self._children.items())))


class LauncherClient:
    """The hub's side: the same three operations as :class:`Supervisors`, asked of the launcher."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path

    async def _ask(self, request: dict) -> dict:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.socket_path)), 10)
        except (OSError, TimeoutError) as exc:
            raise LauncherError(f"the launcher is not reachable at {self.socket_path}: {exc}") from None
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 60)
        except (OSError, TimeoutError) as exc:
            raise LauncherError(f"the launcher did not answer: {exc}") from None
        finally:
            writer.close()
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            raise LauncherError(f"the launcher's answer is not JSON: {line[:200]!r}") from None
        if not reply.get("ok"):
            raise LauncherError(reply.get("error") or "the launcher refused")
        return reply

    async def start(self, spec: Path) -> int:
        return int((await self._ask({"op": "start", "spec": str(spec)}))["pid"])

    async def alive(self, pid: int, spec: Path) -> bool:
        return bool((await self._ask({"op": "alive", "spec": str(spec), "pid": pid}))["alive"])

    async def stop(self, pid: int, spec: Path, now: bool = False) -> None:
        await self._ask({"op": "stop", "spec": str(spec), "pid": pid, "now": now})

    async def status(self, image: str) -> dict:
        """What :func:`docker_status` finds in the launcher's container (``enclave doctor``)."""
        reply = await self._ask({"op": "status", "image": image})
        return {key: reply.get(key) for key in ("version", "image", "error")}


class Launcher:
    """The launcher's side: answers the hub's requests with :class:`Supervisors`."""

    def __init__(self, sandboxes_dir: Path) -> None:
        self.sandboxes_dir = sandboxes_dir.resolve()
        self.supervisors = Supervisors()

    def _spec(self, request: dict) -> Path:
        spec = request.get("spec")
        if not isinstance(spec, str) or not spec:
            raise ValueError("a request names a supervisor's spec")
        path = Path(spec)
        # The spec's own path, not where a link would lead: the supervisor is found by it later.
        if not path.is_absolute() or ".." in path.parts or not path.is_relative_to(self.sandboxes_dir) \
                or path.name != "spec.json":
            raise ValueError(f"{spec} is not a supervisor's spec under {self.sandboxes_dir}")
        if path.is_symlink() or not path.is_file():
            raise ValueError(f"{spec} is not a file")
        return path

    @staticmethod
    def _pid(request: dict) -> int:
        pid = request.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid < 0:
            raise ValueError(f"pid {pid!r} is not a process id")
        return pid

    async def handle(self, request: dict) -> dict:
        op = request.get("op")
        if op == "start":
            spec = self._spec(request)
            pid = await self.supervisors.start(spec)
            log.info("started the supervisor of %s: pid %d", spec.parent, pid)
            return {"pid": pid}
        if op == "alive":
            return {"alive": await self.supervisors.alive(self._pid(request), self._spec(request))}
        if op == "stop":
            spec = self._spec(request)
            await self.supervisors.stop(self._pid(request), spec, now=request.get("now") is True)
            log.info("stopped the supervisor of %s", spec.parent)
            return {}
        if op == "status":
            image = request.get("image")
            if not isinstance(image, str) or not image:
                raise ValueError("a status request names the sandbox image")
            return await asyncio.to_thread(docker_status, image)
        raise ValueError(f"unknown operation {op!r}")

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("a launcher request is a JSON object")
                reply = {"ok": True, **await self.handle(request)}
            except (ValueError, OSError, json.JSONDecodeError) as exc:
                log.warning("request refused: %s", exc)
                reply = {"ok": False, "error": str(exc)}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    async def run(self, socket_path: Path) -> None:
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        socket_path.unlink(missing_ok=True)
        old_umask = os.umask(0o177)  # root's alone from its creation
        try:
            server = await asyncio.start_unix_server(self.serve_client, path=str(socket_path))
        finally:
            os.umask(old_umask)
        log.info("launcher listening on %s", socket_path)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with server:
            await stop.wait()
        # Stopping the launcher stops every sandbox it runs, as each supervisor stops its own.
        await self.supervisors.stop_all()


def docker_status(image: str) -> dict:
    """The Docker daemon's version, whether it has ``image``, and why not if it does not answer."""
    import docker
    from docker.errors import DockerException, ImageNotFound

    try:
        client = docker.from_env(timeout=10)
        version = client.version().get("Version", "?")
        try:
            client.images.get(image)
            present = True
        except ImageNotFound:
            present = False
        return {"version": version, "image": present, "error": None}
    except DockerException as exc:
        return {"version": None, "image": False, "error": str(exc)}


def running_specs() -> set[Path]:
    """The specs of every supervisor running on this host (or in this container)."""
    specs = set()
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0") if proc.name.isdigit() else []
        except OSError:
            continue
        if SUPERVISOR_MODULE.encode() in argv:  # ... -m enclave.sandbox.supervisor SPEC
            spec = argv[argv.index(SUPERVISOR_MODULE.encode()) + 1]
            if spec:
                specs.add(Path(os.fsdecode(spec)))
    return specs


def socket_path(settings) -> Path:
    """Where the hub reaches the launcher, under the runtime directory both share."""
    return settings.run_dir / "launcher.sock"


def main() -> int:
    from ..host_state import keep_private
    from ..settings import load_settings_or_exit

    keep_private()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s launcher %(levelname)s %(message)s")
    settings = load_settings_or_exit()
    sandboxes = settings.run_dir / "sandboxes"
    if settings.sandbox.backend == "docker":  # none of its supervisors runs yet: no container is in use
        import docker

        from .docker import remove_orphans

        running = running_specs()
        for name in remove_orphans(docker.from_env(), sandboxes, lambda run: run / "spec.json" in running):
            log.warning("removed container %s, left by a supervisor that did not stop it", name)
    asyncio.run(Launcher(sandboxes).run(socket_path(settings)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
