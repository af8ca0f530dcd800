"""``enclave audit trace``: from a released file (or a leaked copy) back to its request, reviewers,
executions, sandbox session and the data it had, through a real hub.

The workspace is provisioned with the ``enclave`` CLI, the export goes through the review service
(submitted as a sandbox's server submits it, voted on, which approves and releases it, and
downloaded), and both write their own records; the sandbox's records are handed over as its
spawner and receiver hand them (see ``services_hub``).
"""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from enclave_testing import HOLDER, PURPOSE
from PIL import Image, PngImagePlugin

from enclave.exports import release as released_files
from enclave.exports import workflow

from .services_hub import SandboxRecords, running_hub

WS = "tianjin-pilot"
TITLE = "各区平均年龄"
VOTES = {"rita": "各区样本量均超过阈值，可以发布", "rob": "图中没有小单元格"}
# The votes decide the request: the last one needed approves it, with the rule as the reason.
APPROVAL = workflow.TRANSITIONS[(workflow.IN_REVIEW, workflow.APPROVED, workflow.SYSTEM)].description
RETURN = workflow.TRANSITIONS[(workflow.IN_REVIEW, workflow.RETURNED, workflow.SYSTEM)].description


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with running_hub(tmp_path_factory.mktemp("trace") / "home") as hub:
        yield hub


def figure() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (24, 16), "steelblue").save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def exported(hub, tmp_path_factory):
    """A figure made in a sandbox session, exported, approved by two reviewers and downloaded."""
    hub.cli("workspace", "create", WS, "--purpose", PURPOSE, "--holder", HOLDER)
    hub.cli("workspace", "add-member", WS, "olga", "--role", "operator")
    for reviewer in VOTES:
        hub.cli("workspace", "add-member", WS, reviewer, "--role", "reviewer")
    hub.cli("workspace", "attach", WS, "people@1", "--reason", "人口结构分析")
    hub.cli("workspace", "attach", WS, "census@2", "--columns", "district,size", "--reason", "住户规模")
    hub.consent(WS, "people@1")
    hub.consent(WS, "census@2")

    sandbox = SandboxRecords(hub)
    name, start = sandbox.start("olga", WS, ["people@1", "census@2"])
    sandbox.execute(name, "import pandas as pd\npeople = pd.read_parquet('/data/people@1/persons.parquet')")
    plot_code = "ax = people.groupby('district').age.mean().plot.bar()\nax.figure.savefig('figure.png')"
    plot, plot_msg = sandbox.execute(name, plot_code)
    sandbox.execute(name, "print(len(people))")
    touch_code = "import os\nos.utime('figure.png')"
    touch, _ = sandbox.execute(name, touch_code)
    # The provenance the guard attaches: the executions that mention the file. The second's message
    # id is not in the log (the trace finds it by its code's hash).
    provenance = {"workspace": WS, "user": "olga", "path": "out/figure.png", "role": "output",
                  "releases": ["people@1", "census@2"], "packages": {"pandas": "2.2.3"},
                  "executions": [
                      {"time": "2026-03-01T08:00:00Z", "user": "olga", "kernel_id": "5f0c1a2e-kernel",
                       "msg_id": plot_msg, "notebook": "analysis.ipynb", "code": plot_code},
                      {"time": "2026-03-01T08:01:00Z", "user": "olga", "kernel_id": "5f0c1a2e-kernel",
                       "msg_id": "a-message-the-log-never-saw", "notebook": "analysis.ipynb", "code": touch_code}]}

    request = hub.as_server("olga", WS).submit({"figure.png": figure()}, {"figure.png": provenance}, TITLE)
    for reviewer, reason in VOTES.items():  # rob's vote, the second, approves and releases it
        hub.as_user(reviewer).vote(request, "approve", reason)
    data = hub.as_user("olga").download(request, "figure.png")
    stop = sandbox.stop("olga", WS, name)
    sandbox.close()

    path = tmp_path_factory.mktemp("downloads") / "figure.png"
    path.write_bytes(data)
    return {"request": request, "path": path, "sandbox": name, "start": start, "stop": stop,
            "executions": [plot, touch]}


def records_of(hub, action: str, request_id: str) -> list[int]:
    """The seqs of the records the review service wrote for the request."""
    return [r["seq"] for r in hub.audit_records(workspace=WS, action=action)
            if r["detail"]["request_id"] == request_id]


def trace(hub, target: str, *args: str):
    r = hub.enclave("audit", "trace", target, *args)
    assert r.returncode in (0, 1), r.stderr
    return r


def test_the_trace_of_a_released_file_cites_every_step(hub, exported):
    rid = exported["request"]["id"]
    r = trace(hub, str(exported["path"]), "--format", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    t = json.loads(r.stdout)

    assert t["released"] and t["found_by"] == "hash" and t["problems"] == []
    assert t["sha256"] == hashlib.sha256(exported["path"].read_bytes()).hexdigest()
    assert (t["request"]["id"], t["request"]["workspace"], t["request"]["requester"], t["request"]["title"]) == \
        (rid, WS, "olga", TITLE)
    assert [t["request_record"]["seq"]] == records_of(hub, "export.request", rid)
    assert [c["seq"] for c in t["checks"]] == records_of(hub, "export.check", rid)
    assert [(v["seq"], v["actor"], v["decision"], v["reason"]) for v in t["votes"]] == [
        (seq, reviewer, "approve", VOTES[reviewer])
        for seq, reviewer in zip(records_of(hub, "export.vote", rid), VOTES)]
    assert [(d["seq"], d["actor"], d["decision"], d["reason"]) for d in t["decisions"]] == [
        (records_of(hub, "export.decision", rid)[0], "rob", "approved", APPROVAL)]
    assert t["release"]["signature_valid"] and t["release"]["hash_matches"]
    assert [t["release"]["record"]["seq"]] == records_of(hub, "export.release", rid)
    assert [(d["seq"], d["actor"]) for d in t["release"]["downloads"]] == [
        (seq, "olga") for seq in records_of(hub, "export.download", rid)]

    assert [(e["seq"], e["matched_by"], e["sandbox"]) for e in t["executions"]] == [
        (exported["executions"][0], "msg_id", exported["sandbox"]),
        (exported["executions"][1], "code_sha256", exported["sandbox"])]
    assert "savefig('figure.png')" in t["executions"][0]["code"]

    [session] = t["sessions"]
    assert (session["sandbox"], session["start"]["seq"], session["start"]["actor"], session["end"]["seq"]) == \
        (exported["sandbox"], exported["start"], "olga", exported["stop"])
    assert session["network"] == "none" and session["limits"]["memory_mb"] == 2048
    granted = {r["detail"]["release"]: r["seq"] for r in hub.audit_records(workspace=WS, action="workspace.attach")}
    mounts = {m["release"]: m for m in session["mounts"]}
    assert mounts["people@1"]["columns"] is None and mounts["people@1"]["reason"] == "人口结构分析"
    assert mounts["census@2"]["columns"] == ["households.district", "households.size"]
    assert mounts["census@2"]["source"].endswith(f"/views/{WS}/census@2")
    assert {r: m["attach_record"]["seq"] for r, m in mounts.items()} == granted
    assert {a["release"]: a["record"]["seq"] for a in session["attached"]} == granted


def test_the_text_tree_names_each_step_with_its_seq(hub, exported):
    rid = exported["request"]["id"]
    r = trace(hub, str(exported["path"]))
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert text.startswith("figure.png (version 1), sha256 ") and "RELEASED" in text
    for reviewer, reason in VOTES.items():
        seq = next(r["seq"] for r in hub.audit_records(workspace=WS, action="export.vote", user=reviewer))
        assert f"vote: {reviewer} approve: {reason} [seq {seq}]" in text
    assert f"“{TITLE}” in workspace {WS} by olga" in text
    assert f"[seq {records_of(hub, 'export.request', rid)[0]}]" in text
    assert "decision: approved by rob" in text and APPROVAL in text
    assert "downloaded by olga" in text
    assert f"matched by msg_id [seq {exported['executions'][0]}]" in text
    assert f"matched by code_sha256 [seq {exported['executions'][1]}]" in text
    assert "┆ ax.figure.savefig('figure.png')" in text
    assert f"sandbox session {exported['sandbox']} started by olga" in text and f"[seq {exported['start']}]" in text
    assert "census@2 ← " in text and "households.district, households.size" in text
    assert "PROBLEMS" not in text


def test_a_leaked_copy_is_found_by_hash_or_watermark(hub, exported, tmp_path):
    data = exported["path"].read_bytes()
    by_hash = json.loads(trace(hub, hashlib.sha256(data).hexdigest(), "--format", "json").stdout)
    assert by_hash["found_by"] == "hash" and by_hash["request"]["id"] == exported["request"]["id"]
    assert [e["seq"] for e in by_hash["executions"]] == exported["executions"]

    # A copy changed after release (a pixel) still carries its watermark.
    image = Image.open(io.BytesIO(data)).copy()
    image.putpixel((0, 0), (255, 0, 0))
    info = PngImagePlugin.PngInfo()
    info.add_text(released_files.WATERMARK_KEY, released_files.read_watermark(data))
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info)
    changed = tmp_path / "cropped.png"
    changed.write_bytes(out.getvalue())
    r = trace(hub, str(changed), "--format", "json")
    t = json.loads(r.stdout)
    assert r.returncode == 0 and t["found_by"] == "watermark" and not t["release"]["hash_matches"]
    assert t["request"]["id"] == exported["request"]["id"] and t["sessions"][0]["start"]["seq"] == exported["start"]
    assert "the bytes were CHANGED after release" in trace(hub, str(changed)).stdout


def test_a_file_never_released_says_so(hub, exported, tmp_path):
    stranger = tmp_path / "table.csv"
    stranger.write_bytes(b"region,count\nnorth,999\n")
    r = trace(hub, str(stranger))
    assert r.returncode == 1
    assert r.stdout.startswith("NOT released by Enclave: no file released or submitted for export has SHA-256")
    assert "carries no Enclave watermark" in r.stdout
    r = trace(hub, "0" * 64, "--format", "json")
    assert r.returncode == 1 and json.loads(r.stdout) == {
        "sha256": "0" * 64, "found_by": None, "released": False, "watermark_read": False, "problems": []}
    r = hub.enclave("audit", "trace", "no-such-file.png")
    assert r.returncode == 1 and "no such file, and not a SHA-256" in r.stderr


def test_a_file_submitted_but_never_released_is_traced_and_says_so(hub, exported, tmp_path):
    table = b"district,people\nHeping,120\nNankai,95\n"
    request = hub.as_server("olga", WS).submit({"people.csv": table}, {}, "人数表")
    for reviewer in VOTES:  # rob's vote, the second, returns it
        hub.as_user(reviewer).vote(request, "request_changes", "请说明数据来源")
    leaked = tmp_path / "people.csv"
    leaked.write_bytes(table)
    r = trace(hub, str(leaked), "--format", "json")
    t = json.loads(r.stdout)
    assert r.returncode == 1 and not t["released"] and t["found_by"] == "submitted hash"
    assert t["release"] is None and t["request"]["id"] == request["id"] and t["request"]["state"] == "returned"
    assert [d["reason"] for d in t["decisions"]] == [RETURN + "\npeople.csv: 请说明数据来源" * 2]
    assert t["problems"] == ["the file's provenance names no execution: the code that wrote it is not known"]
    text = trace(hub, str(leaked)).stdout
    assert "NOT released: it matches a file submitted for export" in text and "decision: returned by rob" in text
