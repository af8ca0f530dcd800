"""The host-side supervisor of one workspace server's sandboxes.

Run by the spawner as ``python -m enclave.sandbox.supervisor SPEC``, as root, outside any sandbox.
It starts the single-user server's sandbox and, on the server's request, each kernel and (when the
workspace allows them) each terminal in a sibling sandbox of its own (see
:func:`enclave.sandbox.policy.kernel_policy` and :func:`~enclave.sandbox.policy.terminal_policy`):
the server asks over the launcher socket, but this process decides the command, mounts, identity
and environment. Killing the supervisor (SIGTERM) stops the server, every kernel and terminal, and
removes the runtime files.

Launcher protocol: one JSON object per line, one request per connection::

    {"op": "prepare" | "start" | "poll" | "signal" | "cleanup", "kernel_id": UUID, ...}
    {"op": "terminal", "rows": N, "cols": N}
    -> {"ok": true, ...} | {"ok": false, "error": "..."}

The reply to ``terminal`` carries, as SCM_RIGHTS ancillary data, the master side of the pty the
terminal's shell runs on: the server relays the browser's terminal to it and never runs a shell.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import struct
import sys
import termios
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import docker as docker_sdk

from ..audit.client import AsyncAuditClient
from ..host_state import keep_private
from . import docker as docker_backend
from . import bubblewrap
from .bubblewrap import Sandboxed
from .docker import DockerSandbox
from .egress import EgressLedger, ledger_dir
from .home_image import mount_home, unmount_home
from .limits import SandboxCgroup
from .policy import KERNELS_DIR, SandboxLayout, SandboxPolicy, kernel_policy, terminal_policy
from .receiver import AuditReceiver

log = logging.getLogger("enclave.supervisor")

MAX_KERNELS = 8
MAX_TERMINALS = 8
# Signals the server may ask to deliver to one of its kernels.
KERNEL_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGHUP, signal.SIGQUIT}
STOP_GRACE_SECONDS = 5


@dataclass
class Supervisor:
    server_policy: SandboxPolicy
    layout: SandboxLayout
    bwrap: str
    # "bubblewrap", or "docker": each sandbox a container of ``image`` (enclave.sandbox.docker).
    backend: str = "bubblewrap"
    image: str = ""
    kernel_env: dict[str, str] = field(default_factory=dict)
    # The workspace allows terminals; otherwise the terminal operation is refused.
    terminals_allowed: bool = False
    # Receives the server's audit records, stamped with this sandbox (enclave.sandbox.receiver).
    receiver: AuditReceiver | None = None
    cgroup: SandboxCgroup | None = None
    server: Sandboxed | DockerSandbox | None = None
    kernels: dict[str, Sandboxed | DockerSandbox] = field(default_factory=dict)
    terminals: dict[str, Sandboxed | DockerSandbox] = field(default_factory=dict)
    docker: docker_sdk.DockerClient | None = None

    # -- set-up --

    def prepare(self) -> None:
        uid, gid = self.server_policy.identity.uid, self.server_policy.identity.gid
        if self.backend == "docker":  # what a killed supervisor of this server left running
            for name in docker_backend.remove_orphans(self._docker(), self.layout.run):
                log.warning("removed container %s, left by an earlier run", name)
        # The home is its image, mounted before any sandbox binds it (its quota: enclave.sandbox.home_image).
        mount_home(self.layout.home_image, self.layout.home, self.server_policy.limits.disk_mb, uid, gid)
        self.layout.lab_state.mkdir(parents=True, exist_ok=True)
        os.chown(self.layout.lab_state, uid, gid)
        self.layout.lab_state.chmod(0o700)
        # The runtime dir is root's; the server owns only its own part. kernels/ stays root's so
        # the server cannot swap a kernel's directory for a link to somewhere else on the host.
        for d, owner, mode in (
            (self.layout.run, (0, 0), 0o700),
            (self.layout.server_run, (uid, gid), 0o700),
            (self.layout.kernels, (0, 0), 0o755),
        ):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, *owner)
            d.chmod(mode)
        self.layout.exports_socket_dir.mkdir(parents=True, exist_ok=True)
        # Named by uid too: unique on the host even across hubs.
        self.cgroup = SandboxCgroup.create(f"{self.server_policy.name}-{uid}", self.server_policy.limits)

    def _docker(self) -> docker_sdk.DockerClient:
        if self.docker is None:
            self.docker = docker_sdk.from_env()
        return self.docker

    async def _start(self, policy: SandboxPolicy, files: Path, log_path: Path,
                     tty: int | None = None) -> Sandboxed | DockerSandbox:
        """Start one sandbox; its output goes to ``log_path``, or it runs on the pty slave ``tty``."""
        if self.backend == "docker":
            return await docker_backend.start(self._docker(), policy, self.image, files, log_path,
                                              self.cgroup and self.cgroup.docker_parent, self.layout.run)
        try:
            return await bubblewrap.start(policy, self.bwrap, files, log_path, self.cgroup, tty)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; see {log_path}") from None

    # -- the launcher: kernels on the server's request --

    def _kernel_dir(self, kernel_id: str) -> Path:
        try:
            canonical = str(uuid.UUID(kernel_id))
        except (ValueError, TypeError):
            raise ValueError(f"kernel id {kernel_id!r} is not a UUID") from None
        if canonical != kernel_id:
            raise ValueError(f"kernel id {kernel_id!r} is not in canonical form")
        return self.layout.kernels / kernel_id

    async def handle(self, request: dict) -> dict:
        op = request.get("op")
        kernel_id = request.get("kernel_id", "")
        kdir = self._kernel_dir(kernel_id)
        kernel = self.kernels.get(kernel_id)
        if op == "prepare":
            if kernel is not None and kernel.returncode is None:
                raise ValueError(f"kernel {kernel_id} is running")
            if kernel is None and len(self.kernels) >= MAX_KERNELS:
                raise ValueError(f"at most {MAX_KERNELS} kernels per workspace server")
            uid, gid = self.server_policy.identity.uid, self.server_policy.identity.gid
            kdir.mkdir(exist_ok=True)
            os.chown(kdir, uid, gid)
            kdir.chmod(0o700)
            return {"ipc_dir": f"{KERNELS_DIR}/{kernel_id}"}
        if op == "start":
            if kernel is not None and kernel.returncode is None:
                raise ValueError(f"kernel {kernel_id} is already running")
            if not kdir.is_dir() or kdir.is_symlink():
                raise ValueError(f"kernel {kernel_id} was not prepared")
            policy = kernel_policy(self.server_policy, self.layout, kernel_id, self.kernel_env)
            cwd = _home_subdir(request.get("cwd"), policy.identity.home)
            if cwd:
                policy = replace(policy, workdir=cwd)
            started = await self._start(policy, self.layout.run / "files" / kernel_id,
                                        self.layout.run / f"kernel-{kernel_id}.log")
            self.kernels[kernel_id] = started
            return {}
        if kernel is None:
            raise ValueError(f"no kernel {kernel_id}")
        if op == "poll":
            return {"returncode": kernel.returncode}
        if op == "signal":
            signum = int(request.get("signum", 0))
            if signum not in KERNEL_SIGNALS:
                raise ValueError(f"signal {signum} may not be sent to a kernel")
            kernel.signal(signum)
            return {}
        if op == "cleanup":
            if kernel.returncode is None:
                raise ValueError(f"kernel {kernel_id} is still running")
            await asyncio.to_thread(kernel.remove)
            if not request.get("restart"):
                del self.kernels[kernel_id]
                shutil.rmtree(kdir, ignore_errors=True)
                shutil.rmtree(self.layout.run / "files" / kernel_id, ignore_errors=True)
            return {}
        raise ValueError(f"unknown operation {op!r}")

    # -- the launcher: terminals on the server's request --

    async def open_terminal(self, request: dict) -> tuple[dict, int]:
        """Start a terminal sandbox on a new pty; return the reply and the pty's master side."""
        if not self.terminals_allowed:
            raise ValueError("this workspace does not allow terminals")
        for ended in [k for k, t in self.terminals.items() if t.returncode is not None]:
            await asyncio.to_thread(self.terminals.pop(ended).remove)
            shutil.rmtree(self.layout.run / "files" / f"terminal-{ended}", ignore_errors=True)
        if len(self.terminals) >= MAX_TERMINALS:
            raise ValueError(f"at most {MAX_TERMINALS} terminals per workspace server")
        rows, cols = request.get("rows"), request.get("cols")
        size = (struct.pack("HHHH", rows, cols, 0, 0)
                if all(isinstance(n, int) and 0 < n < 10000 for n in (rows, cols)) else None)
        terminal_id = str(uuid.uuid4())
        policy = terminal_policy(self.server_policy, self.layout, terminal_id, self.kernel_env)
        files = self.layout.run / "files" / f"terminal-{terminal_id}"
        if self.backend == "docker":  # the container makes the pty and hands its master side out
            self.terminals[terminal_id], master = await docker_backend.start_terminal(
                self._docker(), policy, self.image, files, self.cgroup and self.cgroup.docker_parent, self.layout.run)
            if size:
                fcntl.ioctl(master, termios.TIOCSWINSZ, size)
            return {"terminal_id": terminal_id}, master
        master, slave = os.openpty()
        try:
            if size:
                fcntl.ioctl(slave, termios.TIOCSWINSZ, size)
            self.terminals[terminal_id] = await self._start(policy, files, Path(os.devnull), tty=slave)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        return {"terminal_id": terminal_id}, master

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        fd = None
        try:
            line = await reader.readline()
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("a launcher request is a JSON object")
                if request.get("op") == "terminal":
                    reply, fd = await self.open_terminal(request)
                    reply = {"ok": True, **reply}
                else:
                    reply = {"ok": True, **await self.handle(request)}
            except (ValueError, RuntimeError, OSError, json.JSONDecodeError) as exc:
                log.warning("launcher request refused: %s", exc)
                reply = {"ok": False, "error": str(exc)}
            data = json.dumps(reply).encode() + b"\n"
            if fd is None:
                writer.write(data)
                await writer.drain()
            else:
                # The pty travels with the reply (SCM_RIGHTS); asyncio's transport cannot send it.
                with socket.socket(fileno=os.dup(writer.get_extra_info("socket").fileno())) as conn:
                    socket.send_fds(conn, [data], [fd])
        finally:
            if fd is not None:
                os.close(fd)
            writer.close()

    # -- life cycle --

    async def run(self) -> int:
        try:
            self.prepare()
            uid, gid = self.server_policy.identity.uid, self.server_policy.identity.gid
            sock = self.layout.server_run / "launcher.sock"
            sock.unlink(missing_ok=True)
            launcher = await asyncio.start_unix_server(self.serve_client, path=str(sock))
            os.chown(sock, uid, gid)
            sock.chmod(0o600)
            receiving = await self.receiver.serve(self.layout.audit_receiver / "receiver.sock", uid, gid)
            self.server = await self._start(self.server_policy, self.layout.run / "files" / "server",
                                            self.layout.run / "server.log")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            server_exit = asyncio.ensure_future(self.server.wait())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait([server_exit, stopping], return_when=asyncio.FIRST_COMPLETED)
            launcher.close()
            await self.shutdown()
            # After the server and its terminals are gone: what they sent last is recorded.
            receiving.close()
            return self.server.returncode or 0
        finally:
            # Whether it ran or failed to start: the home is not left mounted.
            unmount_home(self.layout.home)

    async def shutdown(self) -> None:
        started = [s for s in [self.server, *self.kernels.values(), *self.terminals.values()] if s]
        running = [s for s in started if s.returncode is None]
        for s in running:
            s.signal(signal.SIGTERM)
        # A shell has nothing to save, and its sandbox's first process ignores SIGTERM.
        for t in self.terminals.values():
            t.signal(signal.SIGKILL)
        try:
            await asyncio.wait_for(asyncio.gather(*(s.wait() for s in running)), STOP_GRACE_SECONDS)
        except TimeoutError:
            for s in running:
                if s.returncode is None:
                    s.kill()
            await asyncio.gather(*(s.wait() for s in running))
        for s in started:
            await asyncio.to_thread(s.remove)
        shutil.rmtree(self.layout.server_run, ignore_errors=True)
        shutil.rmtree(self.layout.kernels, ignore_errors=True)
        shutil.rmtree(self.layout.audit_receiver, ignore_errors=True)
        shutil.rmtree(self.layout.run / "files", ignore_errors=True)
        if self.cgroup is not None:
            self.cgroup.remove()


def _home_subdir(cwd: object, home: str) -> str:
    if not isinstance(cwd, str):
        return ""
    norm = os.path.normpath(cwd)
    return norm if norm == home or norm.startswith(home + "/") else ""


def load_spec(path: Path) -> Supervisor:
    spec = json.loads(path.read_text())
    layout = spec["layout"]
    return Supervisor(
        server_policy=SandboxPolicy.from_dict(spec["server"]),
        layout=SandboxLayout(
            env=Path(layout["env"]), home=Path(layout["home"]), home_image=Path(layout["home_image"]),
            run=Path(layout["run"]),
            hub_socket_dir=Path(layout["hub_socket_dir"]),
            exports_socket_dir=Path(layout["exports_socket_dir"]),
            data=tuple((Path(src), name) for src, name in layout["data"]),
            lab_state=Path(layout["lab_state"]),
        ),
        bwrap=spec["bwrap"],
        backend=spec.get("backend", "bubblewrap"),
        image=spec.get("image", ""),
        kernel_env=spec["kernel_env"],
        terminals_allowed=bool(spec.get("terminals", False)),
        receiver=AuditReceiver(AsyncAuditClient(spec["audit"]["socket"]), spec["audit"]["user"],
                               spec["audit"]["workspace"], spec["audit"]["sandbox"],
                               # The operator's egress budget in this workspace, kept across restarts.
                               EgressLedger.open(ledger_dir(spec["audit"]["socket"]), spec["audit"]["user"],
                                                 spec["audit"]["workspace"])),
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    keep_private()  # its logs hold all code executed
    logging.basicConfig(level=logging.INFO, format="%(asctime)s supervisor %(levelname)s %(message)s")
    return asyncio.run(load_spec(Path(argv[0])).run())


if __name__ == "__main__":
    sys.exit(main())
