"""Enclave guard: the operator's Jupyter server lets no file out except through export review.

The server extension itself is :mod:`.extension`; this package init stays light, because the
terminal relay (:mod:`.terminal_relay`) starts as a program of its own for every terminal.
"""

__version__ = "0.1.0"


def _jupyter_server_extension_points():
    return [{"module": "enclave_guard.extension"}]


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": "enclave-guard"}]
