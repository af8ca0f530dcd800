"""Cost of the guarded kernel websocket against stock jupyter_server, in the same run.

Three real servers from the operator's environment run side by side: one stock, and two with the
guard (its websocket connection class, contents and kernel managers), one of them with the egress
budget's accounting off (``EnclaveGuard.egress_accounting``), so that what the accounting costs is
measured apart from the rest of the guard. Each guarded server reports to a real audit receiver with
its egress ledger (``enclave.sandbox.receiver``). Over the v1 websocket protocol (JupyterLab's
default) the benchmark measures

* round-trip latency: an ``execute_request`` of ``pass`` until its ``idle`` status;
* output throughput: a cell printing 1 MiB in 1 KiB lines, flushed every 64 KiB (inside the
  default budgets: 512 KiB per message, 2 MiB per cell).

Rounds alternate between the servers to cancel drift. Targets: latency <= 1.10 x stock,
throughput >= 0.8 x stock; the accounting's cost on throughput <= 5 % (accounting on / off >= 0.95).

    .venv/bin/python benchmarks/guard_overhead.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "guard"))
# The guard's own client of the receiver (stdlib only), to time one egress report.
sys.path.insert(0, str(REPO / "extensions" / "enclave_guard"))
from conftest import open_kernel, start_server, stop_server  # noqa: E402
from enclave_guard.audit import AuditTrail  # noqa: E402
from enclave_guard.egress import BATCH_BYTES  # noqa: E402
from enclave_testing import audit_hub_side, close_audit_hub_side  # noqa: E402

STOCK = [
    "--ServerApp.jpserver_extensions", "enclave_guard=False",
    "--ServerApp.kernel_websocket_connection_class="
    "jupyter_server.services.kernels.connection.channels.ZMQChannelsWebsocketConnection",
    "--ServerApp.contents_manager_class=jupyter_server.services.contents.largefilemanager.AsyncLargeFileManager",
    "--ServerApp.kernel_spec_manager_class=jupyter_client.kernelspec.KernelSpecManager",
]
# Default budgets (policy.GuardSettings): the benchmark measures the guard as deployed, but for
# the egress budget's size: the rounds show more than a default hour's worth, and a held output
# would not be a throughput. Its accounting is the same whatever the size.
GUARD = {"egress_hour_mb": 10 * 1024.0, "egress_day_mb": 100 * 1024.0}
UNMETERED = ["--EnclaveGuard.egress_accounting=False"]
LATENCY_RUNS = 200
# Flushed every 64 KiB, so each message stays inside the 512 KiB per-message budget.
THROUGHPUT_CODE = (
    "import sys\nline = 'x' * 1023\nfor i in range(1024):\n    print(line)\n"
    "    if i % 64 == 63:\n        sys.stdout.flush()\n"
)
THROUGHPUT_BYTES = 1024 * 1024


async def latency(ks, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await ks.execute("pass")
        out.append(time.perf_counter() - t0)
    return out


async def throughput(ks) -> float:
    t0 = time.perf_counter()
    msgs = await ks.execute(THROUGHPUT_CODE)
    elapsed = time.perf_counter() - t0
    shown = sum(len(m["content"].get("text", "")) for m in msgs if m["msg_type"] == "stream")
    if shown < THROUGHPUT_BYTES:
        raise SystemExit(f"only {shown} of {THROUGHPUT_BYTES} bytes came through: the output was cut")
    return shown / elapsed


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        servers = {
            "stock": start_server(Path(tmp) / "stock", GUARD, STOCK),
            "guard": start_server(Path(tmp) / "guard", GUARD),
            "unmetered": start_server(Path(tmp) / "unmetered", GUARD, UNMETERED),
        }
        try:
            kernels = {name: await open_kernel(s, "v1") for name, s in servers.items()}
            for ks in kernels.values():  # warm up
                await latency(ks, 20)
                await throughput(ks)
            lat = {name: [] for name in servers}
            tput = {name: [] for name in servers}
            for n in range(rounds):
                # Each round in another order, so that no server always runs first or last.
                order = list(kernels.items())
                for name, ks in order[n % len(order):] + order[:n % len(order)]:
                    lat[name] += await latency(ks, LATENCY_RUNS // rounds)
                    tput[name].append(await throughput(ks))
            for ks in kernels.values():
                ks.close()
        finally:
            for s in servers.values():
                stop_server(s)
            close_audit_hub_side()

    med = {n: statistics.median(v) * 1000 for n, v in lat.items()}
    p90 = {n: statistics.quantiles(v, n=10)[-1] * 1000 for n, v in lat.items()}
    rate = {n: statistics.median(v) / 2**20 for n, v in tput.items()}
    print(f"round-trip latency, {len(lat['stock'])} executions each (ms):")
    for n in servers:
        print(f"  {n:9}  median {med[n]:7.2f}   p90 {p90[n]:7.2f}")
    print(f"  guard / stock median: {med['guard'] / med['stock']:.3f}  (target <= 1.10)")
    print(f"  egress accounting on / off median: {med['guard'] / med['unmetered']:.3f}")
    print(f"output throughput, {rounds} cells of 1 MiB each (MiB/s, median):")
    for n in servers:
        print(f"  {n:9}  {rate[n]:7.2f}")
    print(f"  guard / stock: {rate['guard'] / rate['stock']:.3f}  (target >= 0.80)")
    accounting = rate["guard"] / rate["unmetered"]
    print(f"  egress accounting on / off: {accounting:.3f}, a cost of {(1 - accounting) * 100:.1f} %"
          "  (target <= 5 %)")
    print(f"one egress report to the receiver (round trip, charge, SQLite write): {report_cost() * 1e6:.0f} us,"
          f" made once per {BATCH_BYTES // 1024} KiB shown at most")


def report_cost(runs: int = 2000) -> float:
    """Seconds per egress report: the guard's blocking round trip to a real receiver and its ledger."""
    with tempfile.TemporaryDirectory() as tmp:
        audit_hub_side().receiver(Path(tmp) / "receiver.sock", "benchmark/report-cost")
        trail = AuditTrail(str(Path(tmp) / "receiver.sock"), "alice", "demo", logging.getLogger("benchmark"))
        report = {"egress": {"channel": "kernel_output", "spent": 64 * 1024, "ask": 1024,
                             "budgets": {"hour": 2**40, "day": 2**41}}}
        trail.call(report)
        t0 = time.perf_counter()
        for _ in range(runs):
            trail.call(report)
        cost = (time.perf_counter() - t0) / runs
        trail.close()
    close_audit_hub_side()
    return cost


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
