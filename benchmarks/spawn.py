"""Spawn time through the proxy: Enclave's sandbox vs JupyterHub's plain local process spawner.

Run: .venv/bin/python benchmarks/spawn.py [--runs 5] [--concurrent 10]   (as root)
     .venv/bin/python benchmarks/spawn.py --backend docker [--runs 5]     (images/build.sh first)

Prints, from one run on this machine (bubblewrap):
- median time from spawn request to JupyterLab answering through the proxy, sandbox and plain,
  and their ratio (target: sandbox <= 1.10 x plain);
- for N concurrent sandbox spawns, p95 latency against the machine's limit
  N x (CPU seconds of one spawn) / cores (target: p95 <= 1.3 x that limit);
- idle resident memory per sandbox (server + one kernel).
With ``--backend docker``: the median time from spawn request to JupyterLab of the Docker backend
(containers, supervisors in a launcher, as the container deployment runs them) against the
bubblewrap backend, interleaved in the same run (target: docker <= 1.5 x bubblewrap), and the sizes
of Enclave's images.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from enclave_testing import REPO, Hub, backend_settings, processes_of_uid, wait_for  # noqa: E402

from enclave import accounts, workspaces  # noqa: E402
from enclave.settings import Settings  # noqa: E402

PASSWORD = "benchmark-password-1"


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def timed_start(session, server: str) -> float:
    t0 = time.perf_counter()
    r = session.start(server)
    assert r.status_code == 200 and "JupyterLab" in r.text, r.status_code
    return time.perf_counter() - t0


class PlainHub(Hub):
    """JupyterHub with SimpleLocalProcessSpawner running the same single-user server over TCP, with
    JupyterHub's defaults: one origin for the hub and every server."""

    def user_origin(self, user: str) -> str:
        return self.url

    def start(self) -> None:
        config = self.home / "plain_config.py"
        config.write_text(textwrap.dedent(f"""
            c.JupyterHub.ip = "127.0.0.1"
            c.JupyterHub.port = {self.port}
            c.JupyterHub.hub_port = {self.proxy_api_port + 1}
            c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api_port}"
            c.ConfigurableHTTPProxy.command = ["{REPO}/node_modules/.bin/configurable-http-proxy"]
            c.JupyterHub.db_url = "sqlite:///{self.home}/hub.sqlite"
            c.JupyterHub.cookie_secret_file = "{self.home}/cookie_secret"
            c.JupyterHub.authenticator_class = "dummy"
            c.DummyAuthenticator.allow_all = True
            c.JupyterHub.allow_named_servers = True
            c.JupyterHub.default_url = "/hub/home"
            c.JupyterHub.spawner_class = "simple"
            c.Spawner.cmd = ["{REPO}/.venv-sandbox/bin/jupyterhub-singleuser"]
            c.Spawner.args = ["--allow-root", "--ServerApp.jpserver_extensions={{'jupyterlab': True}}"]
            c.Spawner.default_url = "/lab"
            c.Spawner.env_keep = ["PATH", "LANG"]
            # Stock server: none of the sandbox's configuration (the guard needs a sandbox).
            c.Spawner.environment = {{"JUPYTER_NO_CONFIG": "1"}}
            c.SimpleLocalProcessSpawner.home_dir_template = "{self.home}/homes/{{username}}"
        """))
        import subprocess

        log = open(self.home / "hub.log", "ab")
        self.proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "jupyterhub"), "-f", str(config)],
                                     cwd=self.home, stdout=log, stderr=log, start_new_session=True)
        import requests

        def up():
            try:
                return requests.get(self.url + "/hub/api/", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(up, 60, "the plain hub")


def make_hub(home: Path, users: list[str], **env) -> Hub:
    hub = Hub(home=home, env_overrides={"ENCLAVE_SANDBOX__IDLE_TIMEOUT": "0", **env})
    hub.home.mkdir()
    settings = Settings(home=hub.home)
    workspaces.create(settings, "bench")
    for u in users:
        accounts.add_user(settings, u, ["operator"], PASSWORD)
        workspaces.add_member(settings, "bench", u, "operator")
    return hub


def compare_backends(runs: int) -> None:
    """The Docker backend against bubblewrap, interleaved: spawn to JupyterLab through the proxy."""
    import docker

    tmp = Path(tempfile.mkdtemp(prefix="enclave-bench-"))
    hubs = {backend: make_hub(tmp / backend, ["u0"], **backend_settings(backend)) for backend in ("bubblewrap", "docker")}
    times: dict[str, list[float]] = {backend: [] for backend in hubs}
    try:
        sessions = {}
        for backend, hub in hubs.items():
            hub.start()
            sessions[backend] = hub.login("u0", PASSWORD)
            timed_start(sessions[backend], "bench")  # the first start makes the home's image
            sessions[backend].stop("bench")
        for _ in range(runs):
            for backend, session in sessions.items():
                times[backend].append(timed_start(session, "bench"))
                session.stop("bench")
        med = {backend: statistics.median(t) for backend, t in times.items()}
        print(f"spawn -> JupyterLab through the proxy, median of {runs} (after a first start of each):")
        for backend, t in times.items():
            print(f"  {backend:10} {med[backend]:6.2f} s   {['%.2f' % x for x in t]}")
        print(f"  ratio docker/bubblewrap {med['docker'] / med['bubblewrap']:6.2f}   (target <= 1.5)")
        print("images:")
        for image in sorted(docker.from_env().images.list(name="enclave/*"), key=lambda i: i.tags):
            for tag in image.tags:
                print(f"  {tag:28} {image.attrs['Size'] / 1e6:8.0f} MB")
    finally:
        for hub in hubs.values():
            hub.stop()
            hub.stop_all_sandboxes()
            hub.stop_launcher()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--concurrent", type=int, default=10)
    ap.add_argument("--backend", choices=["bubblewrap", "docker"], default="bubblewrap",
                    help="docker: compare the Docker backend with bubblewrap")
    args = ap.parse_args()
    if args.backend == "docker":
        compare_backends(args.runs)
        return
    users = [f"u{i}" for i in range(args.concurrent)]
    tmp = Path(tempfile.mkdtemp(prefix="enclave-bench-"))

    enclave = make_hub(tmp / "enclave", users)
    plain = PlainHub(home=tmp / "plain")
    plain.home.mkdir()
    enclave.start()
    plain.start()
    try:
        sandbox_times, plain_times = [], []
        s_enclave = enclave.login(users[0], PASSWORD)
        s_plain = plain.login(users[0], "x")
        for _ in range(args.runs):  # interleaved, so both see the same machine
            sandbox_times.append(timed_start(s_enclave, "bench"))
            s_enclave.stop("bench")
            plain_times.append(timed_start(s_plain, "bench"))
            s_plain.stop("bench")
        med_s, med_p = statistics.median(sandbox_times), statistics.median(plain_times)
        print(f"spawn -> JupyterLab through the proxy, median of {args.runs}:")
        print(f"  sandbox (bubblewrap) {med_s:6.2f} s   {['%.2f' % t for t in sandbox_times]}")
        print(f"  plain local process  {med_p:6.2f} s   {['%.2f' % t for t in plain_times]}")
        print(f"  ratio sandbox/plain  {med_s / med_p:6.2f}   (target <= 1.10)")

        # CPU cost of one sandbox spawn, measured alone.
        b0 = busy_seconds()
        timed_start(s_enclave, "bench")
        one_cpu = busy_seconds() - b0
        k = s_enclave.kernel("bench")
        k.run("import pandas, matplotlib")
        time.sleep(2)
        uid = enclave_uid(enclave, users[0])
        rss = sum(rss_kib(p) for p in processes_of_uid(uid)) / 1024
        k.close()
        s_enclave.stop("bench")

        sessions = [enclave.login(u, PASSWORD) for u in users]
        latencies: list[float] = []
        lock = threading.Lock()

        def run(sess):
            t = timed_start(sess, "bench")
            with lock:
                latencies.append(t)

        threads = [threading.Thread(target=run, args=(s,)) for s in sessions]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        latencies.sort()
        p95 = latencies[max(0, int(round(0.95 * len(latencies))) - 1)]
        cores = os.cpu_count()
        limit = args.concurrent * one_cpu / cores
        print(f"{args.concurrent} concurrent sandbox spawns:")
        print(f"  CPU seconds of one spawn {one_cpu:.2f}; machine limit {args.concurrent} x {one_cpu:.2f} / {cores} cores = {limit:.2f} s")
        print(f"  p95 {p95:.2f} s  max {latencies[-1]:.2f} s  ratio p95/limit {p95 / limit:.2f}   (target <= 1.3)")
        print(f"idle RSS per sandbox (server + kernel with pandas and matplotlib loaded): {rss:.0f} MiB")
    finally:
        enclave.stop()
        enclave.stop_all_sandboxes()
        plain.stop()


def enclave_uid(hub: Hub, user: str) -> int:
    import json

    spec = hub.home / "run" / "sandboxes" / user / "bench" / "spec.json"
    return json.loads(spec.read_text())["server"]["identity"]["uid"]


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    main()
