"""The single-user server as Enclave runs it inside a sandbox.

- :mod:`.app` starts jupyterhub-singleuser on a unix socket (one shim, see there);
- :mod:`.provisioner` starts every kernel in a sibling sandbox through the sandbox supervisor.
"""


def _jupyter_server_extension_points():
    from .app import SocketSingleUser

    return [{"module": "enclave_singleuser.app", "app": SocketSingleUser}]
