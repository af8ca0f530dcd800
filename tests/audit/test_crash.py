"""``kill -9`` of the audit service under heavy logging: no acknowledged record is lost, and the
log verifies after a restart (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import threading
import time

from enclave.audit.client import AsyncAuditClient, AuditUnavailable

from .conftest import AuditHome, execution

FIELDS = ("source", "actor", "action", "outcome", "workspace", "sandbox", "detail")


def test_kill_9_loses_no_acknowledged_record(tmp_path, backend):
    home = AuditHome(tmp_path / "home", backend, checkpoint_every_records=500)
    try:
        home.start()
        acknowledged: dict[int, dict] = {}  # seq -> the record as the client sent it
        lock = threading.Lock()
        stop = threading.Event()
        failures: list[str] = []

        def blocking_writer(n: int) -> None:
            client = home.client(timeout=5)
            i = 0
            while not stop.is_set():
                record = {"outcome": "ok", **execution(i, user=f"writer{n}", workspace="工作区")}
                i += 1
                try:
                    seq = client.append(**record)
                except AuditUnavailable:
                    failures.append(f"writer{n}")
                    return
                with lock:
                    assert seq not in acknowledged
                    acknowledged[seq] = record

        def pipelined_writer() -> None:
            async def run() -> None:
                client = AsyncAuditClient(home.settings, timeout=5)

                async def one(i: int) -> None:
                    record = {"outcome": "failed", **execution(i, user="pipelined")}
                    try:
                        seq = await client.append(**record)
                    except AuditUnavailable:
                        return
                    with lock:
                        acknowledged[seq] = record

                i = 0
                while not stop.is_set():
                    await asyncio.gather(*(one(i + k) for k in range(50)))
                    i += 50
                await client.close()

            asyncio.run(run())

        threads = [threading.Thread(target=blocking_writer, args=(n,)) for n in range(4)]
        threads.append(threading.Thread(target=pipelined_writer))
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 3000 and time.monotonic() < deadline:
            time.sleep(0.05)
        home.kill()  # SIGKILL in the middle of it
        killed_at = len(acknowledged)
        time.sleep(1)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        assert killed_at >= 3000, "the writers were still logging when the service was killed"
        assert len(failures) == 4, "every blocking writer saw the service go away"

        home.start()
        stored = {r["seq"]: r for r in home.all_records()}
        lost = [seq for seq in acknowledged if seq not in stored]
        assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:5]}"
        for seq, sent in acknowledged.items():
            assert {k: stored[seq][k] for k in FIELDS} == sent, seq
        assert sorted(stored) == list(range(1, len(stored) + 1))
        report = home.verify()
        assert report.ok, report.problems

        # The restarted service goes on from there, and its stop seals everything.
        after = home.client().append(**execution(0, user="after-restart"))
        assert after == len(stored) + 1
        assert home.stop() == 0
        report = home.verify()
        assert report.ok and report.records == after and report.notes == [], (report.problems, report.notes)
    finally:
        home.cleanup()
