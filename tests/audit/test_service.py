"""The audit service as the hub runs it: a real process, its unix socket, its database."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest
from enclave_testing import UNPRIVILEGED

from enclave.audit import checkpoints, hub
from enclave.audit.api import SCOPE_READ
from enclave.audit.client import AsyncAuditClient, AuditRecordRefused, AuditUnavailable
from enclave.audit.writer import Writer, WriterBusy

from .conftest import execution


def raw_exchange(path, lines: list[bytes], replies: int) -> list[dict]:
    """Send raw request lines on one connection and read ``replies`` replies."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(b"".join(lines))
        got = s.makefile("rb")
        return [json.loads(got.readline()) for _ in range(replies)]


def test_appends_from_threads_and_event_loops_get_consecutive_seqs(audit_home):
    audit_home.start()
    client = audit_home.client()
    seqs: list[int] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        for i in range(40):
            seq = client.append(**execution(i, user=f"user{n}"))
            with lock:
                seqs.append(seq)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()

    async def pipelined() -> list[int]:
        many = AsyncAuditClient(audit_home.settings)
        got = await asyncio.gather(*(many.append(**execution(i, user="async")) for i in range(300)))
        await many.close()
        return got

    seqs += asyncio.run(pipelined())
    for t in threads:
        t.join()
    assert sorted(seqs) == list(range(1, 461))
    assert audit_home.stop() == 0
    report = audit_home.verify()
    assert report.ok, report.problems
    assert report.records == 460 and report.notes == []  # the stop sealed everything
    stored = audit_home.reader().checkpoints()
    copy, problems = checkpoints.read_copy(audit_home.copy_path)
    assert stored == copy and not problems and stored[-1].tree_size == 460


def test_chinese_text_round_trips_and_verifies(audit_home, tmp_path):
    audit_home.start()
    client = audit_home.client()
    record = {"source": "cli", "actor": "管理员", "action": "workspace.attach", "workspace": "人口普查",
              "detail": {"release": "居民@1", "columns": ["区县", "年龄段"], "reason": "统计各区县人口 — 最小必要"}}
    seq = client.append(**record)
    client.append("hub", "李雷", "auth.login", "denied", detail={"method": "native", "reason": "密码错误"})
    audit_home.stop()
    found = audit_home.reader().query(user="管理员")["records"]
    assert len(found) == 1 and found[0]["seq"] == seq
    assert {k: found[0][k] for k in record} == {**record}
    assert audit_home.reader().query(workspace="人口普查")["records"] == found
    export = tmp_path / "export.jsonl"
    with export.open("w", encoding="utf-8") as out:
        audit_home.reader().export(out)
    assert "统计各区县人口 — 最小必要".encode() in export.read_bytes()  # as it is, not \u-escaped
    assert audit_home.verify().ok
    from enclave.audit.verify import verify_export
    assert verify_export(export, audit_home.public_key()).ok


def test_bad_input_gets_a_clear_error_and_nothing_is_written(sqlite_home):
    sqlite_home.start()
    good = json.dumps({"id": 1, "append": {"source": "hub", "actor": "alice", "action": "auth.logout"}})
    oversized = {"source": "hub", "actor": "a", "action": "auth.login", "detail": {"method": "x" * 70_000}}
    replies = raw_exchange(sqlite_home.socket, [
        b"this is not json\n",
        b'{"id": 2, "record": {}}\n',
        json.dumps({"id": 3, "append": {"source": "hub", "actor": "a", "action": "auth.signin"}}).encode() + b"\n",
        json.dumps({"id": 4, "append": {"source": "hub", "actor": ["a"], "action": "auth.logout"}}).encode() + b"\n",
        json.dumps({"id": 5, "append": oversized}).encode() + b"\n",
        b'{"id": 6, "append": {"source": "hub", "actor": "a", "action": "auth.login", "detail": {"method": NaN}}}\n',
        json.dumps({"id": 7, "append": {"source": "hub", "actor": "a", "action": "auth.logout",
                                        "time": "2020-01-01T00:00:00.000000Z"}}).encode() + b"\n",
        good.encode() + b"\n",
    ], replies=8)
    by_id = {r["id"]: r for r in replies}
    assert by_id[None]["error"] == "a request must be one JSON object on one line" and by_id[None]["refused"]
    assert by_id[2]["error"] == 'a request is {"id": ..., "append": {record}} or {"id": ..., "append_many": [records]}'
    assert by_id[3]["error"].startswith("unknown action 'auth.signin'")
    assert by_id[4]["error"] == "actor must be a non-empty string, not ['a']"
    assert "detail is 70" in by_id[5]["error"] and "the cap is 65536 bytes" in by_id[5]["error"]
    assert "detail.method is a floating-point number" in by_id[6]["error"]
    assert by_id[7]["error"] == "time are set by the audit service, not by the source"
    assert all(by_id[i]["refused"] for i in (2, 3, 4, 5, 6, 7))
    assert by_id[1] == {"id": 1, "seq": 1}, "the connection goes on after refusals"

    # A line over the limit cannot be resynchronised: refused, and the connection is closed.
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sqlite_home.socket))
        s.sendall(b'{"id": 9, "append": "' + b"x" * (1024 * 1024 + 10) + b'"}\n')
        reply = s.makefile("rb")
        assert json.loads(reply.readline()) == {"id": None, "error": "a request is longer than 1048576 bytes",
                                                "refused": True}
        assert reply.readline() == b""

    client = sqlite_home.client()
    with pytest.raises(AuditRecordRefused, match="needs detail key"):
        client.append("hub", "alice", "auth.throttle", detail={"user": "alice"})
    with pytest.raises(AuditRecordRefused, match="cannot be sent as JSON"):
        client.append("hub", "alice", "auth.login", detail={"method": float("inf")})
    assert client.append("hub", "alice", "auth.logout") == 2
    sqlite_home.stop()
    assert [r["seq"] for r in sqlite_home.all_records()] == [1, 2]
    assert sqlite_home.verify().ok


def test_records_appended_together_are_committed_together_or_not_at_all(sqlite_home):
    """``append_many`` (enclave apply's records of one file): one batch, consecutive, in order; one
    record the log refuses refuses them all, and nothing of them is written."""
    sqlite_home.start()
    client = sqlite_home.client()
    changes = [{"source": "cli", "actor": "root", "action": "workspace.create", "workspace": f"ws{i}",
                "detail": {"purpose": f"用途 {i}"}} for i in range(3)]
    assert client.append_many(changes) == [1, 2, 3]
    bad = [*changes, {"source": "cli", "actor": "root", "action": "workspace.create", "workspace": "ws9",
                      "detail": {"colour": "blue"}}]
    with pytest.raises(AuditRecordRefused, match="record 4 of 4: .*colour"):
        client.append_many(bad)
    with pytest.raises(AuditRecordRefused, match="cannot be sent as JSON"):
        client.append_many([{**changes[0], "detail": {"purpose": float("nan")}}])
    replies = raw_exchange(sqlite_home.socket, [b'{"id": 5, "append_many": []}\n',
                                                b'{"id": 6, "append_many": {"source": "cli"}}\n'], replies=2)
    assert all(r["refused"] and "a list of 1 to" in r["error"] for r in replies)
    assert client.append("hub", "alice", "auth.logout") == 4
    sqlite_home.stop()
    assert [(r["seq"], r["workspace"]) for r in sqlite_home.all_records()] == [
        (1, "ws0"), (2, "ws1"), (3, "ws2"), (4, None)]
    assert sqlite_home.verify().ok


def test_a_second_writer_cannot_start(audit_home):
    audit_home.start()
    audit_home.client().append("hub", "alice", "auth.logout")
    second = subprocess.run([sys.executable, "-m", "enclave.audit.service"], env=audit_home.env(),
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 1
    assert "another audit writer holds" in second.stderr and "only one audit service may run" in second.stderr
    with pytest.raises(WriterBusy):
        Writer.open(audit_home.settings)
    assert audit_home.client().append("hub", "alice", "auth.logout") == 2, "the first writer is unharmed"
    audit_home.stop()
    writer = Writer.open(audit_home.settings)  # the lock went with the process
    assert writer.size == 2
    writer.close()


def test_only_root_reaches_the_append_socket(sqlite_home):
    sqlite_home.start()
    folder = sqlite_home.socket.parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == 0
    assert stat.S_IMODE(sqlite_home.socket.stat().st_mode) == 0o600
    probe = ("import socket; s = socket.socket(socket.AF_UNIX)\n"
             f"try:\n s.connect({str(sqlite_home.socket)!r}); print('connected')\n"
             "except OSError as e:\n print(type(e).__name__)")
    as_nobody = subprocess.run(["setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups",
                                sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert as_nobody.stdout.strip() == "PermissionError", as_nobody.stderr
    for path in (sqlite_home.settings.audit_dir, sqlite_home.settings.secrets_dir):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    private, public = checkpoints.key_paths(sqlite_home.settings)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and public.exists()


def test_checkpoints_every_n_records_every_n_seconds_and_at_stop(tmp_path):
    from .conftest import AuditHome

    home = AuditHome(tmp_path / "home", checkpoint_every_records=10, checkpoint_every_seconds=2)
    try:
        home.start()
        client = home.client()
        for i in range(25):
            client.append(**execution(i))
        sizes = [cp.tree_size for cp in home.reader().checkpoints()]
        assert sizes == [10, 20], "one record per batch here: a checkpoint at each 10"
        time.sleep(3.5)
        assert [cp.tree_size for cp in home.reader().checkpoints()] == [10, 20, 25], "and one after 2 s"
        client.append(**execution(25))
        home.stop()
        stored = home.reader().checkpoints()
        assert [cp.tree_size for cp in stored] == [10, 20, 25, 26]
        assert checkpoints.read_copy(home.copy_path)[0] == stored
        public = home.public_key()
        assert all(checkpoints.signature_problem(public, cp) is None for cp in stored)
    finally:
        home.cleanup()


def test_clients_fail_closed_while_the_service_is_down_and_reconnect_after(sqlite_home):
    client = sqlite_home.client(timeout=5)
    with pytest.raises(AuditUnavailable, match="not reachable"):
        client.append("hub", "alice", "auth.logout")

    async def one() -> int:
        return await AsyncAuditClient(sqlite_home.settings, timeout=5).append("hub", "alice", "auth.logout")

    with pytest.raises(AuditUnavailable, match="not reachable"):
        asyncio.run(one())
    sqlite_home.start()
    assert client.append("hub", "alice", "auth.logout") == 1
    sqlite_home.stop()
    sqlite_home.start()
    assert client.append("hub", "alice", "auth.logout") == 2, "a connection the service closed is replaced"
    sqlite_home.kill()
    with pytest.raises(AuditUnavailable):
        client.append("hub", "alice", "auth.logout")
    assert asyncio.run(_appends_then_kill(sqlite_home)) == "AuditUnavailable"


async def _appends_then_kill(home) -> str:
    home.start()
    client = AsyncAuditClient(home.settings, timeout=5)
    await client.append("hub", "alice", "auth.logout")
    home.kill()
    try:
        await client.append("hub", "alice", "auth.logout")
    except AuditUnavailable:
        return "AuditUnavailable"
    return "acknowledged by a dead service"


def test_queries_filter_by_user_workspace_action_and_time_and_page(sqlite_home):
    sqlite_home.start()
    client = sqlite_home.client()
    for i in range(30):
        client.append(**execution(i, user=("alice", "bob")[i % 2], workspace=("demo", "census")[i % 3 == 0]))
    time.sleep(0.05)
    cut = time.time()
    time.sleep(0.05)
    client.append("exports", "carol", "export.vote", workspace="demo",
                  detail={"request_id": "r1", "file": "t.csv", "decision": "approve", "reason": "counts >= 10"})
    client.append("exports", "carol", "export.decision", workspace="demo", detail={"request_id": "r1", "decision": "approved"})
    sqlite_home.stop()
    reader = sqlite_home.reader()
    assert [r["actor"] for r in reader.query(user="bob", limit=1000)["records"]] == ["bob"] * 15
    census = reader.query(workspace="census", limit=1000)["records"]
    assert [r["seq"] for r in census] == [i + 1 for i in range(30) if i % 3 == 0]
    assert [r["action"] for r in reader.query(action="export.*")["records"]] == ["export.vote", "export.decision"]
    assert [r["seq"] for r in reader.query(action="export.vote", user="carol", workspace="demo")["records"]] == [31]
    from datetime import UTC, datetime
    since = datetime.fromtimestamp(cut, UTC).isoformat()
    assert [r["seq"] for r in reader.query(since=since)["records"]] == [31, 32]
    assert [r["seq"] for r in reader.query(until=since, user="carol")["records"]] == []
    assert len(reader.query(until=since, limit=1000)["records"]) == 30
    page1 = reader.query(user="alice", limit=10)
    page2 = reader.query(user="alice", limit=10, after=page1["next"])
    assert [r["seq"] for r in page1["records"] + page2["records"]] == list(range(1, 31, 2))
    assert page2["next"] is None
    newest = reader.query(limit=2, newest_first=True)
    assert [r["seq"] for r in newest["records"]] == [32, 31] and newest["next"] == 31
    from enclave.audit.reader import BadQuery
    with pytest.raises(BadQuery, match="no action matches"):
        reader.query(action="nope.*")
    with pytest.raises(BadQuery, match="not an ISO 8601"):
        reader.query(since="last tuesday")


def test_the_signing_key_is_made_once_and_never_replaced(sqlite_home):
    sqlite_home.start()
    sqlite_home.client().append("hub", "alice", "auth.logout")
    sqlite_home.stop()
    private, public = checkpoints.key_paths(sqlite_home.settings)
    key = private.read_bytes()
    sqlite_home.start()
    sqlite_home.stop()
    assert private.read_bytes() == key
    private.rename(private.with_suffix(".moved"))
    refused = subprocess.run([sys.executable, "-m", "enclave.audit.service"], env=sqlite_home.env(),
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "signing key" in refused.stderr and "restore the key" in refused.stderr
    assert not private.exists()


def test_the_hub_runs_the_service_from_its_venv_with_its_settings(tmp_path, monkeypatch):
    from enclave.settings import Settings

    monkeypatch.setenv("ENCLAVE_AUDIT__CHECKPOINT_EVERY_RECORDS", "50")
    monkeypatch.setenv("ENCLAVE_CONFIG", "relative/enclave.toml")
    monkeypatch.setenv("UNRELATED", "x")
    entry = hub.audit_service(Settings(home=tmp_path, audit={"port": 8123}))
    assert entry["name"] == hub.AUDIT_SERVICE == "audit"
    assert entry["url"] == "http://127.0.0.1:8123"
    assert entry["command"] == [sys.executable, "-I", "-m", "enclave.audit.service"] and entry["cwd"] == "/"
    assert entry["environment"]["ENCLAVE_HOME"] == str(tmp_path)
    assert entry["environment"]["ENCLAVE_AUDIT__CHECKPOINT_EVERY_RECORDS"] == "50"
    assert entry["environment"]["ENCLAVE_CONFIG"] == os.path.abspath("relative/enclave.toml")
    assert "UNRELATED" not in entry["environment"]
    assert entry["oauth_client_allowed_scopes"] == [SCOPE_READ]
    assert os.path.exists(entry["command"][0])
