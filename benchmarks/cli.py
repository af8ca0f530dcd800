"""How long every ``enclave`` command takes, from a fresh process, against its budget.

Run: .venv/bin/python benchmarks/cli.py [--runs 5]   (as root, like the command itself)

Seeds a throwaway ENCLAVE_HOME as an admin would have it (accounts, a data holder and their
source, a workspace, a masked release attached to it with the holder's consent, an audit log with
checkpoints, a released export) with the audit and provisioning services running, as they run
beside a hub (the provisioning service serves the CLI's socket alone here, ``--cli-only``: the hub's
also serves its HTTP port, which the CLI does not use); then runs each command ``--runs`` times, each
in a new process, and prints one table: median and max wall time, the budget, and whether the
median is within it. The listing and provisioning commands are requests to that service; a last
row measures one with no service running (first-time setup: it starts one for the while).

Budgets (issue #13): ``enclave --help``, every command's ``--help`` and every provisioning and
listing command <= 0.3 s; verifying (``exports verify``, ``audit verify``, ``data verify``) and
``doctor`` <= 1 s. Commands with no budget (reports, traces, the docs checks) are measured too.
``hub``, ``demo`` (servers that keep running) and ``data release`` (builds a release) are listed,
not run. Baselines, measured in the same run: ``python -c pass`` and ``python -c "import click"``.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"
ENCLAVE = REPO / ".venv" / "bin" / "enclave"
FAST, VERIFY = 0.3, 1.0
PASSWORD = "benchmark-password-1"
WORKSPACE = "demo"
HOLDER = "hana"
PURPOSE = "人口普查分析：按区统计人口结构"
NOT_RUN = {
    "hub": "starts JupyterHub and keeps running",
    "demo": "seeds, then starts JupyterHub and keeps running",
    "data release": "builds a release (masking or synthesis of the source data)",
    "data source add": "reads every row of the source's data files to check them against the contract",
    "environment add": "installs packages into the operators' environment (pip)",
    "apply-doc": "writes the key reference of docs/provisioning.md",
}


@dataclass
class Command:
    """One row of the table: ``argv(i)`` for the i-th run (changes need new names each time)."""

    label: str
    argv: object  # Callable[[int], list[str]]
    budget: float | None
    stdin: str = ""
    ok_codes: tuple[int, ...] = (0,)
    times: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def timed(argv: list[str], env: dict, stdin: str = "") -> tuple[float, int, str]:
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, input=stdin.encode(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return time.perf_counter() - t0, done.returncode, (done.stderr or done.stdout).decode(errors="replace")


def enclave(env: dict, *args: str, stdin: str = "") -> str:
    done = subprocess.run([str(ENCLAVE), *args], env=env, input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"seeding failed: enclave {' '.join(args)}: {done.stderr or done.stdout}")
    return done.stdout


def command_paths() -> list[tuple[str, ...]]:
    """Every group and command of ``enclave``, as the words that name it (the root is ``()``)."""
    import click

    from enclave.cli import main

    paths = []

    def walk(cmd: click.Command, path: tuple[str, ...]) -> None:
        paths.append(path)
        if isinstance(cmd, click.Group):
            for name in sorted(cmd.commands):
                walk(cmd.commands[name], (*path, name))

    walk(main, ())
    return paths


def seed(home: Path, env: dict) -> dict:
    """Accounts, the workspace with a release attached, an audit log and one released export."""
    from enclave.exports.service import SCOPE_REQUEST, SCOPE_REVIEW, Actor, ExportService, Upload
    from enclave.settings import load_settings
    from synthetic.demo import publish_demo_release

    from enclave import workspaces
    from enclave.sources import source_of

    for name, role in (("admin", "admin"), ("alice", "operator"), ("carol", "reviewer"), ("dave", "reviewer"),
                       (HOLDER, "holder"), ("hugo", "holder")):
        enclave(env, "user", "add", name, "--role", role, "--password-stdin", stdin=PASSWORD + "\n")
    os.environ.update(env)
    settings = load_settings()
    release = publish_demo_release(settings)
    enclave(env, "data", "set-holder", source_of(release), HOLDER)
    enclave(env, "workspace", "create", WORKSPACE, "--purpose", PURPOSE, "--holder", HOLDER)
    for name, role in (("alice", "operator"), ("carol", "reviewer"), ("dave", "reviewer")):
        enclave(env, "workspace", "add-member", WORKSPACE, name, "--role", role)
    enclave(env, "workspace", "attach", WORKSPACE, release, "--reason", "人口普查分析")
    workspaces.consent(settings, WORKSPACE, release, HOLDER)  # the holder's own action (their pages, the API)

    service = ExportService(settings)
    alice = Actor("alice", frozenset({f"{SCOPE_REQUEST}!user=alice"}), workspace=WORKSPACE)
    table = "地区,人数\n北区,120\n南区,35\n东区,45\n".encode()
    rid = service.submit(alice, "各区人数", "按区汇总的人数，每格不少于10人", [Upload("各区人数.csv", table)])
    file_id = service.get(alice, rid)["files"][0]["id"]
    for name in ("carol", "dave"):  # the second vote approves the request and releases the file
        voted = service.vote(Actor(name, frozenset({SCOPE_REVIEW})), rid, file_id, "approve", "每格计数均不小于10")
    if voted["state"] != "released":
        raise SystemExit(f"seeding failed: two approvals left the export request {voted['state']}, not released")
    link = service.create_link(alice, rid, file_id)
    released = home / "各区人数.csv"
    released.write_bytes(service.download(alice, link["token"])[1])
    service.close()
    return {"release": release, "released": str(released)}


def commands(seeded: dict, out: Path) -> list[Command]:
    release, released = seeded["release"], seeded["released"]
    source = release.partition("@")[0]
    apply_file = out / "apply.yaml"
    apply_file.write_text(f"accounts:\n  {HOLDER}: {{roles: [holder]}}\nworkspaces:\n  {WORKSPACE}:\n"
                          f"    purpose: {PURPOSE}\n    holder: {HOLDER}\n", encoding="utf-8")
    # Each row runs --runs times before the next: changes work on run i's own account or workspace.
    return [
        Command("user add", lambda i: ["user", "add", f"bench{i}", "--role", "operator"], FAST),
        Command("user set-roles", lambda i: ["user", "set-roles", f"bench{i}", "--role", "reviewer"], FAST),
        Command("user disable", lambda i: ["user", "disable", f"bench{i}", "--reason", "借调到其他部门"], FAST),
        Command("user enable", lambda i: ["user", "enable", f"bench{i}"], FAST),
        Command("user set-expiry", lambda i: ["user", "set-expiry", f"bench{i}", "2099-06-30"], FAST),
        Command("user remove", lambda i: ["user", "remove", f"bench{i}"], FAST),
        Command("user list", lambda i: ["user", "list"], FAST),
        Command("user show", lambda i: ["user", "show", "alice"], FAST),
        # The CLI's socket's own route (not on the HTTP API); the service hashes the password (Argon2id).
        Command("user set-password", lambda i: ["user", "set-password", "alice", "--password-stdin"], FAST,
                stdin=PASSWORD + "\n"),
        Command("user set-language", lambda i: ["user", "set-language", "alice", ("zh_CN", "en")[i % 2]], FAST),
        Command("user throttles", lambda i: ["user", "throttles"], FAST),
        Command("user clear-throttle", lambda i: ["user", "clear-throttle", "alice"], FAST),
        Command("workspace create", lambda i: ["workspace", "create", f"bench{i}", "--purpose", PURPOSE,
                                               "--holder", HOLDER], FAST),
        Command("workspace add-member", lambda i: ["workspace", "add-member", f"bench{i}", "alice", "--role", "operator"],
                FAST),
        Command("workspace remove-member", lambda i: ["workspace", "remove-member", f"bench{i}", "alice",
                                                      "--role", "operator"], FAST),
        Command("workspace attach", lambda i: ["workspace", "attach", f"bench{i}", release, "--reason", "人口普查分析"],
                FAST),
        Command("workspace detach", lambda i: ["workspace", "detach", f"bench{i}", release], FAST),
        Command("workspace set-purpose", lambda i: ["workspace", "set-purpose", f"bench{i}", f"{PURPOSE}（第{i}期）"],
                FAST),
        Command("workspace set-holder", lambda i: ["workspace", "set-holder", f"bench{i}", "hugo"], FAST),
        Command("workspace set-expiry", lambda i: ["workspace", "set-expiry", f"bench{i}", "2099-12-31"], FAST),
        Command("workspace set-operators-may-review",
                lambda i: ["workspace", "set-operators-may-review", f"bench{i}", "yes"], FAST),
        Command("workspace set-limits", lambda i: ["workspace", "set-limits", WORKSPACE, f"memory_mb={2048 + i}"], FAST),
        Command("workspace set-guard", lambda i: ["workspace", "set-guard", WORKSPACE, f"upload_max_mb={10 + i}"],
                FAST),
        Command("workspace set-export-policy", lambda i: ["workspace", "set-export-policy", WORKSPACE,
                                                          f"min_cell_count={10 + i}"], FAST),
        Command("workspace freeze", lambda i: ["workspace", "freeze", f"bench{i}", "--reason", "数据持有方要求暂停"],
                FAST),
        Command("workspace unfreeze", lambda i: ["workspace", "unfreeze", f"bench{i}"], FAST),
        Command("workspace archive", lambda i: ["workspace", "archive", f"bench{i}", "--reason", "项目结束", "--yes"],
                FAST),
        Command("workspace list", lambda i: ["workspace", "list"], FAST),
        Command("workspace show", lambda i: ["workspace", "show", WORKSPACE], FAST),
        Command("data sources", lambda i: ["data", "sources"], FAST),
        Command("data set-holder", lambda i: ["data", "set-holder", source, HOLDER], FAST),
        # POST /apply: the service parses, plans (and would apply) the whole file in one transaction.
        Command("apply", lambda i: ["apply", str(apply_file), "--dry-run"], FAST),
        Command("environment list", lambda i: ["environment", "list"], FAST),
        Command("data list", lambda i: ["data", "list"], FAST),
        Command("data show", lambda i: ["data", "show", release], FAST),
        Command("data verify", lambda i: ["data", "verify", release], VERIFY),
        Command("data source list", lambda i: ["data", "source", "list"], FAST),
        Command("data source show", lambda i: ["data", "source", "show", source], FAST),
        Command("data lineage", lambda i: ["data", "lineage", source], FAST),
        Command("audit query", lambda i: ["audit", "query", "--limit", "50"], FAST),
        Command("audit export", lambda i: ["audit", "export", "-o", str(out / "audit.jsonl")], FAST),
        Command("audit verify", lambda i: ["audit", "verify"], VERIFY),
        Command("audit prove", lambda i: ["audit", "prove", "1"], VERIFY),
        Command("audit trace", lambda i: ["audit", "trace", released], None),
        Command("audit report", lambda i: ["audit", "report", WORKSPACE, "--since", "2000-01-01", "--until", "2100-01-01",
                                           "-o", str(out / "report.html")], None),
        Command("audit actions-doc", lambda i: ["audit", "actions-doc", "--check"], None),
        Command("exports verify", lambda i: ["exports", "verify", released], VERIFY),
        Command("exports states-doc", lambda i: ["exports", "states-doc", "--check"], None),
        Command("doctor", lambda i: ["doctor"], VERIFY, ok_codes=(0, 1)),  # a bare test home fails checks
    ]


def start_provisioning(home: Path, env: dict) -> subprocess.Popen:
    """The provisioning service, as the hub runs it (``python -I -m enclave.provisioning.app`` from "/";
    ``--cli-only``: no HTTP port, which needs the hub), for the whole run."""
    log = (home / "provisioning-service.log").open("w")
    started = subprocess.Popen([str(PYTHON), "-I", "-m", "enclave.provisioning.app", "--cli-only"], env=env, cwd="/",
                               stdout=log, stderr=subprocess.STDOUT)
    log.close()
    socket_file = home / "state" / "run" / "provisioning" / "cli.sock"
    deadline = time.monotonic() + 60
    while not socket_file.exists():
        if started.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the provisioning service did not start:\n{(home / 'provisioning-service.log').read_text()}")
        time.sleep(0.1)
    return started


def row(label: str, times: list[float], budget: float | None, note: str = "") -> str:
    med, worst = statistics.median(times), max(times)
    verdict = "-" if budget is None else "within" if med <= budget else "OVER"
    limit = "-" if budget is None else f"{budget:.1f}"
    return f"  {label:34} {med:7.3f} {worst:7.3f} {limit:>7} {verdict:>7}  {note}".rstrip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    runs = args.runs

    home = Path(tempfile.mkdtemp(prefix="enclave-cli-bench-"))
    # As installed: compiled modules are cached (PYTHONDONTWRITEBYTECODE would compile each changed one every run).
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCLAVE_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(ENCLAVE_HOME=str(home / "state"), ENCLAVE_AUDIT__PORT=str(free_port()),
               ENCLAVE_AUDIT__CHECKPOINT_EVERY_RECORDS="10", ENCLAVE_EXPORTS__PORT=str(free_port()))
    (home / "state").mkdir(mode=0o700)
    audit_log = (home / "audit-service.log").open("w")
    service = subprocess.Popen([str(PYTHON), "-I", "-m", "enclave.audit.service"], env=env, cwd="/",
                               stdout=audit_log, stderr=subprocess.STDOUT)
    provisioning = None
    try:
        socket_file = home / "state" / "run" / "audit" / "audit.sock"
        deadline = time.monotonic() + 60
        while not socket_file.exists():
            if service.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the audit service did not start:\n{(home / 'audit-service.log').read_text()}")
            time.sleep(0.1)
        provisioning = start_provisioning(home, env)
        print("seeding a throwaway ENCLAVE_HOME (accounts, workspace, release, audit log, a released export) ...")
        seeded = seed(home, env)
        table = commands(seeded, home)
        paths = command_paths()

        print(f"machine: {os.cpu_count()} cores; load average {loadavg()} before the runs")
        busy0, wall0 = busy_seconds(), time.monotonic()
        baselines = {}
        for label, argv in (("python -c pass", [str(PYTHON), "-c", "pass"]),
                            ('python -c "import click"', [str(PYTHON), "-c", "import click"])):
            baselines[label] = [timed(argv, env)[0] for _ in range(runs)]
        helps = []
        for path in paths:
            label = " ".join(("enclave", *path, "--help"))
            times = [timed([str(ENCLAVE), *path, "--help"], env)[0] for _ in range(runs)]
            helps.append((label, times))
        for c in table:
            for i in range(runs):
                elapsed, code, output = timed([str(ENCLAVE), *c.argv(i)], env, c.stdin)
                c.times.append(elapsed)
                if code not in c.ok_codes:
                    c.failures.append(f"exit {code}: {output.strip().splitlines()[-1] if output.strip() else ''}")
        # First-time setup: no hub, so no service; the command starts the provisioning service (and
        # the audit service) for the while. Measured last, with both stopped; no budget.
        provisioning.terminate()
        provisioning.wait(timeout=60)
        service.terminate()
        service.wait(timeout=60)
        no_hub = Command("user list (no hub: the service for the while)", lambda i: ["user", "list"], None)
        for i in range(runs):
            elapsed, code, output = timed([str(ENCLAVE), *no_hub.argv(i)], env)
            no_hub.times.append(elapsed)
            if code != 0:
                no_hub.failures.append(f"exit {code}: {output.strip().splitlines()[-1] if output.strip() else ''}")
        table.append(no_hub)
        busy = (busy_seconds() - busy0) / (time.monotonic() - wall0) / os.cpu_count()
        print(f"machine: load average {loadavg()} after; the cores were {busy:.0%} busy during the runs"
              " (this benchmark included)")

        base, click_base = (statistics.median(baselines[k]) for k in baselines)
        print(f"\nwall time of a fresh process, {runs} runs each (s); x pass / x click: median over the baselines")
        print(f"  {'command':34} {'median':>7} {'max':>7} {'budget':>7} {'verdict':>7}")
        for label, times in baselines.items():
            print(row(label, times, None, "baseline"))
        for label, times in helps:
            med = statistics.median(times)
            print(row(label, times, FAST, f"x{med / base:.1f} pass, x{med / click_base:.1f} click"))
        measured = {c.label for c in table}
        for c in table:
            med = statistics.median(c.times)
            note = f"x{med / base:.1f} pass, x{med / click_base:.1f} click"
            if c.failures:
                note += f"; FAILED: {c.failures[0]}"
            print(row("enclave " + c.label, c.times, c.budget, note))
        for path in paths:
            label = " ".join(path)
            if path and label not in measured and label not in NOT_RUN and not any(
                    other[:len(path)] == path and other != path for other in paths):
                print(f"  enclave {label:26} not measured: add it to benchmarks/cli.py")
        for label, why in NOT_RUN.items():
            print(f"  enclave {label:26} not run: {why}")
        over = [c.label for c in table if c.budget is not None and statistics.median(c.times) > c.budget]
        over += [label for label, times in helps if statistics.median(times) > FAST]
        print(f"\n{len(over)} over budget" + (f": {', '.join(over)}" if over else ""))
    finally:
        for running in (provisioning, service):
            if running is not None and running.poll() is None:
                running.terminate()
                running.wait(timeout=60)
        audit_log.close()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
