"""Cost of the guarded kernel websocket against stock jupyter_server, in the same run.

Two real servers from the operator's environment run side by side: one with the guard (its
websocket connection class, contents and kernel managers), one stock. Over the v1 websocket
protocol (JupyterLab's default) the benchmark measures

* round-trip latency: an ``execute_request`` of ``pass`` until its ``idle`` status;
* output throughput: a cell printing 1 MiB in 1 KiB lines, flushed every 64 KiB (inside the
  default budgets: 512 KiB per message, 2 MiB per cell).

Rounds alternate between the servers to cancel drift. Targets: latency <= 1.10 x stock,
throughput >= 0.8 x stock.

    .venv/bin/python benchmarks/guard_overhead.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "guard"))
from conftest import open_kernel, start_server, stop_server  # noqa: E402

STOCK = [
    "--ServerApp.jpserver_extensions", "enclave_guard=False",
    "--ServerApp.kernel_websocket_connection_class="
    "jupyter_server.services.kernels.connection.channels.ZMQChannelsWebsocketConnection",
    "--ServerApp.contents_manager_class=jupyter_server.services.contents.largefilemanager.AsyncLargeFileManager",
    "--ServerApp.kernel_spec_manager_class=jupyter_client.kernelspec.KernelSpecManager",
]
# Default budgets (policy.GuardSettings): the benchmark measures the guard as deployed.
GUARD = {}
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
        }
        try:
            kernels = {name: await open_kernel(s, "v1") for name, s in servers.items()}
            for ks in kernels.values():  # warm up
                await latency(ks, 20)
                await throughput(ks)
            lat = {name: [] for name in servers}
            tput = {name: [] for name in servers}
            for _ in range(rounds):
                for name, ks in kernels.items():
                    lat[name] += await latency(ks, LATENCY_RUNS // rounds)
                    tput[name].append(await throughput(ks))
            for ks in kernels.values():
                ks.close()
        finally:
            for s in servers.values():
                stop_server(s)

    med = {n: statistics.median(v) * 1000 for n, v in lat.items()}
    p90 = {n: statistics.quantiles(v, n=10)[-1] * 1000 for n, v in lat.items()}
    rate = {n: statistics.median(v) / 2**20 for n, v in tput.items()}
    print(f"round-trip latency, {len(lat['stock'])} executions each (ms):")
    for n in servers:
        print(f"  {n:5}  median {med[n]:7.2f}   p90 {p90[n]:7.2f}")
    lat_ratio = med["guard"] / med["stock"]
    print(f"  guard / stock median: {lat_ratio:.3f}  (target <= 1.10)")
    print(f"output throughput, {rounds} cells of 1 MiB each (MiB/s, median):")
    for n in servers:
        print(f"  {n:5}  {rate[n]:7.2f}")
    tput_ratio = rate["guard"] / rate["stock"]
    print(f"  guard / stock: {tput_ratio:.3f}  (target >= 0.80)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
