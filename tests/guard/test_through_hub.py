"""Acceptance: each channel attacked through the proxy with the operator's own session.

A real hub, proxy and bubblewrap sandboxes (``tests/conftest.py``); alice is logged in as a browser
would be and her alpha workspace server runs the guard from the read-only environment. Each test
makes the request a browser or a script with her cookies would make, and asserts the refusal and
that none of the file's bytes came back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid

import pytest

MARK = "Zanzibar-7781"
CSV = f"id,name\n1,{MARK}\n"
RELEASED = "Heping"  # a value of the release mounted at /data/households@1/table.csv


def write_in_home(kernel, name: str, text: str) -> None:
    out, err = kernel.run(
        "import os, pathlib\n"
        f"p = pathlib.Path.home() / {name!r}\np.parent.mkdir(parents=True, exist_ok=True)\n"
        f"p.write_text({text!r})\nprint('ok')")
    assert err is None and out.strip() == "ok", err


def exists_in_home(kernel, name: str) -> bool:
    return kernel.value(f"import pathlib, json\nprint(json.dumps((pathlib.Path.home() / {name!r}).exists()))")


def get(session, path: str, method: str = "GET", **kw):
    return session.server_request("alpha", method, path, allow_redirects=False, **kw)


def refused(r, *marks: str) -> None:
    assert r.status_code in (403, 404), (r.status_code, r.text[:300])
    for mark in marks or (MARK,):
        assert mark not in r.text
        assert base64.b64encode(mark.encode()).decode()[:8] not in r.text


pytestmark = pytest.mark.backends("bubblewrap", "docker")


def test_files_download(alice, alice_kernel):
    write_in_home(alice_kernel, "results.csv", CSV)
    for path in ("files/results.csv?download=1", "files/results.csv"):
        r = get(alice, path)
        assert r.status_code == 403
        refused(r)


def test_contents_base64(alice, alice_kernel):
    write_in_home(alice_kernel, "results.csv", CSV)
    r = alice.server_api("alpha", "GET", "/contents/results.csv?format=base64&type=file")
    assert r.status_code == 403
    refused(r)


def test_symlink_to_released_data(alice, alice_kernel):
    out, err = alice_kernel.run(
        "import os, pathlib\nh = pathlib.Path.home()\n"
        "for n in ('data-link.csv', 'data-link.txt'):\n"
        "    (h / n).unlink(missing_ok=True)\n"
        "    os.symlink('/data/households@1/table.csv', h / n)\n"
        "print(open(h / 'data-link.txt').read())")
    assert err is None and RELEASED in out  # the kernel itself can read the release
    for path in ("/contents/data-link.txt", "/contents/data-link.csv",
                 "/contents/data-link.txt?format=base64&type=file"):
        r = alice.server_api("alpha", "GET", path)
        refused(r, RELEASED)


def test_nbconvert(alice, alice_kernel):
    write_in_home(alice_kernel, "report.ipynb", json.dumps({
        "cells": [{"cell_type": "markdown", "metadata": {}, "source": MARK}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    for method, path in (("GET", "nbconvert/html/report.ipynb"), ("GET", "nbconvert/script/report.ipynb"),
                         ("GET", "view/report.ipynb")):
        r = get(alice, path, method)
        assert r.status_code == 403
        refused(r)


def test_csv_upload(alice, alice_kernel):
    name = f"upload-{uuid.uuid4().hex[:6]}.csv"
    r = alice.server_api("alpha", "PUT", f"/contents/{name}", json={
        "type": "file", "format": "base64", "content": base64.b64encode(CSV.encode()).decode()})
    assert r.status_code == 403
    assert not exists_in_home(alice_kernel, name)


def _run_raw(kernel, code: str) -> list[bytes]:
    """Execute over the kernel's websocket; return every frame received for it, raw."""
    msg_id = uuid.uuid4().hex
    kernel.ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "alice",
                   "session": kernel.session_id, "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    frames = []
    while True:
        frame = kernel.ws.recv()
        raw = frame.encode() if isinstance(frame, str) else frame
        msg = json.loads(frame)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["msg_type"] != "execute_input":  # the echo of the code itself
            frames.append(raw)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return frames


def test_50_mb_print(alice_kernel):
    frames = _run_raw(alice_kernel, "print('Q' * (50 * 1024 * 1024))")
    received = sum(len(f) for f in frames)
    # The default cell budget is 2 MiB; everything else stays in the sandbox.
    assert received < 2 * 1024 * 1024 + 64 * 1024
    assert b"output withheld" in b"".join(frames)


def test_html_data_link(alice_kernel):
    frames = b"".join(_run_raw(
        alice_kernel,
        "from IPython.display import HTML, display\n"
        f"display(HTML('<a download=\"t.csv\" href=\"data:text/csv;base64,{base64.b64encode(CSV.encode()).decode()}\">t</a>'))"))
    assert b"data:text/csv" not in frames and b"download" not in frames
    assert base64.b64encode(CSV.encode())[:12] not in frames


def test_javascript_output(alice_kernel):
    frames = b"".join(_run_raw(
        alice_kernel,
        "from IPython.display import Javascript, display\n"
        "display(Javascript('navigator.clipboard.writeText(document.body.innerText)'))"))
    assert b"application/javascript" not in frames and b"navigator.clipboard" not in frames


def test_refusals_reach_the_browser_as_the_server_gave_them(alice, alice_kernel):
    """Through the proxy, a request the guard refuses at once still gets the guard's answer, not a
    proxy 503 (enclave/proxy_unix_keepalive.mjs; without it about 1 in 100 of these failed)."""
    refused, listed = [], []
    for i in range(600):
        refused.append(get(alice, "api/contents/refused.csv", "PUT",
                           json={"type": "file", "format": "text", "content": CSV}).status_code)
        if i % 3 == 0:  # other traffic in between, as a browser makes
            listed.append(get(alice, "api/contents").status_code)
    assert refused == [403] * 600, {c: refused.count(c) for c in set(refused)}
    assert listed == [200] * 200, {c: listed.count(c) for c in set(listed)}


def test_terminal_when_disabled(alice):
    for method, path in (("GET", "api/terminals"), ("POST", "api/terminals"), ("GET", "terminals/websocket/1")):
        r = get(alice, path, method)
        assert r.status_code == 403, path


def test_post_events(alice):
    r = get(alice, "api/events", "POST", json={
        "schema_id": "https://events.jupyter.org/jupyter_server/contents_service/v1", "version": "1",
        "data": {"action": "get", "path": "forged"}})
    assert r.status_code == 403


def test_plugin_reenabled_through_user_labconfig(alice, alice_kernel):
    plugins = ["@jupyterlab/docmanager-extension:download", "@jupyterlab/filebrowser-extension:download",
               "@jupyterlab/filebrowser-extension:open-browser-tab", "@jupyterlab/notebook-extension:export"]
    write_in_home(alice_kernel, ".jupyter/labconfig/page_config.json", json.dumps({
        "disabledExtensions": {p: False for p in plugins}, "lockedExtensions": {p: False for p in plugins}}))
    html = get(alice, "lab").text
    config = json.loads(re.search(r'<script id="jupyter-config-data" type="application/json">(.*?)</script>',
                                  html, re.S).group(1))
    for p in plugins:
        assert p in config["disabledExtensions"] and p in config["lockedExtensions"]
    assert get(alice, "lab/api/plugins", "POST", json={"cmd": "enable", "plugin_name": plugins[0]}).status_code == 403


def test_lab_settings_written_by_a_kernel(alice, alice_kernel):
    write_in_home(alice_kernel, ".jupyter/lab/user-settings/@jupyterlab/apputils-extension/themes.jupyterlab-settings",
                  '{\n // ' + MARK + '\n "theme": "JupyterLab Dark"}')
    r = get(alice, "lab/api/settings/@jupyterlab/apputils-extension:themes")
    assert r.status_code == 200
    assert MARK not in r.text


def test_kernelspec_in_the_home(alice, alice_kernel):
    write_in_home(alice_kernel, ".local/share/jupyter/kernels/mine/kernel.json", json.dumps({
        "argv": ["/bin/sh", "-c", "touch $HOME/kernelspec-ran; sleep 30"], "display_name": "mine", "language": "sh"}))
    specs = alice.server_api("alpha", "GET", "/kernelspecs").json()["kernelspecs"]
    assert "mine" not in specs
    r = alice.server_api("alpha", "POST", "/kernels", json={"name": "mine"})
    assert r.status_code >= 400
    assert not exists_in_home(alice_kernel, "kernelspec-ran")


def test_executions_reach_the_audit_log_on_the_hub_side(alice_kernel, enclave):
    code = f"probe = '{uuid.uuid4().hex}'"
    alice_kernel.run(code)
    mine = [r for r in enclave.audit_records(action="kernel.execute", workspace="alpha") if r["detail"]["code"] == code]
    assert len(mine) == 1
    record = mine[0]
    # Stamped on the hub side with the sandbox the record came from, not with what the server says.
    assert record["source"] == "sandbox" and record["actor"] == "alice" and record["sandbox"].startswith("alice/alpha/")
    assert record["detail"]["code_sha256"] == hashlib.sha256(code.encode()).hexdigest()
    assert record["detail"]["kernel"] == alice_kernel.id


def test_the_audit_receiver_is_out_of_the_kernels_reach(alice_kernel):
    reachable = alice_kernel.value(
        "import os, json\nprint(json.dumps([p for p in ('/run/enclave/audit', '/run/enclave/server')"
        " if os.path.exists(p)]))")
    assert reachable == []


# -- the way out: export requests assembled by the server ----------------------------------------

ACRO_RUN = """
import os, pathlib, pandas as pd
from enclave_guard.disclosure import workspace_acro
os.chdir(pathlib.Path.home() / 'acro-run')
acro = workspace_acro()
df = pd.DataFrame({'district': ['A'] * 20 + ['B'] * 3, 'tenure': ['own'] * 10 + ['rent'] * 10 + ['own'] * 3})
acro.crosstab(df.district, df.tenure)
acro.finalise('outputs', 'json')
print('ok')
"""


def test_acro_results_travel_with_the_export_checks(alice, alice_kernel):
    out, err = alice_kernel.run("import pathlib\n(pathlib.Path.home() / 'acro-run').mkdir(exist_ok=True)\n" + ACRO_RUN)
    assert err is None and out.strip().endswith("ok"), err
    r = get(alice, "enclave/api/exports/checks", "POST", json={"paths": ["acro-run/outputs/output_0_0.csv"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {f["role"] for f in body["files"]} == {"output", "acro-results"}
    table = next(c for c in body["checks"] if c["name"] == "output_0_0.csv")
    acro = [c for c in table["checks"] if c["check"] == "acro"]
    assert acro and acro[0]["status"] == "fail"


def test_export_request_carries_bytes_hash_and_provenance(alice, alice_kernel):
    name = f"summary-{uuid.uuid4().hex[:6]}.csv"
    code = (f"import pathlib\n(pathlib.Path.home() / {name!r}).write_text('district,households\\nHeping,120\\n"
            "Nanshan,135\\n')\nprint('ok')")
    out, err = alice_kernel.run(code)
    assert err is None
    r = get(alice, "enclave/api/exports", "POST", json={"paths": [name], "justification": "Household counts."})
    assert r.status_code == 201, r.text
    request_id = r.json()["id"]
    listed = get(alice, "enclave/api/exports").json()["requests"]
    assert request_id in [q["id"] for q in listed]
    # What the review service holds, read back by the operator through the service.
    service = alice.hub.service_url("exports")
    alice.http.get(f"{service}/")  # the service's OAuth hand-shake, as a browser follows it
    stored = alice.http.get(f"{service}/api/requests/{request_id}").json()
    f = stored["files"][0]
    data = b"district,households\nHeping,120\nNanshan,135\n"
    assert f["name"] == name and f["sha256"] == hashlib.sha256(data).hexdigest()
    prov = f["provenance"]
    assert prov["workspace"] == "alpha" and prov["user"] == "alice" and prov["path"] == name
    assert prov["releases"] == ["households@1"]
    assert prov["packages"]["pandas"] == "2.3.3"
    assert any(e["code"] == code for e in prov["executions"])


def test_any_plain_file_name_is_exportable_and_control_characters_are_refused(alice, alice_kernel):
    """Names travel percent-encoded (RFC 7578) from the guard and are decoded by the service: quotes,
    ';', '=', '%', spaces and CJK arrive as they are; a newline is refused, saying so."""
    tag = uuid.uuid4().hex[:6]
    # The last two are one name to the HTML form rule, which sends '"' as %22.
    names = [f'汇总 "终稿"; v=2 {tag}.csv', f'x"y {tag}.csv', f"x%22y {tag}.csv"]
    for name in names:
        write_in_home(alice_kernel, name, "district,households\nHeping,120\nNanshan,135\n")
    r = get(alice, "enclave/api/exports", "POST", json={"paths": names, "justification": "Household counts."})
    assert r.status_code == 201, r.text
    service = alice.hub.service_url("exports")
    alice.http.get(f"{service}/")  # the service's OAuth hand-shake, as a browser follows it
    stored = alice.http.get(f"{service}/api/requests/{r.json()['id']}").json()
    assert [f["name"] for f in stored["files"]] == names

    bad = f"two\nlines 50% {tag}.csv"
    write_in_home(alice_kernel, bad, "district,households\nHeping,120\n")
    r = get(alice, "enclave/api/exports", "POST", json={"paths": [bad], "justification": "Household counts."})
    message = r.json()["message"]
    assert r.status_code == 400 and "control characters" in message and "50% " in message, r.text
