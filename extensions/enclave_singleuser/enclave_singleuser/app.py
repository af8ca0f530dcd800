"""jupyterhub-singleuser as a sandbox runs it: on a unix socket, kernels only in sibling sandboxes.

The kernel settings below are pushed into the server's config by this starter extension, from
the read-only environment, after all config files: nothing in the user's reach can change them.

Shim for JupyterHub 6.1.1: ``JupyterHubSingleUser.load_config_file`` always derives
``ServerApp.port`` from ``$JUPYTERHUB_SERVICE_URL`` (port 80 when the URL has none), and
jupyter_server refuses a port other than its default together with ``--sock`` ("Options --port
and --sock are mutually exclusive"). A sandbox has no network: when a socket is configured, the
port is put back to jupyter_server's default, which it then drops in favour of the socket.
"""

from jupyter_server.serverapp import DEFAULT_JUPYTER_SERVER_PORT
from jupyterhub.singleuser.extension import JupyterHubSingleUser
from traitlets.config import Config

KERNELSPEC = "enclave-python"
SANDBOX_SERVER_CONFIG = {
    # Only Enclave's kernelspec; every kernel goes through the sandbox provisioner.
    "KernelSpecManager": {"allowed_kernelspecs": {KERNELSPEC}, "ensure_native_kernel": False},
    "KernelProvisionerFactory": {"default_provisioner_name": "enclave-sandbox"},
    "MappingKernelManager": {"default_kernel_name": KERNELSPEC},
}


class SocketSingleUser(JupyterHubSingleUser):
    def load_config_file(self):
        super().load_config_file()
        self.config.merge(Config(SANDBOX_SERVER_CONFIG))
        if self.serverapp.sock:
            # The parent has already pushed its port into the server's config and trait, and
            # the extension's own config is pushed again after this: undo it in all three.
            self.config.ServerApp.port = DEFAULT_JUPYTER_SERVER_PORT
            self.serverapp.config.ServerApp.port = DEFAULT_JUPYTER_SERVER_PORT
            self.serverapp.port = DEFAULT_JUPYTER_SERVER_PORT


main = SocketSingleUser.launch_instance
