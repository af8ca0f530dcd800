"""``enclave apply`` of 500 accounts and 100 workspaces into a fresh ENCLAVE_HOME: the first time,
and again when nothing changed, against the budgets of issue #15.

Run: .venv/bin/python benchmarks/provisioning.py   (as root, like the command itself)

The file: 500 accounts (2 admins, 10 data holders, 300 operators, 188 reviewers), 10 sources with
a release each in the store (a Parquet table of three columns), 100 workspaces, each with a Chinese
purpose, a data holder, 3 operators, 2 reviewers and an owner, a request for 2 columns of its
holder's release with a reason, a memory limit; every tenth one also sets guard settings (which the
guard checks in the operators' environment, a process each). The hub's audit service runs, as it
runs beside a hub, and takes every record.

Password hashing is off the clock: each new account's generated password is hashed with Argon2id
before the transaction opens (``Result.hashing_seconds``, printed on its own), and the first
apply's figure is given without it (budget <= 30 s) and with it. The second apply (nothing changed,
budget <= 5 s) is measured in process and as the command in a fresh process.

Baselines measured in the same run: the same rows inserted with plain SQLAlchemy (one transaction,
no checks) into a fresh database of the same schema, and the same number of audit records appended
one by one to the same audit service. Figures are printed, never asserted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"
ENCLAVE = REPO / ".venv" / "bin" / "enclave"
FIRST_BUDGET, AGAIN_BUDGET = 30.0, 5.0
SOURCES, WORKSPACES = 10, 100
ROLES = {"admin": 2, "holder": SOURCES, "operator": 300, "reviewer": 188}  # 500 accounts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def names(role: str) -> list[str]:
    return [f"{role}{i:03d}" for i in range(ROLES[role])]


def declaration() -> str:
    """The file: accounts, sources, workspaces (YAML, flow style for the short mappings)."""
    lines = ["accounts:"]
    for role in ROLES:
        lines += [f"  {name}: {{roles: [{role}]}}" for name in names(role)]
    holders, operators, reviewers = names("holder"), names("operator"), names("reviewer")
    lines.append("sources:")
    lines += [f"  src{i:02d}: {{holder: {holders[i]}}}" for i in range(SOURCES)]
    lines.append("workspaces:")
    for w in range(WORKSPACES):
        source = w % SOURCES
        lines += [
            f"  ws{w:03d}:",
            f"    purpose: 第{w}号工作区：按区统计户规模与收入分布（已审批的应用场景）",
            f"    holder: {holders[source]}",
            "    members:",
            f"      operator: [{', '.join(operators[(3 * w + k) % len(operators)] for k in range(3))}]",
            f"      reviewer: [{', '.join(reviewers[(2 * w + k) % len(reviewers)] for k in range(2))}]",
            f"      owner: [{operators[(3 * w + 150) % len(operators)]}]",
            "    releases:",
            f"      src{source:02d}@1: {{columns: [district, size], reason: 按区统计户规模}}",
            f"    limits: {{memory_mb: {2048 + 256 * (w % 4)}}}",
        ]
        if w % 10 == 0:
            lines.append("    guard: {terminals: false, upload_max_mb: 20}")
    return "\n".join(lines) + "\n"


def publish_releases(home: Path) -> None:
    import pandas as pd

    for i in range(SOURCES):
        data = home / "releases" / f"src{i:02d}@1" / "data"
        data.mkdir(parents=True)
        frame = pd.DataFrame({"district": ["和平区", "河西区", "南开区"], "size": [3, 4, 2], "income": [5200, 6100, 4800]})
        frame.to_parquet(data / "households.parquet")
        frame.to_csv(data / "households.csv", index=False)


def sqlalchemy_baseline(directory: Path) -> float:
    """The same rows, inserted with plain SQLAlchemy in one transaction into a fresh database."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from enclave import db

    engine = create_engine(f"sqlite:///{directory / 'baseline.db'}")
    db.Base.metadata.create_all(engine)
    holders, operators, reviewers = names("holder"), names("operator"), names("reviewer")
    t0 = time.perf_counter()
    with Session(engine) as s, s.begin():
        for role in ROLES:
            s.add_all(db.Account(username=n, password_hash="x", roles=[db.AccountRole(role=role)]) for n in names(role))
        s.flush()
        s.add_all(db.Source(name=f"src{i:02d}", holder=holders[i]) for i in range(SOURCES))
        for w in range(WORKSPACES):
            members = ([db.Membership(username=operators[(3 * w + k) % 300], role="operator") for k in range(3)]
                       + [db.Membership(username=reviewers[(2 * w + k) % 188], role="reviewer") for k in range(2)]
                       + [db.Membership(username=operators[(3 * w + 150) % 300], role="owner")])
            s.add(db.Workspace(name=f"ws{w:03d}", purpose="第号工作区", holder=holders[w % SOURCES], limits={"memory_mb": 2048},
                               guard={}, members=members, attachments=[db.Attachment(
                                   release=f"src{w % SOURCES:02d}@1", attached_by="x", reason="r",
                                   columns={"households": ["district", "size"]})]))
    elapsed = time.perf_counter() - t0
    engine.dispose()
    return elapsed


def audit_baseline(settings, count: int) -> float:
    """``count`` records appended one by one, as apply hands its records over."""
    from enclave.audit.client import AuditClient

    client = AuditClient(settings)
    t0 = time.perf_counter()
    for i in range(count):
        client.append("cli", "benchmark", "account.throttle_cleared", detail={"user": f"nobody{i}", "failures": 1})
    elapsed = time.perf_counter() - t0
    client.close()
    return elapsed


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="enclave-provisioning-bench-"))
    home = root / "state"
    home.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENCLAVE_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(ENCLAVE_HOME=str(home), ENCLAVE_AUDIT__PORT=str(free_port()), ENCLAVE_EXPORTS__PORT=str(free_port()))
    os.environ.update({k: v for k, v in env.items() if k.startswith("ENCLAVE_")})
    audit_log = (root / "audit-service.log").open("w")
    service = subprocess.Popen([str(PYTHON), "-I", "-m", "enclave.audit.service"], env=env, cwd="/",
                               stdout=audit_log, stderr=subprocess.STDOUT)
    try:
        socket_file = home / "run" / "audit" / "audit.sock"
        deadline = time.monotonic() + 60
        while not socket_file.exists():
            if service.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the audit service did not start:\n{(root / 'audit-service.log').read_text()}")
            time.sleep(0.1)
        run(root, env)
    finally:
        service.terminate()
        service.wait(timeout=60)
        audit_log.close()
        shutil.rmtree(root, ignore_errors=True)


def run(root: Path, env: dict) -> None:
    from enclave import db
    from enclave.audit.client import Recorder, audit_service
    from enclave.provisioning import apply as provisioning
    from enclave.settings import load_settings

    settings = load_settings()
    publish_releases(settings.home)
    db.session_factory(settings.enclave_db_url)  # an installed Enclave has its database already
    path = root / "enclave.yaml"
    path.write_text(declaration(), encoding="utf-8")
    text = path.read_text(encoding="utf-8")

    @contextlib.contextmanager
    def recording():
        with audit_service(settings) as audit:
            yield Recorder(audit, "cli", "benchmark")

    print(f"file: {path} ({len(text.splitlines())} lines): 500 accounts, {SOURCES} sources, {WORKSPACES} workspaces")
    print(f"machine: {os.cpu_count()} cores; load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    t0 = time.perf_counter()
    first = provisioning.apply(settings, text, str(path), "benchmark", recording)
    first_total = time.perf_counter() - t0
    if not first.applied:
        raise SystemExit("the first apply changed nothing: the benchmark's file or home is wrong")
    changes = len(first.changes)

    t0 = time.perf_counter()
    again = provisioning.apply(settings, text, str(path), "benchmark", recording)
    again_in_process = time.perf_counter() - t0
    if again.changes:
        raise SystemExit(f"the second apply found {len(again.changes)} change(s): apply is not idempotent here")
    t0 = time.perf_counter()
    done = subprocess.run([str(ENCLAVE), "apply", str(path)], env=env, capture_output=True, text=True)
    again_command = time.perf_counter() - t0
    if done.returncode != 0 or not done.stdout.startswith("nothing to change"):
        raise SystemExit(f"enclave apply, second time: exit {done.returncode}: {done.stdout[-500:]}{done.stderr[-500:]}")

    rows = sqlalchemy_baseline(root)
    records = audit_baseline(settings, changes)

    first_clock = first_total - first.hashing_seconds
    verdict = lambda t, budget: "within" if t <= budget else "OVER"  # noqa: E731
    print(f"\n{changes} changes (= audit records) the first time\n")
    print(f"  {'':64} {'seconds':>8} {'budget':>7}")
    print(f"  {'first apply, without password hashing':64} {first_clock:8.2f} {FIRST_BUDGET:7.0f}  {verdict(first_clock, FIRST_BUDGET)}")
    print(f"  {'  password hashing (Argon2id, 500 new accounts; off the clock)':64} {first.hashing_seconds:8.2f}")
    print(f"  {'  first apply, all of it':64} {first_total:8.2f}")
    print(f"  {'second apply, nothing changed (in process)':64} {again_in_process:8.2f} {AGAIN_BUDGET:7.0f}  {verdict(again_in_process, AGAIN_BUDGET)}")
    print(f"  {'second apply, nothing changed (enclave apply, new process)':64} {again_command:8.2f} {AGAIN_BUDGET:7.0f}  {verdict(again_command, AGAIN_BUDGET)}")
    print(f"  {'baseline: the same rows, plain SQLAlchemy, one transaction':64} {rows:8.2f}")
    print(f"  {f'baseline: {changes} audit records appended one by one':64} {records:8.2f}")


if __name__ == "__main__":
    sys.exit(main())
