"""The terminal relay: the program behind every terminal of the operator's server.

The server never runs a shell. For each terminal, jupyter_server's terminal manager (see
:mod:`.terminals`) starts this relay on its pty. The relay asks the sandbox supervisor, over the
launcher socket, for a terminal sandbox (a sibling of the kernels' sandboxes: the home and /data,
nothing of the server) and receives the master side of that sandbox's pty. Then it copies bytes:

- browser -> shell: every keystroke, and each line of input is written to the audit trail;
- shell -> browser: held to the workspace's per-execution output budget, where an execution ends
  with each line of input (Enter) or interrupt (Ctrl-C, Ctrl-\\, Ctrl-Z). Over the budget, output
  pauses, as a pager would: the relay stops reading, the program blocks on its next write, and a
  notice says so. The next line of input (or an interrupt) lets another budget's worth through.

It runs as a program of its own, so it imports nothing heavier than the guard's policy and audit
modules.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import select
import signal
import socket
import struct
import sys
import termios
import tty

from .audit import AuditTrail
from .policy import AUDIT_FILE, WORKSPACE_FILE, load_workspace

# Longest input line kept whole in the audit trail; the rest of a longer one is counted only.
MAX_RECORDED_LINE = 16 * 1024
# Bytes the relay holds for a side that is not reading, before it stops reading the other.
BUFFER_LIMIT = 256 * 1024
LINE_ENDS = frozenset(b"\r\n")
# Keys whose signal the sandbox's pty sends to the foreground job: they end an execution too.
INTERRUPTS = frozenset(b"\x03\x1c\x1a")


class OutputBudget:
    """Output allowed per execution; over it, the rest waits for the next execution."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self.paused = False

    def new_execution(self) -> None:
        self.used, self.paused = 0, False

    def admit(self, data: bytes) -> tuple[bytes, bytes]:
        """Split ``data`` into what may pass now and what must wait; pausing adds a notice."""
        room = max(self.limit - self.used, 0)
        passed, held = data[:room], data[room:]
        self.used += len(passed)
        if held and not self.paused:
            self.paused = True
            passed += (f"\r\n[enclave: output paused after this workspace's budget of {self.limit // 1024} KiB;"
                       " press Enter for more or Ctrl-C to stop]\r\n").encode()
        return passed, held


class InputRecorder:
    """Cuts keystrokes into lines and writes each line to the audit trail."""

    def __init__(self, audit: AuditTrail, terminal_id: str):
        self.audit = audit
        self.terminal_id = terminal_id
        self.line = bytearray()
        self.dropped = 0

    def feed(self, data: bytes) -> tuple[bool, bool]:
        """Record complete lines (an interrupt key ends one too); say whether any line ended and
        whether by an interrupt."""
        ended = interrupted = False
        for byte in data:
            if byte in INTERRUPTS:
                self.line.append(byte)
                interrupted = True
            if byte in LINE_ENDS or byte in INTERRUPTS:
                self.flush(always=True)  # an empty line matters too: it asks for paused output
                ended = True
            elif len(self.line) < MAX_RECORDED_LINE:
                self.line.append(byte)
            else:
                self.dropped += 1
        return ended, interrupted

    def flush(self, always: bool = False) -> None:
        if always or self.line or self.dropped:
            fields = {"terminal": self.terminal_id, "input": self.line.decode("utf-8", "replace")}
            if self.dropped:
                fields["truncated_bytes"] = self.dropped
            self.audit.write("terminal_input", **fields)
        self.line.clear()
        self.dropped = 0


def _winsize(fd: int) -> bytes:
    return fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)


def open_terminal(launcher: str, winsize: bytes) -> tuple[str, int]:
    """Ask the supervisor for a terminal sandbox; return its id and its pty's master side."""
    rows, cols, _, _ = struct.unpack("HHHH", winsize)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(launcher)
        conn.sendall(json.dumps({"op": "terminal", "rows": rows, "cols": cols}).encode() + b"\n")
        data, fds = b"", []
        while not data.endswith(b"\n"):
            chunk, got, _, _ = socket.recv_fds(conn, 65536, 1)
            fds += got
            if not chunk:
                break
            data += chunk
    reply = json.loads(data or b"{}")
    if not reply.get("ok") or len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise RuntimeError(reply.get("error") or "the sandbox supervisor sent no terminal")
    return reply["terminal_id"], fds[0]


def relay(user_tty: int, master: int, budget: OutputBudget, recorder: InputRecorder) -> None:
    """Copy between the server's pty (``user_tty``: the browser's side) and the sandbox's pty,
    until either side closes; what the shell wrote last still reaches the browser."""
    to_shell, to_user, held = bytearray(), bytearray(), bytearray()
    shell_open = True
    stopping = []
    for signum in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.append(True))
    signal.signal(signal.SIGWINCH, lambda *_: fcntl.ioctl(master, termios.TIOCSWINSZ, _winsize(user_tty)))
    os.set_blocking(master, False)
    os.set_blocking(user_tty, False)

    def admit(data: bytes) -> None:
        was_paused = budget.paused
        passed, rest = budget.admit(data)
        to_user.extend(passed)
        held.extend(rest)
        if budget.paused and not was_paused:
            recorder.audit.write("terminal_output_paused", terminal=recorder.terminal_id, after_bytes=budget.used)

    while not stopping and (shell_open or to_user):
        readers = []
        if shell_open and not budget.paused and len(to_user) < BUFFER_LIMIT:
            readers.append(master)
        if shell_open and len(to_shell) < BUFFER_LIMIT:
            readers.append(user_tty)
        writers = ([master] if shell_open and to_shell else []) + ([user_tty] if to_user else [])
        readable, writable, _ = select.select(readers, writers, [], 1.0)
        if user_tty in readable and (data := _read(user_tty)) is not None:
            if not data:  # the server closed the terminal
                return
            to_shell += data
            ended, interrupted = recorder.feed(data)
            if ended:
                budget.new_execution()
                # Enter lets the paused output continue; an interrupt drops it, as the pty does.
                waiting, held[:] = (b"" if interrupted else bytes(held)), b""
                admit(waiting)
        if master in readable and (data := _read(master)) is not None:
            if not data:  # the shell exited and its sandbox is gone
                shell_open = False
            admit(data)
        if master in writable and shell_open:
            del to_shell[:_write(master, to_shell)]
        if user_tty in writable:
            del to_user[:_write(user_tty, to_user)]


def _read(fd: int) -> bytes | None:
    """Bytes read; b"" at the end; None when there is nothing to read after all."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None
    except OSError as exc:
        if exc.errno == errno.EIO:  # a pty whose other side has closed
            return b""
        raise


def _write(fd: int, data: bytearray) -> int:
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    log = logging.getLogger("enclave.terminal")
    workspace = load_workspace(os.environ.get("ENCLAVE_GUARD_WORKSPACE_FILE", WORKSPACE_FILE))
    audit = AuditTrail(os.environ.get("ENCLAVE_GUARD_AUDIT_FILE", AUDIT_FILE), workspace.user,
                       workspace.workspace, log)
    user_tty = sys.stdin.fileno()
    try:
        terminal_id, master = open_terminal(os.environ["ENCLAVE_LAUNCHER_SOCKET"], _winsize(user_tty))
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        print(f"enclave: this terminal could not be opened: {exc}", flush=True)
        return 1
    audit.write("terminal_started", terminal=terminal_id)
    # Raw: keystrokes reach the sandbox's own pty unchanged, which does the echo, line editing
    # and signals (Ctrl-C) for the shell.
    tty.setraw(user_tty)
    recorder = InputRecorder(audit, terminal_id)
    try:
        relay(user_tty, master, OutputBudget(workspace.guard.output_cell_max_bytes), recorder)
    finally:
        recorder.flush()
        os.close(master)
        audit.write("terminal_ended", terminal=terminal_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
