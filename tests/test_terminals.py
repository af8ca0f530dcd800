"""Per-workspace guard settings, and terminals: off unless the workspace allows them; then each
runs in a sandbox of its own.

Against the session hub (``conftest.py``): dave operates workspace ``gamma``, whose guard settings
(set with the CLI, as an admin would) allow terminals, hold output to 64 KiB per command and raise
the upload limit. Every
terminal is driven over its websocket through the proxy, as JupyterLab's terminal does.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from conftest import PASSWORD
from enclave_testing import CHROMIUM, CHROMIUM_ARGS, grant, log_in, processes_of_uid, wait_for

from enclave import accounts, workspaces
from enclave.settings import Settings

pytestmark = pytest.mark.backends("bubblewrap", "docker")

BUDGET_KB = 64
HUB_TOKEN_VARS = re.compile(r"JUPYTERHUB_API_TOKEN|JPY_API_TOKEN")


@pytest.fixture(scope="module")
def dave(enclave):
    settings = Settings(home=enclave.home)
    accounts.add_user(settings, "dave", ["operator"], PASSWORD)
    workspaces.create(settings, "gamma")
    workspaces.add_member(settings, "gamma", "dave", "operator")
    grant(settings, "gamma", "households@1")
    r = enclave.enclave("workspace", "set-guard", "gamma", "terminals=true", "output_message_max_kb=16",
                        f"output_cell_max_kb={BUDGET_KB}", "upload_max_mb=2.5")
    assert r.returncode == 0, r.stderr
    session = enclave.login("dave", PASSWORD)
    assert session.start("gamma").status_code == 200
    yield session
    session.stop("gamma")


@pytest.fixture
def terminal(dave):
    t = dave.terminal("gamma")
    yield t
    t.close()


def sandbox_uid(hub, user: str, ws: str) -> int:
    spec = json.loads((hub.home / "run" / "sandboxes" / user / ws / "spec.json").read_text())
    return spec["server"]["identity"]["uid"]


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # it has just exited
        return b""


def shells_of_uid(uid: int) -> list[int]:
    return [pid for pid in processes_of_uid(uid) if cmdline(pid).startswith(b"/bin/bash\0--norc")]


def sleepers_of_uid(uid: int) -> list[int]:
    return [pid for pid in processes_of_uid(uid) if cmdline(pid) == b"sleep\x004242\x00"]




# -- settings -------------------------------------------------------------------------------------


def test_guard_settings_are_checked_by_the_guard_and_nothing_changes_on_error(enclave, dave):
    before = enclave.enclave("workspace", "list").stdout
    for items, message in (
        (["terminals=yes"], "guard setting 'terminals' must be bool"),
        (["colour=red"], "unknown guard setting(s): colour"),
        (["upload_max_mb=500"], "'upload_max_mb' must be within"),
        (["terminals=false", "read_max_mb=0"], "'read_max_mb' must be within"),
        (['acro={"safe_threshold": 1}'], "ACRO thresholds are set in [exports]"),
        (["terminals"], "'terminals' is not KEY=VALUE"),
    ):
        r = enclave.enclave("workspace", "set-guard", "gamma", *items)
        assert r.returncode != 0 and message in r.stderr, (items, r.stderr)
    r = enclave.enclave("workspace", "set-guard", "nowhere", "terminals=true")
    assert r.returncode != 0 and "no workspace named 'nowhere'" in r.stderr
    assert enclave.enclave("workspace", "list").stdout == before
    assert (f'guard:     {{"output_cell_max_kb": {BUDGET_KB}, "output_message_max_kb": 16, "terminals": true,'
            ' "upload_max_mb": 2.5}' in before)


def test_guard_settings_reach_the_workspace_s_server(dave, alice, alice_kernel):
    def upload_limit(session, ws):
        r = session.http.get(f"{session.server_url(ws)}/enclave/api/uploads")
        assert r.status_code == 200, r.text
        return r.json()["max_bytes"]

    assert upload_limit(dave, "gamma") == int(2.5 * 1024 * 1024)
    assert upload_limit(alice, "alpha") == 1024 * 1024  # the default, where nothing is set


# -- a terminal is a sandbox of its own -----------------------------------------------------------


def test_terminal_sees_the_workspace_and_nothing_of_the_server(enclave, dave, terminal):
    assert terminal.run("cat /data/households@1/table.csv").startswith("district,size")
    # The same home as the kernels: a file made here is the operator's own.
    terminal.run("echo from-the-terminal > made-in-terminal.txt")
    r = dave.server_api("gamma", "GET", "/contents/made-in-terminal.txt")
    assert r.status_code == 200 and r.json()["content"] == "from-the-terminal\n"
    # No hub token, no server sockets or runtime files, not the server's processes.
    assert not HUB_TOKEN_VARS.search(terminal.run("env"))
    assert "No such file" in terminal.run("ls /run/enclave 2>&1")
    processes = terminal.run("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '")
    assert "enclave_singleuser" not in processes and "/bin/bash --norc --noprofile -i" in processes
    uid = sandbox_uid(enclave, "dave", "gamma")
    assert terminal.run("id -u").strip() == str(uid)
    assert terminal.run("grep -E '^(CapEff|NoNewPrivs)' /proc/self/status").split() == [
        "CapEff:", "0000000000000000", "NoNewPrivs:", "1"]


def test_terminal_has_no_network(enclave, terminal):
    assert terminal.run("cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '").split() == ["lo"]
    out = terminal.run(
        "python -c \"import socket; s=socket.socket(); s.settimeout(3);"
        f" print('REACHED' if s.connect_ex(('127.0.0.1', {enclave.port})) == 0 else 'REFUSED')\"")
    assert "REFUSED" in out and "REACHED" not in out
    assert "REACHED" not in terminal.run("getent hosts pypi.org || echo NO-DNS")


def test_ctrl_c_reaches_the_shell_s_foreground_job(terminal):
    terminal.send("sleep 300\r")
    terminal.read_until("sleep 300\r\n")
    terminal.send("\x03")
    assert terminal.run("echo after-interrupt", timeout=10).strip() == "after-interrupt"


def test_output_pauses_at_the_budget_per_command_and_input_is_audited(enclave, terminal):
    command = "python -c \"print('Q' * 1_000_000)\""
    notice = f"output paused after this workspace's budget of {BUDGET_KB} KiB"
    terminal.send(command + "\r")
    first = terminal.read_until(notice)
    assert BUDGET_KB * 1024 - 200 <= first.count("Q") <= BUDGET_KB * 1024 + 1
    # Paused, not finished: nothing more until the operator asks for it with Enter...
    with pytest.raises(TimeoutError):
        terminal.read_until("Q", timeout=3)
    terminal.send("\r")
    more = terminal.read_until(notice)
    assert BUDGET_KB * 1024 - 200 <= more.count("Q") <= BUDGET_KB * 1024
    # ...or stops it with Ctrl-C; the next command has a budget of its own.
    terminal.send("\x03")
    assert terminal.run("echo next-command").strip() == "next-command"
    typed = enclave.audit_records(action="terminal.input", workspace="gamma")
    assert typed and all(r["actor"] == "dave" and r["sandbox"].startswith("dave/gamma/") for r in typed)
    inputs = [r["detail"]["text"] for r in typed]
    assert command in inputs and "\x03" in inputs and any("echo next-command" in i for i in inputs)
    paused = [r for r in enclave.audit_records(action="egress.notice", workspace="gamma")
              if r["detail"]["channel"] == "terminal_output"]
    assert len(paused) >= 2 and paused[-1]["detail"]["used"] == BUDGET_KB * 1024


def test_closing_a_terminal_ends_its_sandbox(enclave, dave):
    uid = sandbox_uid(enclave, "dave", "gamma")
    before = set(shells_of_uid(uid))
    t = dave.terminal("gamma")
    # A process that leaves the shell's session and ignores hang-ups goes with the sandbox too.
    t.run("(setsid nohup sleep 4242 >/dev/null 2>&1 &)")
    (mine,) = set(shells_of_uid(uid)) - before
    assert sleepers_of_uid(uid)
    assert dave.server_api("gamma", "DELETE", f"/terminals/{t.name}").status_code == 204
    wait_for(lambda: mine not in shells_of_uid(uid), 30, "the terminal's shell to end")
    wait_for(lambda: not sleepers_of_uid(uid), 30, "the terminal's detached process to end")
    t.close()
    # `exit` in the shell ends the sandbox and closes the terminal in the browser.
    t = dave.terminal("gamma")
    t.run("true")
    (mine,) = set(shells_of_uid(uid)) - before
    t.send("exit\r")
    t.wait_closed()
    wait_for(lambda: mine not in shells_of_uid(uid), 30, "the terminal's shell to end")
    t.close()


# -- off unless allowed ---------------------------------------------------------------------------


def test_supervisor_refuses_a_terminal_to_a_workspace_that_does_not_allow_them(enclave, alice_kernel):
    """Even a server that asked (say, one whose guard was bypassed) gets no terminal in alpha."""
    launcher = enclave.home / "run" / "sandboxes" / "alice" / "alpha" / "server" / "launcher.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(launcher))
        s.sendall(b'{"op": "terminal", "rows": 24, "cols": 80}\n')
        reply, fds, _, _ = socket.recv_fds(s, 65536, 1)
    assert fds == []
    assert json.loads(reply) == {"ok": False, "error": "this workspace does not allow terminals"}


def test_terminal_plugins_follow_the_workspace(enclave, dave, alice_kernel, alice):
    def page_config(session, ws):
        html = session.http.get(f"{session.server_url(ws)}/lab").text
        return json.loads(re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                                    html, re.S).group(1))

    assert "@jupyterlab/terminal-extension" not in page_config(dave, "gamma")["disabledExtensions"]
    alpha = page_config(alice, "alpha")
    assert "@jupyterlab/terminal-extension" in alpha["disabledExtensions"]
    assert "@jupyterlab/terminal-extension" in alpha["lockedExtensions"]


# -- in JupyterLab ------------------------------------------------------------------------------


@pytest.mark.browser
async def test_terminal_opens_and_runs_in_jupyterlab(enclave, dave):
    """In chromium, under the guard's CSP: the launcher offers a terminal, typing in it runs
    commands in the terminal sandbox (the file it writes is the operator's own)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            page.set_default_timeout(90_000)
            await log_in(page, enclave, "dave", PASSWORD)
            await page.goto(f"{enclave.user_origin('dave')}/user/dave/gamma/lab")
            await page.locator(".jp-LauncherCard[title='Start a new terminal session']").click()
            await page.locator(".jp-Terminal .xterm-helper-textarea").wait_for(state="attached")
            await page.locator(".jp-Terminal").click()
            await page.keyboard.type("wc -l < /data/households@1/table.csv > from-the-browser.txt\n")

            def written():
                r = dave.server_api("gamma", "GET", "/contents/from-the-browser.txt")
                return r.status_code == 200 and r.json()["content"].strip() == "2"

            wait_for(written, 60, "the browser's terminal to write the file")
        finally:
            await browser.close()
