"""A kernel provisioner that starts each kernel in a sibling sandbox.

The server never runs kernel code itself. It asks the sandbox supervisor (outside the sandbox,
over ``$ENCLAVE_LAUNCHER_SOCKET``) to prepare a directory for the kernel's ZeroMQ ipc sockets and
connection file, writes the connection file there, and asks the supervisor to start the kernel.
The supervisor chooses the kernel's command, mounts and environment; the command line and
environment prepared here are not used, so nothing of the server (its token above all) reaches
the kernel.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.local_provisioner import LocalProvisioner


class LauncherError(RuntimeError):
    pass


class SandboxProvisioner(LocalProvisioner):
    _running = False
    _cwd: str | None = None

    async def _call(self, op: str, **fields: Any) -> dict:
        reader, writer = await asyncio.open_unix_connection(os.environ["ENCLAVE_LAUNCHER_SOCKET"])
        try:
            writer.write(json.dumps({"op": op, "kernel_id": self.kernel_id, **fields}).encode() + b"\n")
            await writer.drain()
            reply = json.loads(await reader.readline())
        finally:
            writer.close()
        if not reply.pop("ok", False):
            raise LauncherError(f"kernel {op} refused: {reply.get('error')}")
        return reply

    @property
    def has_process(self) -> bool:
        return self._running

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        ipc_dir = (await self._call("prepare"))["ipc_dir"]
        km = self.parent
        km.transport = "ipc"
        km.ip = f"{ipc_dir}/kernel"
        km.connection_file = f"{ipc_dir}/connection.json"
        self._cwd = kwargs.get("cwd")
        return await super().pre_launch(**kwargs)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        await self._call("start", cwd=self._cwd)
        self._running = True
        return self.connection_info

    async def poll(self) -> int | None:
        if not self._running:
            return 0
        return (await self._call("poll"))["returncode"]

    async def wait(self) -> int | None:
        while (code := await self.poll()) is None:
            await asyncio.sleep(0.1)
        self._running = False
        return code

    async def send_signal(self, signum: int) -> None:
        if self._running:
            await self._call("signal", signum=int(signum))

    async def kill(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGKILL)

    async def terminate(self, restart: bool = False) -> None:
        await self.send_signal(signal.SIGTERM)

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart=restart)
        try:
            await self._call("cleanup", restart=restart)
        except LauncherError as exc:
            self.log.warning("%s", exc)
