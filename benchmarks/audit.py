"""Audit log benchmark: append throughput through the real service, verification and queries over
a million records.

Run: ``.venv/bin/python benchmarks/audit.py`` (about five minutes on 2 cores; ``--records N`` for a
smaller log). Everything runs in a temporary ENCLAVE_HOME with the default SQLite database.

1. Sustained append: the real audit service (``python -m enclave.audit.service``) and 10 writer
   processes on its unix socket, first with the asyncio client (each writer keeps up to 64
   appends in flight, as a busy hub or review service would), then with the blocking client (one
   record in flight per writer). Target: >= 5,000 records/s.
2. A log of 1,000,000 records (200 users, 20 workspaces, a checkpoint every 1,000 records), written
   through the service's own writer in batches, as the service does.
3. ``verify`` of the whole log (chain, Merkle roots at 1,000 checkpoints, signatures, second copy).
   Target: <= 10 s. Compared with reading the same rows and nothing else.
4. Query by user (all of one user's 5,000 records, in pages of 1,000; and the first page of 100).
   Target: <= 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WRITERS = 10
WINDOW = 64
USERS, WORKSPACES = 200, 20


def execution(i: int) -> dict:
    user, ws = f"user{i % USERS}", f"ws{i % WORKSPACES}"
    return {"source": "sandbox", "actor": user, "action": "kernel.execute", "outcome": "ok", "workspace": ws,
            "sandbox": f"{user}/{ws}", "detail": {"kernel": "4f1c", "notebook": "分析/报告.ipynb",
                                                  "code": f"df.groupby('区县').size()  # {i}",
                                                  "code_sha256": f"{i:064x}"}}


# -- 1. append throughput --


def _async_writer(path: str, count: int, start, done) -> None:
    from enclave.audit.client import AsyncAuditClient

    async def run() -> None:
        client = AsyncAuditClient(path)
        slots = asyncio.Semaphore(WINDOW)

        async def one(i: int) -> None:
            try:
                r = execution(i)
                await client.append(r["source"], r["actor"], r["action"], workspace=r["workspace"],
                                    sandbox=r["sandbox"], detail=r["detail"])
            finally:
                slots.release()

        await client.append("sandbox", "warm-up", "egress.notice", workspace="w", sandbox="s",
                            detail={"channel": "display", "used": 0, "budget": 1})
        start.wait()
        tasks = []
        for i in range(count):
            await slots.acquire()
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        await client.close()

    asyncio.run(run())
    done.put(count)


def _blocking_writer(path: str, count: int, start, done) -> None:
    from enclave.audit.client import AuditClient

    client = AuditClient(path)
    client.append("sandbox", "warm-up", "egress.notice", workspace="w", sandbox="s",
                  detail={"channel": "display", "used": 0, "budget": 1})
    start.wait()
    for i in range(count):
        r = execution(i)
        client.append(r["source"], r["actor"], r["action"], workspace=r["workspace"], sandbox=r["sandbox"],
                      detail=r["detail"])
    client.close()
    done.put(count)


def _wait_for_socket(path: Path, service: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise SystemExit(f"the audit service exited ({service.returncode})")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the audit service did not start")


def append_throughput(home: Path, writer, per_writer: int) -> float:
    env = {**os.environ, "ENCLAVE_HOME": str(home), "ENCLAVE_AUDIT__PORT": str(_free_port())}
    service = subprocess.Popen([sys.executable, "-m", "enclave.audit.service"], env=env,
                               stderr=open(home / "service.log", "a"))
    try:
        from enclave.audit import socket_path
        from enclave.settings import Settings

        path = socket_path(Settings(home=home))
        _wait_for_socket(path, service)
        ctx = multiprocessing.get_context("spawn")
        start, done = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=writer, args=(str(path), per_writer, start, done)) for _ in range(WRITERS)]
        for p in procs:
            p.start()
        time.sleep(3)  # every writer connected and warmed up
        t0 = time.perf_counter()
        start.set()
        total = sum(done.get(timeout=600) for _ in procs)
        elapsed = time.perf_counter() - t0
        for p in procs:
            p.join()
        return total / elapsed
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- 2-4. a million records --


def build_log(home: Path, records: int) -> float:
    from enclave.audit.records import check
    from enclave.audit.writer import Writer
    from enclave.settings import Settings

    writer = Writer.open(Settings(home=home))
    t0 = time.perf_counter()
    try:
        for first in range(0, records, 1000):
            writer.append([check(execution(i)) for i in range(first, min(first + 1000, records))])
            writer.checkpoint()
    finally:
        writer.close()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--appends-per-writer", type=int, default=10_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="audit-bench-"))
    try:
        run(root, args.records, args.appends_per_writer)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(root: Path, records: int, per_writer: int) -> None:
    from enclave.audit.checkpoints import key_paths, load_public_key
    from enclave.audit.reader import AuditReader
    from enclave.audit.verify import verify_database
    from enclave.settings import Settings

    print(f"audit benchmark on {os.cpu_count()} cores; SQLite (WAL, synchronous=FULL)")
    print()
    print(f"1. sustained append, {WRITERS} writer processes x {per_writer:,} records, through the real service")
    for name, writer in (("asyncio client, up to 64 in flight per writer", _async_writer),
                         ("blocking client, one in flight per writer", _blocking_writer)):
        home = root / name.split()[0]
        home.mkdir()
        rate = append_throughput(home, writer, per_writer)
        print(f"   {name:48} {rate:9,.0f} records/s   target >= 5,000: {rate / 5000:.2f}x"
              f" {'ok' if rate >= 5000 else 'BELOW TARGET'}")

    home = root / "million"
    home.mkdir()
    settings = Settings(home=home)
    print()
    print(f"2. building a log of {records:,} records (checkpoint every 1,000) through the writer ...", end=" ", flush=True)
    built = build_log(home, records)
    print(f"{built:.0f} s ({records / built:,.0f} records/s in batches of 1,000)")

    reader = AuditReader(settings)
    public = load_public_key(key_paths(settings)[1])
    t0 = time.perf_counter()
    rows = sum(1 for _ in reader.stream())
    read_only = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = verify_database(reader, public)
    verify_s = time.perf_counter() - t0
    assert report.ok and report.records == rows == records, report.problems
    print()
    print(f"3. verify {records:,} records, {report.checkpoints:,} checkpoints")
    print(f"   verify                                            {verify_s:9.2f} s          target <= 10 s: "
          f"{10 / verify_s:.2f}x {'ok' if verify_s <= 10 else 'ABOVE TARGET'}")
    print(f"   baseline: reading the same rows, no hashing         {read_only:9.2f} s          verify / read:"
          f" {verify_s / read_only:.1f}x")

    print()
    print(f"4. query by user over {records:,} records ({records // USERS:,} records per user)")

    def whole_user(user: str) -> int:
        n, after = 0, None
        while True:
            page = reader.query(user=user, after=after, limit=1000)
            n += len(page["records"])
            after = page["next"]
            if after is None:
                return n

    for label, fn in (("all of one user's records, pages of 1,000", lambda u: whole_user(u)),
                      ("first page of 100", lambda u: len(reader.query(user=u, limit=100)["records"])),
                      ("one user in one workspace, with since and until",
                       lambda u: len(reader.query(user=u, workspace="ws7", since="2000-01-01", until="2100-01-01",
                                                  limit=1000)["records"]))):
        times = []
        for k in range(5):
            t0 = time.perf_counter()
            n = fn(f"user{7 + 20 * k}")
            times.append(time.perf_counter() - t0)
        best = min(times) * 1000
        print(f"   {label:48} {best:9.1f} ms ({n:,} records)  target <= 200 ms: {200 / best:.1f}x"
              f" {'ok' if best <= 200 else 'ABOVE TARGET'}")
    reader.close()


if __name__ == "__main__":
    main()
