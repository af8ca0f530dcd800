"""Terminals, when the workspace allows them: each one is a relay to a sandbox of its own.

Configured as ``TerminalsExtensionApp.terminal_manager_class``; the guard refuses to start with
terminals enabled and any other manager. Whatever ``terminado_settings`` say, every terminal runs
:mod:`.terminal_relay`, so no shell ever runs inside the server's sandbox.
"""

from __future__ import annotations

import sys
from typing import Any

from jupyter_server_terminals.terminalmanager import TerminalManager

RELAY = (sys.executable, "-m", "enclave_guard.terminal_relay")


class GuardedTerminalManager(TerminalManager):
    def __init__(self, **kwargs: Any):
        kwargs["shell_command"] = list(RELAY)
        super().__init__(**kwargs)

    def make_term_env(self, *args: Any, **kwargs: Any) -> dict[str, str]:
        env = super().make_term_env(*args, **kwargs)
        # The relay records to the guard's own audit trail and reads the same workspace file.
        guard = self.parent.web_app.settings["enclave_guard"]
        env["ENCLAVE_GUARD_AUDIT_FILE"] = str(guard.audit.path)
        env["ENCLAVE_GUARD_WORKSPACE_FILE"] = str(guard.workspace_file)
        return env
