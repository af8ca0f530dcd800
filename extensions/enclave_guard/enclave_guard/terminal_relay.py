"""The terminal relay: the program behind every terminal of the operator's server.

The server never runs a shell. For each terminal, jupyter_server's terminal manager (see
:mod:`.terminals`) starts this relay on its pty. The relay asks the sandbox supervisor, over the
launcher socket, for a terminal sandbox (a sibling of the kernels' sandboxes: the home and /data,
nothing of the server) and receives the master side of that sandbox's pty. Then it copies bytes:

- browser -> shell: every keystroke; each line of input goes to the audit log before its line end
  reaches the shell (a line the log does not take is not run);
- shell -> browser: held to the workspace's per-execution output budget, where an execution ends
  with each line of input (Enter) or interrupt (Ctrl-C, Ctrl-\\, Ctrl-Z). Over the budget, output
  pauses, as a pager would: the relay stops reading, the program blocks on its next write, and a
  notice says so. The next line of input (or an interrupt) lets another budget's worth through.

It runs as a program of its own, so it imports nothing heavier than the guard's policy, audit and
egress modules. Output paused at the budget is an egress notice in the audit log. What passes is
charged to the operator's egress budget (:mod:`.egress`); past it, output is held back, the reason
shown once per command.
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

from . import messages
from .audit import AuditTrail, RecordNotTaken
from .egress import EgressBudget
from .policy import AUDIT_SOCKET, WORKSPACE_FILE, load_workspace

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
    """Cuts keystrokes into lines and hands each line to the audit log before it may run.

    A line end passes to the shell only once its line is recorded; if the record is not taken, the
    line end is held back (the line stays in the shell's editor, unrun) and the operator is told.
    Interrupt keys always pass: they stop things, they run nothing."""

    NOT_RUN = (b"\r\n[enclave: this line was not run: the audit log cannot record it."
               b" Press Enter again in a moment.]\r\n")

    def __init__(self, audit: AuditTrail, terminal_id: str):
        self.audit = audit
        self.terminal_id = terminal_id
        self.line = bytearray()
        self.dropped = 0

    def feed(self, data: bytes) -> tuple[bytes, bool, bool, bool]:
        """Record complete lines (an interrupt key ends one too). Return the bytes that may go on to
        the shell, whether a line ended, whether by an interrupt, and whether a line was held back."""
        passed = bytearray()
        ended = interrupted = held_back = False
        for byte in data:
            if byte in INTERRUPTS:
                self.line.append(byte)
                interrupted = True
            if byte in LINE_ENDS or byte in INTERRUPTS:
                # An empty line is recorded too: it asks for paused output.
                if not self.flush(always=True) and byte in LINE_ENDS:
                    held_back = True
                    continue
                ended = True
            elif len(self.line) < MAX_RECORDED_LINE:
                self.line.append(byte)
            else:
                self.dropped += 1
            passed.append(byte)
        return bytes(passed), ended, interrupted, held_back

    def flush(self, always: bool = False) -> bool:
        """Record the line so far; True once the audit log has it (the line is then cleared)."""
        if always or self.line or self.dropped:
            detail = {"terminal": self.terminal_id, "text": self.line.decode("utf-8", "replace")}
            if self.dropped:
                detail["code_truncated"] = True
            try:
                self.audit.write("terminal.input", **detail)
            except RecordNotTaken as exc:
                logging.getLogger("enclave.terminal").error("terminal line not recorded: %s", exc)
                return False
        self.line.clear()
        self.dropped = 0
        return True


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


def relay(user_tty: int, master: int, budget: OutputBudget, recorder: InputRecorder, egress: EgressBudget) -> None:
    """Copy between the server's pty (``user_tty``: the browser's side) and the sandbox's pty,
    until either side closes; what the shell wrote last still reaches the browser (within the
    operator's egress budget)."""
    to_shell, to_user, held = bytearray(), bytearray(), bytearray()
    egress_held: list[bool] = []  # this command's output is held for the egress budget, and was told so
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
        held.extend(rest)
        if passed:
            # The operator's egress budget: past it, the command's output is held back, the reason
            # shown once per command (an execution).
            decision = egress.admit("terminal_output", len(passed))
            if decision.allowed:
                to_user.extend(passed)
                if notice := egress.take_notice():
                    to_user.extend(f"\r\n{notice.render()}\r\n".encode())
            elif not egress_held:
                egress_held.append(True)
                to_user.extend(f"\r\n{decision.held.render()}\r\n".encode())
        if budget.paused and not was_paused:
            try:
                recorder.audit.write("egress.notice", channel="terminal_output", used=budget.used,
                                     budget=budget.limit, reason="output paused at the budget of one command",
                                     terminal=recorder.terminal_id)
            except RecordNotTaken as exc:  # only a record of what was held back
                logging.getLogger("enclave.terminal").error("egress notice not recorded: %s", exc)

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
            data, ended, interrupted, held_back = recorder.feed(data)
            to_shell += data
            if held_back:
                to_user.extend(recorder.NOT_RUN)
            if ended:
                budget.new_execution()
                egress_held.clear()
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
        egress.report_due("terminal_output")


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
    # The notices in the operator's language (the server's, passed by the terminal manager).
    messages.set_locale(os.environ.get("ENCLAVE_GUARD_LOCALE", messages.SOURCE_LOCALE))
    workspace = load_workspace(os.environ.get("ENCLAVE_GUARD_WORKSPACE_FILE", WORKSPACE_FILE))
    audit = AuditTrail(os.environ.get("ENCLAVE_GUARD_AUDIT_SOCKET", AUDIT_SOCKET), workspace.user,
                       workspace.workspace, log)
    user_tty = sys.stdin.fileno()
    # Raw: keystrokes reach the sandbox's own pty unchanged, which does the echo, line editing
    # and signals (Ctrl-C) for the shell. Raw at once, and without flushing (TCSANOW, not setraw's
    # TCSAFLUSH): what the operator types while the sandbox starts waits for it, unechoed, whole.
    tty.setraw(user_tty, termios.TCSANOW)
    try:
        terminal_id, master = open_terminal(os.environ["ENCLAVE_LAUNCHER_SOCKET"], _winsize(user_tty))
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        os.write(user_tty, f"enclave: this terminal could not be opened: {exc}\r\n".encode())
        return 1
    recorder = InputRecorder(audit, terminal_id)
    egress = EgressBudget(audit, workspace.guard.egress_budgets)
    try:
        relay(user_tty, master, OutputBudget(workspace.guard.output_cell_max_bytes), recorder, egress)
    finally:
        recorder.flush()
        egress.flush("terminal_output")
        os.close(master)
        audit.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
