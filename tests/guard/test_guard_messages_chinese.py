"""The guard's refusals and notices in the operator's language, with stable codes (issue #17).

Real servers from the operators' environment, each given its display language as the spawner gives
it: JupyterLab's read-only application settings (``overrides.json``, ``enclave.sandbox.policy``).
For an operator whose language is zh_CN, an oversized upload is refused with its code
(``guard.upload_too_large``), its params and the text in Chinese, which JupyterLab's save dialog
shows as it gets it; the egress budget's notice and hold in the kernel's output carry their codes in
the output's metadata and read in Chinese, and a file read past the budget is refused with the hold
nested in its params. An operator whose language is English gets the same codes in English.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from enclave.sandbox.policy import lab_overrides

if "guard_conftest" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("guard_conftest", Path(__file__).with_name("conftest.py"))
    sys.modules["guard_conftest"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["guard_conftest"])
guard_conftest = sys.modules["guard_conftest"]

# The conftest's budgets, with the smallest egress budget a workspace may have (0.1 MiB an hour),
# which one execution's budget may not exceed.
GUARD = {**guard_conftest.GUARD, "output_message_max_kb": 32, "output_cell_max_kb": 64, "egress_hour_mb": 0.1}
LINE = "各区县户数汇总" * 1000  # 7,000 characters, 21,000 bytes of UTF-8 a print


def server_in(tmp_path_factory, locale: str):
    root = tmp_path_factory.mktemp(f"guard-{locale}")
    settings = root / "run" / "lab-app-settings"
    settings.mkdir(parents=True)
    (settings / "overrides.json").write_text(lab_overrides(locale), encoding="utf-8")
    return guard_conftest.start_server(root, GUARD, [f"--LabApp.app_settings_dir={settings}"])


@pytest.fixture(scope="module")
def chinese_server(tmp_path_factory):
    server = server_in(tmp_path_factory, "zh_CN")
    yield server
    guard_conftest.stop_server(server)


@pytest.fixture(scope="module")
def english_server(tmp_path_factory):
    server = server_in(tmp_path_factory, "en")
    yield server
    guard_conftest.stop_server(server)


def upload_too_large(server) -> dict:
    r = server.request("PUT", "api/contents/大文件.txt",
                       json={"type": "file", "format": "text", "content": "a" * 600_000})
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["code"] == "guard.upload_too_large"
    assert body["params"] == {"path": "大文件.txt", "size": 600_000, "limit_mib": 0.5}
    return body


def test_an_oversized_upload_is_refused_in_chinese_with_its_code(chinese_server):
    assert upload_too_large(chinese_server)["message"] == "大文件.txt：600000 字节，超过了 0.5 MiB 的上传上限"


def test_an_english_operator_gets_the_same_code_in_english(english_server):
    assert upload_too_large(english_server)["message"] == "大文件.txt: 600000 bytes is over the 0.5 MiB upload limit"
    r = english_server.request("GET", "files/anything.txt")
    assert r.status_code == 403 and r.json() == {
        "message": "file downloads are closed in Enclave; request an export instead", "code": "guard.route_closed",
        "params": {"what": {"message": "file downloads", "code": "guard.route", "params": {}}}}


def test_a_closed_route_is_refused_in_chinese(chinese_server):
    r = chinese_server.request("GET", "files/anything.txt")
    assert r.status_code == 403
    assert r.json()["code"] == "guard.route_closed" and r.json()["message"] == "Enclave 中已关闭文件下载；请改为申请导出"


async def test_the_egress_budgets_notice_and_hold_in_chinese_with_their_codes(chinese_server):
    ks = await guard_conftest.open_kernel(chinese_server)
    try:
        shown: dict[str, dict] = {}
        for _ in range(10):  # 0.1 MiB: the notice after four prints or so, the hold after five
            for msg in await ks.execute(f"print({LINE!r})"):
                code = (msg.get("metadata") or {}).get("enclave", {}).get("code")
                if msg["msg_type"] == "stream" and code:
                    shown[code] = msg
            if "guard.egress.held" in shown:
                break
    finally:
        ks.close()
    notice, held = shown["guard.egress.notice"], shown["guard.egress.held"]
    assert notice["content"]["text"].startswith("[Enclave：您在本工作空间的滚动小时外发额度已用 ")
    assert notice["metadata"]["enclave"]["params"]["window"] == "hour"
    assert held["content"]["text"].startswith("[Enclave：输出已暂扣：您在本工作空间的滚动小时外发额度已用完")
    assert "Enclave:" not in notice["content"]["text"] + held["content"]["text"]

    # A read past the budget: refused, the hold nested in the refusal's params.
    r = chinese_server.request("PUT", "api/contents/说明.txt", json={"type": "file", "format": "text", "content": "户数"})
    assert r.status_code in (200, 201), r.text
    r = chinese_server.request("GET", "api/contents/说明.txt")
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["code"] == "guard.read_held" and body["params"]["held"]["code"] == "guard.egress.held"
    assert "说明.txt：未显示：[Enclave：输出已暂扣" in body["message"]
    # The audit record keeps the reason in English, whatever the operator reads.
    (record,) = [r for r in chinese_server.audit_records(action="contents.read")
                 if r["outcome"] == "denied" and r["detail"]["path"] == "说明.txt"]
    assert record["detail"]["reason"].startswith("[Enclave: output held: your egress budget")
