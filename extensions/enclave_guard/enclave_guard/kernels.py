"""Kernelspecs: only those the allow-list names exist, for starting kernels and for their files.

Stock ``KernelSpecManager.allowed_kernelspecs`` only filters the list the browser sees: jupyter_server
still starts any kernelspec it can find by name (``POST /api/kernels {"name": ...}``), and serves the
files of its folder (``/kernelspecs/<name>/<file>``), including a folder kernel code wrote into a data
directory. Here every look-up by name goes through the allow-list. The allow-list itself
(``enclave-python``, the sandboxed kernel) is in the guard's server config and required at start.
"""

from __future__ import annotations

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

from .messages import N_
from .refusals import Refusal


class KernelNotAllowed(NoSuchKernel, Refusal):
    def __init__(self, name: str, allowed):
        Refusal.__init__(self, 403, "guard.kernel_not_allowed",
                         N_("kernel '%(kernel)s' is not one of this workspace's kernels (%(allowed)s)"),
                         kernel=name, allowed=", ".join(sorted(allowed)))
        NoSuchKernel.__init__(self, name)


class GuardKernelSpecManager(KernelSpecManager):
    def get_kernel_spec(self, kernel_name: str):
        if kernel_name.lower() not in {n.lower() for n in self.allowed_kernelspecs}:
            raise KernelNotAllowed(kernel_name, self.allowed_kernelspecs)
        return super().get_kernel_spec(kernel_name)
