"""Terminals, when the workspace allows them: each one is a relay to a sandbox of its own.

Configured as ``TerminalsExtensionApp.terminal_manager_class``; the guard refuses to start with
terminals enabled and any other manager. Whatever ``terminado_settings`` or the browser say, every
terminal runs :mod:`.terminal_relay`, so no shell ever runs inside the server's sandbox. The relay
runs in Python's isolated mode from "/": nothing in the home (the working directory a terminal would
otherwise get) is on its sys.path.
"""

from __future__ import annotations

import sys
from typing import Any

from jupyter_server_terminals.terminalmanager import TerminalManager

from . import messages

RELAY = (sys.executable, "-I", "-m", "enclave_guard.terminal_relay")
RELAY_CWD = "/"


class GuardedTerminalManager(TerminalManager):
    def __init__(self, **kwargs: Any):
        kwargs["shell_command"] = list(RELAY)
        super().__init__(**kwargs)

    def new_terminal(self, **kwargs: Any):
        # The browser may ask for a working directory; the relay's is never the operator's.
        kwargs["cwd"] = RELAY_CWD
        return super().new_terminal(**kwargs)

    def make_term_env(self, *args: Any, **kwargs: Any) -> dict[str, str]:
        env = super().make_term_env(*args, **kwargs)
        # The relay records to the same receiver and reads the same workspace file.
        guard = self.parent.web_app.settings["enclave_guard"]
        env["ENCLAVE_GUARD_AUDIT_SOCKET"] = str(guard.audit.socket_path)
        env["ENCLAVE_GUARD_WORKSPACE_FILE"] = str(guard.workspace_file)
        # Its notices in the operator's language, as the server's.
        env["ENCLAVE_GUARD_LOCALE"] = messages.current_locale()
        return env
