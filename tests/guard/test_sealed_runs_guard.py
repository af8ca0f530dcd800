"""Sealed runs (issue #18), the guard's side: "Run on real data…" and its routes.

The server reads the notebook and the inputs of a sealed run from the home by the rules export files
are read by, and refuses before anything is sent to the review service: a hidden file, a symlink to
/etc/passwd, a path going up with '..', a folder, a file over the size limit, a file that is not a
notebook as the notebook. What it sends, and what it shows of a run, is checked here too.

* In a real bubblewrap sandbox, through the real hub, proxy and review service (``review_hub``, as
  ``test_export_loop.py``), in a workspace given a synthetic release with a sealed view: alice's
  kernel makes the hostile files in her home and every attempt is refused with the guard's own code,
  so it never reached the service; the releases offered, a release the workspace does not have
  (the service's refusal, its code kept), a run submitted (the service froze the bytes of the
  home's files), listed by its state alone, withdrawn, and withdrawn again (409).
* The wire format, against a small unix-socket HTTP server in place of the intake that records what
  it gets and answers from a script (acceptable for the wire format only; it lets a test count the
  calls and make the service answer what it should never answer): the multipart body as the service
  parses it (the ``request`` part's JSON, the manifest's SHA-256s, Chinese paths percent-encoded in
  the ``file`` parts), what the Exports panel is shown of runs (only the state, never what the service
  might add about the outcome), withdrawal and the service's refusals relayed with their codes,
  the refusals before sending with nothing sent, and in the operator's language (zh_CN). The
  server there is the operators' environment's real Jupyter server with the guard, not in a
  sandbox (``conftest.start_server``).
"""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import json
import socketserver
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
import yaml
from enclave_testing import HOLDER, grant
from tornado import httputil

from enclave import workspaces
from enclave.sandbox.policy import lab_overrides
from enclave.settings import Settings
from synthetic import pipeline, sealed

if "guard_conftest" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("guard_conftest", Path(__file__).with_name("conftest.py"))
    sys.modules["guard_conftest"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["guard_conftest"])
guard_conftest = sys.modules["guard_conftest"]

PASSWORD = "correct-horse-battery-staple"  # tests/conftest.py's accounts
NOTEBOOK = json.dumps({
    "cells": [{"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {}, "outputs": [],
               "source": "import pandas as pd\n户数 = pd.read_parquet('/data/residents@2/户.parquet')\n"}],
    "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
}, ensure_ascii=False)
PARAMETERS = '{"区县": ["和平区", "南山区"]}\n'
RUN_ID = "ab" * 16


def sealed_runs_call(server, method: str, path: str = "", **kw):
    return server.request(method, f"enclave/api/sealed-runs{path}", **kw)


# -- the wire format, against a recording intake ---------------------------------------------------


@dataclass
class Call:
    method: str
    path: str
    headers: dict
    body: bytes


class RecordingIntake:
    """Stands in for the review service's intake socket: records every call, answers each
    ``(method, path)`` with the status and JSON document it was given (404 for anything else)."""

    def __init__(self, path: Path):
        self.path = path
        self.calls: list[Call] = []
        self.answers: dict[tuple[str, str], tuple[int, dict]] = {}
        self._server = None

    def start(self) -> None:
        intake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                intake.calls.append(Call(self.command, self.path, dict(self.headers), body))
                status, doc = intake.answers.get((self.command, self.path), (404, {
                    "status": 404, "error": "no such page or API operation", "code": "export.no_route",
                    "text": "no such page or API operation", "params": {}, "message": "no such page"}))
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args):  # a unix socket's peer has no address to log
                return

        self.path.unlink(missing_ok=True)
        self._server = socketserver.ThreadingUnixStreamServer(str(self.path), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.path.unlink(missing_ok=True)

    @contextmanager
    def down(self):
        """The intake not listening, for the while."""
        self.stop()
        try:
            yield
        finally:
            self.start()


@pytest.fixture(scope="module")
def chinese_server(tmp_path_factory):
    """The guard's server for an operator whose language is zh_CN, its intake a recorder."""
    root = tmp_path_factory.mktemp("sealed-runs")
    settings = root / "run" / "lab-app-settings"
    settings.mkdir(parents=True)
    (settings / "overrides.json").write_text(lab_overrides("zh_CN"), encoding="utf-8")
    intake = RecordingIntake(root / "run" / "intake.sock")
    intake.start()
    server = guard_conftest.start_server(root, guard_conftest.GUARD, [f"--LabApp.app_settings_dir={settings}"])
    home = server.home
    (home / "分析" / "lib").mkdir(parents=True)
    (home / "分析" / "户数.ipynb").write_text(NOTEBOOK, encoding="utf-8")
    (home / "分析" / "参数.json").write_text(PARAMETERS, encoding="utf-8")
    (home / "分析" / "lib" / "工具.py").write_text("def 合计(xs):\n    return sum(xs)\n", encoding="utf-8")
    yield server, intake
    guard_conftest.stop_server(server)
    intake.stop()


@pytest.fixture
def intake(chinese_server):
    server, intake = chinese_server
    intake.calls.clear()
    intake.answers.clear()
    return intake


def test_a_run_reaches_the_intake_as_the_service_parses_it(chinese_server, intake):
    server, _ = chinese_server
    intake.answers[("POST", "/api/sealed-runs")] = (201, {
        "id": RUN_ID, "release": "residents@2", "notebook": "分析/户数.ipynb",
        "submitted_at": "2026-12-01T09:30:00+08:00", "state": "awaiting_approval",
        # Nothing of this kind is the operator's to see; the guard passes on only what the panel shows.
        "outcome": {"state": "failed", "error": "KeyError: '户主'"}, "duration_seconds": 12.5})
    inputs = ["分析/参数.json", "/分析/lib/工具.py"]
    r = sealed_runs_call(server, "POST", json={"release": "residents@2", "notebook": "分析/户数.ipynb",
                                               "inputs": inputs, "outputs": ["分析/结果/汇总.csv"]})
    assert r.status_code == 201, r.text
    assert r.json() == {"id": RUN_ID, "release": "residents@2", "notebook": "分析/户数.ipynb",
                        "submitted_at": "2026-12-01T09:30:00+08:00", "state": "awaiting_approval",
                        "withdrawable": True}

    (call,) = intake.calls
    assert (call.method, call.path) == ("POST", "/api/sealed-runs")
    assert call.headers["Authorization"].startswith("token ")
    assert call.headers["Accept-Language"] == "zh-CN"
    # Parsed as the review service parses an upload (tornado's multipart parser).
    arguments, files = {}, {}
    httputil.parse_body_arguments(call.headers["Content-Type"], call.body, arguments, files)
    (request,) = arguments["request"]
    sent = {unquote(part.filename, errors="strict"): part.body for part in files["file"]}
    expected = {"分析/户数.ipynb": NOTEBOOK.encode(), "分析/参数.json": PARAMETERS.encode(),
                "分析/lib/工具.py": "def 合计(xs):\n    return sum(xs)\n".encode()}
    assert sent == expected
    assert json.loads(request) == {
        "release": "residents@2", "notebook": "分析/户数.ipynb", "inputs": ["分析/参数.json", "分析/lib/工具.py"],
        "outputs": ["分析/结果/汇总.csv"],
        "manifest": {path: hashlib.sha256(data).hexdigest() for path, data in expected.items()},
    }
    # The file parts' names are percent-encoded UTF-8, as export files' are.
    assert all(part.filename.isascii() for part in files["file"])


def test_the_panel_is_shown_only_a_runs_state(chinese_server, intake):
    server, _ = chinese_server
    pre_run = ("the notebook did not succeed on the synthetic release (%(state)s: %(error)s): it was not run on the"
               " real data")
    intake.answers[("GET", "/api/sealed-runs")] = (200, {"runs": [
        {"id": "01" * 16, "release": "residents@2", "notebook": "分析/户数.ipynb", "submitted_at": "t4",
         "state": "ended", "outcome": {"state": "failed"}, "log": "Traceback…", "outputs": {"汇总.csv": 1234}},
        {"id": "02" * 16, "release": "residents@2", "notebook": "分析/户数.ipynb", "submitted_at": "t3",
         "state": "refused", "refusal": {"code": "sealed_run.refused_by_holder", "text": "样本太少，请合并区县后再提交。",
                                         "params": {}, "message": "样本太少，请合并区县后再提交。"}},
        {"id": "03" * 16, "release": "residents@2", "notebook": "分析/户数.ipynb", "submitted_at": "t2",
         "state": "refused", "refusal": {"code": "sealed_run.pre_run_failed", "text": pre_run,
                                         "params": {"state": "failed", "error": "KeyError: '户主'"}}},
        # A state the operator is never shown (the service's own pre-run) is shown as running.
        {"id": "04" * 16, "release": "residents@2", "notebook": "分析/户数.ipynb", "submitted_at": "t1",
         "state": "pre_running", "started_at": "t1"},
        "not a run",
    ]})
    r = sealed_runs_call(server, "GET")
    assert r.status_code == 200, r.text
    common = {"release": "residents@2", "notebook": "分析/户数.ipynb"}
    assert r.json() == {"runs": [
        {**common, "id": "01" * 16, "submitted_at": "t4", "state": "ended", "withdrawable": False},
        {**common, "id": "02" * 16, "submitted_at": "t3", "state": "refused", "withdrawable": False,
         "refusal": {"code": "sealed_run.refused_by_holder", "text": "样本太少，请合并区县后再提交。", "params": {},
                     "message": "样本太少，请合并区县后再提交。"}},
        {**common, "id": "03" * 16, "submitted_at": "t2", "state": "refused", "withdrawable": False,
         "refusal": {"code": "sealed_run.pre_run_failed", "text": pre_run,
                     "params": {"state": "failed", "error": "KeyError: '户主'"},
                     "message": "the notebook did not succeed on the synthetic release (failed: KeyError: '户主'): it"
                                " was not run on the real data"}},
        {**common, "id": "04" * 16, "submitted_at": "t1", "state": "running", "withdrawable": False},
    ]}


def test_releases_and_withdrawal_and_the_services_refusals(chinese_server, intake):
    server, _ = chinese_server
    intake.answers[("GET", "/api/sealed-runs/releases")] = (200, {"releases": ["residents@2", 3]})
    r = sealed_runs_call(server, "GET", "/releases")
    assert r.status_code == 200 and r.json() == {"releases": ["residents@2"]}, r.text

    intake.answers[("POST", f"/api/sealed-runs/{RUN_ID}/withdraw")] = (200, {
        "id": RUN_ID, "release": "residents@2", "notebook": "分析/户数.ipynb", "submitted_at": "t",
        "state": "withdrawn"})
    r = sealed_runs_call(server, "POST", f"/{RUN_ID}/withdraw")
    assert r.status_code == 200 and r.json()["state"] == "withdrawn" and not r.json()["withdrawable"], r.text

    # A run that has started cannot be withdrawn: the service's 409 reaches the operator in its words.
    started = "cd" * 16
    intake.answers[("POST", f"/api/sealed-runs/{started}/withdraw")] = (409, {
        "status": 409, "error": "a sealed run that is running cannot become withdrawn",
        "code": "sealed_run.step_not_allowed", "text": "a sealed run that is %(state)s cannot become %(to)s",
        "params": {"state": "running", "to": "withdrawn"}, "message": "运行中的密封运行不能变为已撤回"})
    r = sealed_runs_call(server, "POST", f"/{started}/withdraw")
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "guard.sealed_run.service_refused"
    assert r.json()["params"]["service_code"] == "sealed_run.step_not_allowed"
    assert r.json()["message"] == "密封运行：运行中的密封运行不能变为已撤回"

    # Only a run id reaches the intake's withdraw route.
    calls = len(intake.calls)
    for bad in ("../requests", "ABC", "ab" * 15):
        assert sealed_runs_call(server, "POST", f"/{bad}/withdraw").status_code == 404
    assert len(intake.calls) == calls

    with intake.down():
        r = sealed_runs_call(server, "GET")
    assert r.status_code == 502 and r.json()["code"] == "guard.sealed_run.service_unreachable", r.text
    assert r.json()["message"].startswith("密封运行：无法连接导出审核服务")


@pytest.fixture(scope="module")
def hostile_home(chinese_server):
    """Files the guard must not send: hidden ones, a symlink out, a folder, one over the size limit."""
    server, _ = chinese_server
    home = server.home
    (home / ".secret.py").write_text("token = 'x'\n")
    (home / "分析" / ".参数.json").write_text("{}\n")
    (home / "分析" / "passwd.py").symlink_to("/etc/passwd")
    (home / "分析" / "大文件.csv").write_bytes(b"0" * (int(guard_conftest.GUARD["export_max_mb"] * 2**20) + 1))
    (home / "分析" / "说明.txt").write_text("不是笔记本\n", encoding="utf-8")
    return server


# body (its notebook and inputs), status, the guard's code, and a word of the Chinese text.
REFUSED_BEFORE_SENDING = [
    ({"inputs": [".secret.py"]}, 403, "guard.sealed_run.hidden_file", "隐藏文件"),
    ({"inputs": ["分析/.参数.json"]}, 403, "guard.sealed_run.hidden_file", "隐藏文件"),
    ({"notebook": ".ipynb_checkpoints/户数-checkpoint.ipynb"}, 403, "guard.sealed_run.hidden_file", "隐藏文件"),
    ({"inputs": ["分析/passwd.py"]}, 404, "guard.outside_home", "不在工作空间主目录中"),
    ({"inputs": ["../../etc/passwd"]}, 400, "guard.sealed_run.bad_path", "普通路径"),
    ({"inputs": ["分析/../../etc/passwd"]}, 400, "guard.sealed_run.bad_path", "普通路径"),
    ({"outputs": ["../外面.csv"]}, 400, "guard.sealed_run.bad_path", "普通路径"),
    ({"inputs": ["分析/lib"]}, 400, "guard.sealed_run.not_a_file", "是文件夹"),
    ({"inputs": ["分析/大文件.csv"]}, 413, "guard.sealed_run.too_large", "上限"),
    ({"inputs": ["分析/没有.py"]}, 404, "guard.sealed_run.no_such_file", "没有"),
    ({"notebook": "分析/说明.txt"}, 400, "guard.sealed_run.not_a_notebook", "只有笔记本"),
    ({"notebook": "分析/passwd.py"}, 400, "guard.sealed_run.not_a_notebook", "只有笔记本"),
    ({"inputs": ["分析/户数.ipynb"]}, 400, "guard.sealed_run.notebook_as_input", "不必再作为输入"),
    ({"inputs": ["分析/参数.json", "/分析/参数.json"]}, 400, "guard.sealed_run.named_twice", "重复指定"),
    ({"inputs": "分析/参数.json"}, 400, "guard.sealed_run.not_a_list", "列表"),
    ({"release": ""}, 400, "guard.sealed_run.no_release", "数据版本"),
    ({"notebook": None}, 400, "guard.sealed_run.no_path", "路径"),
]


def test_the_guard_refuses_before_anything_is_sent(hostile_home, intake):
    for change, status, code, word in REFUSED_BEFORE_SENDING:
        body = {"release": "residents@2", "notebook": "分析/户数.ipynb", "inputs": [], "outputs": [], **change}
        r = sealed_runs_call(hostile_home, "POST", json=body)
        assert (r.status_code, r.json().get("code")) == (status, code), (change, r.text)
        assert word in r.json()["message"], (change, r.text)
        assert "root:" not in r.text
    assert intake.calls == []


# -- in a real sandbox, through the hub and the review service --------------------------------------

WORKSPACE = "sealed-guard"
TABLE = "户数"
# A small synthetic release of a generated table (the data holder's side, built as ``enclave data
# release`` builds it), whose sealed view makes the review service offer sealed runs in WORKSPACE.
CONTRACT = {
    "name": "households", "generated": True,
    "tables": {TABLE: {"path": "户数.csv", "primary_key": "编号", "columns": {
        "编号": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
        "户主年龄": {"role": "measure", "type": "integer", "uniqueness_accepted": "户主年龄按年取整，分析所需"},
        "区县": {"role": "quasi_identifier", "type": "string"},
        "人数": {"role": "sensitive", "type": "float"},
    }}},
    "privacy": {"k": 2, "l": 2, "max_suppressed": 0.5},
    "gates": {"quality": 0.5, "new_row_synthesis": 0.5, "max_copy_excess": 0.2, "max_attack_risk": 0.5,
              "dcr_overfitting_protection": 0.5},
}


def households(n: int = 400, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(20, 80, n)
    return pd.DataFrame({"编号": [f"H{i:05d}" for i in range(n)], "户主年龄": age,
                         "区县": rng.choice(["和平区", "河西区", "南开区"], n),
                         "人数": (1 + age / 30 + rng.normal(0, 0.8, n)).round(1)})


def guard_call(alice, method: str, path: str = "", **kw):
    return alice.server_request(WORKSPACE, method, f"enclave/api/sealed-runs{path}", allow_redirects=False, **kw)


@pytest.fixture(scope="module")
def sealed_workspace(review_hub, tmp_path_factory):
    """alice in her sandbox of a workspace with a synthetic release that has a sealed view, her home
    holding a notebook, its parameters and hostile files (made by her kernel, as an operator would
    make them). The release is published, its sealed view built and the workspace given it in
    process, as the data holder's commands and the holder's consent would."""
    # The data holder, an account of their own to log in with.
    r = review_hub.enclave("user", "add", HOLDER, "--role", "holder", "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    settings = Settings(home=review_hub.home)
    raw = tmp_path_factory.mktemp("sealed-guard-raw")
    households().to_csv(raw / "户数.csv", index=False)
    (raw / "households.yaml").write_text(yaml.safe_dump(CONTRACT, allow_unicode=True), encoding="utf-8")
    release = pipeline.release(settings, raw / "households.yaml", "synthetic", by="tests", progress=False).release
    sealed.build(settings, release, by="tests")
    workspaces.create(settings, WORKSPACE)
    workspaces.add_member(settings, WORKSPACE, "alice", "operator")
    grant(settings, WORKSPACE, release, reason="各区县户数")
    # Runs are made only where the data holder has appointed who reviews their results (carol,
    # review_hub's reviewer, no operator here).
    holder = review_hub.login(HOLDER, PASSWORD)
    holder.http.get(f"{review_hub.service_url('exports')}/")  # the service's OAuth hand-shake
    r = guard_conftest._service_call(holder, "PUT", f"workspaces/{WORKSPACE}/sealed-run-policy",
                                     json={"reviewers": ["carol"]})
    assert r.status_code == 200, r.text

    alice = review_hub.login("alice", PASSWORD)
    assert alice.start(WORKSPACE).status_code == 200
    kernel = alice.kernel(WORKSPACE)
    out, err = kernel.run(
        "import os, pathlib\n"
        "f = pathlib.Path.home() / '分析'\n"
        "(f / 'lib').mkdir(parents=True)\n"
        f"(f / '户数.ipynb').write_text({NOTEBOOK!r}, encoding='utf-8')\n"
        f"(f / '参数.json').write_text({PARAMETERS!r}, encoding='utf-8')\n"
        "(f / '.参数.json').write_text('{}')\n"
        "os.symlink('/etc/passwd', f / 'passwd.py')\n"
        # Sparse: its size is over the workspace's export limit (16 MiB) without writing it.
        "with open(f / '大文件.csv', 'wb') as big:\n"
        "    big.truncate(17 * 2**20)\n"
        "print('ok')")
    assert err is None and out.strip() == "ok", err
    kernel.close()
    return alice, release


def test_in_the_sandbox_the_guard_refuses_before_sending(sealed_workspace):
    alice, release = sealed_workspace
    cases = [
        ({"inputs": ["分析/.参数.json"]}, 403, "guard.sealed_run.hidden_file"),
        ({"inputs": ["分析/passwd.py"]}, 404, "guard.outside_home"),
        ({"inputs": ["../../etc/passwd"]}, 400, "guard.sealed_run.bad_path"),
        ({"inputs": ["分析/lib"]}, 400, "guard.sealed_run.not_a_file"),
        ({"inputs": ["分析/大文件.csv"]}, 413, "guard.sealed_run.too_large"),
        ({"notebook": "分析/passwd.py"}, 400, "guard.sealed_run.not_a_notebook"),
    ]
    for change, status, code in cases:
        body = {"release": release, "notebook": "分析/户数.ipynb", "inputs": [], "outputs": [], **change}
        r = guard_call(alice, "POST", json=body)
        # The guard's own code: the review service never saw the request (its refusals come back
        # as guard.sealed_run.service_refused).
        assert (r.status_code, r.json().get("code")) == (status, code), (change, r.text)
        assert "root:" not in r.text
    assert guard_call(alice, "GET").json() == {"runs": []}


def test_in_the_sandbox_a_run_goes_to_the_review_service_and_is_shown_by_its_state(sealed_workspace, review_hub):
    alice, release = sealed_workspace
    r = guard_call(alice, "GET", "/releases")
    assert r.status_code == 200 and r.json() == {"releases": [release]}, r.text

    # A release the workspace does not have: the service refuses, its code kept.
    r = guard_call(alice, "POST", json={"release": "nowhere@1", "notebook": "分析/户数.ipynb"})
    assert r.status_code == 403 and r.json()["code"] == "guard.sealed_run.service_refused", r.text
    assert r.json()["params"]["service_code"] == "sealed.not_attached", r.text

    r = guard_call(alice, "POST", json={"release": release, "notebook": "分析/户数.ipynb",
                                        "inputs": ["分析/参数.json"], "outputs": ["分析/结果/汇总.csv"]})
    assert r.status_code == 201, r.text
    run = r.json()
    assert run.keys() == {"id", "release", "notebook", "submitted_at", "state", "withdrawable"}
    assert (run["release"], run["notebook"], run["state"], run["withdrawable"]) == (
        release, "分析/户数.ipynb", "awaiting_approval", True)
    # What the service froze is what the home held.
    (submitted,) = [rec["detail"] for rec in review_hub.audit_records(action="sealed_run.submit")
                    if rec["detail"]["run_id"] == run["id"]]
    assert submitted["notebook_sha256"] == hashlib.sha256(NOTEBOOK.encode()).hexdigest()
    assert [(i["path"], i["sha256"]) for i in submitted["inputs"]] == [
        ("分析/参数.json", hashlib.sha256(PARAMETERS.encode()).hexdigest())]
    assert submitted["outputs"] == ["分析/结果/汇总.csv"]

    assert guard_call(alice, "GET").json() == {"runs": [run]}
    r = guard_call(alice, "POST", f"/{run['id']}/withdraw")
    assert r.status_code == 200, r.text
    assert r.json() == {**run, "state": "withdrawn", "withdrawable": False}
    # Withdrawn is final: the service's 409 reaches the operator with its code.
    r = guard_call(alice, "POST", f"/{run['id']}/withdraw")
    assert r.status_code == 409 and r.json()["code"] == "guard.sealed_run.service_refused", r.text
    assert r.json()["params"]["service_code"] == "sealed_run.step_not_allowed", r.text
