"""The kernel manager: only kernels the allow-list names are started.

``KernelSpecManager.allowed_kernelspecs`` only filters the list the browser sees; stock
jupyter_server still starts any kernelspec it can find by name (``POST /api/kernels
{"name": ...}``), including one a kernel wrote into a data directory. The allow-list itself
(``enclave-python``, the sandboxed kernel of enclave_singleuser) is set in the guard's server config
(the only file of ``jupyter_server_config.d`` that jupyter_server reads is the extension list, so
it cannot live there), and this enforces it at start.
"""

from __future__ import annotations

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web


class GuardKernelManager(AsyncMappingKernelManager):
    async def start_kernel(self, *, kernel_id=None, path=None, **kwargs):
        if kernel_id is None or kernel_id not in self:
            name = kwargs.get("kernel_name") or self.default_kernel_name
            allowed = self.kernel_spec_manager.find_kernel_specs()
            if name not in allowed:
                raise web.HTTPError(403, f"kernel '{name}' is not one of this workspace's kernels ({', '.join(sorted(allowed))})")
        return await super().start_kernel(kernel_id=kernel_id, path=path, **kwargs)
