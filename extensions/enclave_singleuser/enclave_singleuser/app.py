"""jupyterhub-singleuser, listening only on a unix socket.

Shim for JupyterHub 6.1.1: ``JupyterHubSingleUser.load_config_file`` always derives
``ServerApp.port`` from ``$JUPYTERHUB_SERVICE_URL`` (port 80 when the URL has none), and
jupyter_server refuses a port other than its default together with ``--sock`` ("Options --port
and --sock are mutually exclusive"). A sandbox has no network: when a socket is configured, the
port is put back to jupyter_server's default, which it then drops in favour of the socket.

(The kernelspec allow-list and the sandbox provisioner as default are system config of the
environment: extensions/enclave_guard/jupyter-config/jupyter_server_config.json.)
"""

from jupyter_server.serverapp import DEFAULT_JUPYTER_SERVER_PORT
from jupyterhub.singleuser.extension import JupyterHubSingleUser


class SocketSingleUser(JupyterHubSingleUser):
    def load_config_file(self):
        super().load_config_file()
        if self.serverapp.sock:
            # The parent has already pushed its port into the server's config and trait, and
            # the extension's own config is pushed again after this: undo it in all three.
            self.config.ServerApp.port = DEFAULT_JUPYTER_SERVER_PORT
            self.serverapp.config.ServerApp.port = DEFAULT_JUPYTER_SERVER_PORT
            self.serverapp.port = DEFAULT_JUPYTER_SERVER_PORT


main = SocketSingleUser.launch_instance
