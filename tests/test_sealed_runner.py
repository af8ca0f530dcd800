"""The sealed-run runner (#18): a notebook executed headless in a sandbox of its own, on a release's
sealed view or on the synthetic release itself, with only its executed notebook and chosen outputs
collected. Real bubblewrap sandboxes, as root (the attacks and the time limit on the Docker backend
too, from the same policy); the attacks run as notebook code and must fail.

Most runs share a data folder made here (root's, 0600, as a sealed view is); the regression runs
on a real synthetic release and its sealed view, built as ``tests/synthetic/test_sealed_view.py``
builds them (a small table, five epochs).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import threading
from dataclasses import replace
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from enclave_testing import grant, wait_for

from enclave import accounts, supply, workspaces
from enclave.sandbox.policy import Identity, sealed_run_policy
from enclave.sealed import RunLimits, RunRequest, SealedRunRefusal, check_request, run, sealed_run_uid
from enclave.sealed.runner import processes_of_uid, read_inputs
from enclave.settings import Settings
from synthetic import pipeline, sealed

TABLE = "工资面板"
RELEASE = "fixture@1"
LIMITS = RunLimits(seconds=120, memory_mb=1024, disk_mb=64, tmp_mb=32)


def notebook(*cells: str) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    return nbformat.writes(nb).encode()


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return Settings(home=tmp_path_factory.mktemp("sealed-runs"))


@pytest.fixture(scope="module")
def data_dir(settings) -> Path:
    """A data folder as a sealed view's: root's, 0700 and 0600."""
    folder = settings.holder_dir / "sealed" / RELEASE / "data"
    folder.mkdir(parents=True)
    (folder / "表.csv").write_text("地区,工资\n北京,1.5\n上海,2.5\n", encoding="utf-8")
    (folder / "表.csv").chmod(0o600)
    for d in (folder, *folder.parents[:3]):
        d.chmod(0o700)
    return folder


def request_for(settings, data_dir, run_id: str, nb: bytes, slot: int = 0, **kw) -> RunRequest:
    fields = {"run_id": run_id, "user": "alice", "workspace": "alpha", "release": RELEASE, "data_dir": data_dir,
              "data_kind": "sealed_view", "notebook": nb, "limits": LIMITS, "uid": sealed_run_uid(settings, slot)}
    return RunRequest(**(fields | kw))


def run_now(settings, req: RunRequest):
    outcome = asyncio.run(run(settings, req))
    # Nothing of a run is left: no folder, no mounted home, no process of its uid.
    assert not (settings.run_dir / "sealed" / req.run_id).exists()
    assert str(settings.run_dir) not in Path("/proc/self/mountinfo").read_text()
    assert processes_of_uid(req.uid) == []
    return outcome


def outputs_of(outcome) -> list[list[dict]]:
    executed = nbformat.reads(outcome.executed_notebook.decode("utf-8"), as_version=4)
    return [c.get("outputs", []) for c in executed.cells]


# -- the regression on a real sealed view ------------------------------------------------------------

PANEL = {
    "name": "wages", "generated": True, "pseudonym_key": "panel",
    "tables": {TABLE: {"path": "工资面板.csv", "entity_column": "人员编号", "sequence_index": "年份", "columns": {
        "人员编号": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
        "年份": {"role": "measure", "type": "integer", "uniqueness_accepted": "每人每年一行，年份为分析所需"},
        "性别": {"role": "quasi_identifier", "type": "string"},
        "地区": {"role": "quasi_identifier", "type": "string"},
        "工资": {"role": "sensitive", "type": "float"},
    }}},
    "privacy": {"k": 2, "l": 2, "max_suppressed": 0.5},
    "synthesis": {"epochs": 5, "time_budget_s": 300},
    "gates": {"quality": 0.5, "new_row_synthesis": 0.5, "max_copy_excess": 0.1},
}
# The operator's regression: wage on year, its column named by an input file; coefficients to an output.
REGRESSION = (
    "import json, os\nimport numpy as np, pandas as pd\n"
    "settings = json.load(open('../参数/设置.json', encoding='utf-8'))\n"
    "df = pd.read_parquet(f'/data/{settings[\"release\"]}/工资面板.parquet').dropna(subset=[settings['y']])\n"
    "slope, intercept = np.polyfit(df['年份'].astype(float), df[settings['y']].astype(float), 1)",
    "os.makedirs('../结果', exist_ok=True)\n"
    "json.dump({'斜率': slope, '截距': intercept}, open('../结果/系数.json', 'w', encoding='utf-8'), ensure_ascii=False)\n"
    "print('回归完成')",
)


def _panel(people: int = 60, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(people):
        sex, region = rng.choice(["女", "男"]), rng.choice(["北京", "上海", "广州"])
        base, start = rng.lognormal(8.5, 0.4), int(rng.integers(2015, 2019))
        for year in range(start, start + int(rng.integers(2, 6))):
            wage = round(base * 1.05 ** (year - start) * rng.lognormal(0, 0.05), 1)
            rows.append({"人员编号": f"P{i:05d}", "年份": year, "性别": sex, "地区": region, "工资": wage})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def panel(settings, tmp_path_factory):
    """(synthetic release, the workspace's sealed view, the workspace's view of the release)."""
    raw = tmp_path_factory.mktemp("sealed-raw")
    _panel().to_csv(raw / "工资面板.csv", index=False)
    contract = raw / "wages.yaml"
    contract.write_text(yaml.safe_dump(PANEL, allow_unicode=True), encoding="utf-8")
    release = pipeline.release(settings, contract, "synthetic", by="tester", progress=False).release
    sealed.build(settings, release, by="tester")
    accounts.add_user(settings, "alice", ["operator"], "sealed-run-password-1")
    workspaces.create(settings, "alpha")
    workspaces.add_member(settings, "alpha", "alice", "operator")
    grant(settings, "alpha", release, columns=["年份", "工资"], reason="工资随年份的回归")
    return release, sealed.for_workspace(settings, "alpha", release), supply.view_dir(settings, "alpha", release)


def _coefficients(folder: Path) -> tuple[float, float]:
    df = pd.read_parquet(folder / f"{TABLE}.parquet").dropna(subset=["工资"])
    slope, intercept = np.polyfit(df["年份"].astype(float), df["工资"].astype(float), 1)
    return slope, intercept


def test_a_regression_on_the_sealed_view_gives_the_coefficients_of_its_rows(settings, panel):
    release, view, synthetic_view = panel
    inputs = {"参数/设置.json": json.dumps({"release": release, "y": "工资"}).encode()}
    regression_notebook = notebook(*REGRESSION)

    def regression(run_id, folder, kind):
        outcome = run_now(settings, request_for(settings, folder, run_id, regression_notebook, release=release,
                                            data_kind=kind, inputs=inputs, outputs=["结果/系数.json"],
                                            notebook_path="分析/回归.ipynb"))
        assert outcome.state == "succeeded", (outcome.error, outcome.log)
        assert outputs_of(outcome)[1] == [{"name": "stdout", "output_type": "stream", "text": "回归完成\n"}]
        return outcome, json.loads(outcome.outputs["结果/系数.json"])

    real, on_real = regression("real-1", view.path, "sealed_view")
    assert (on_real["斜率"], on_real["截距"]) == pytest.approx(_coefficients(view.path), rel=1e-9)
    assert list(real.outputs) == ["结果/系数.json"] and real.withheld == {} and real.error is None
    provenance = real.provenance
    assert provenance.data_hash == view.content_hash  # what the run read is the sealed view, byte for byte
    assert provenance.release == release and provenance.data_kind == "sealed_view"
    assert provenance.release_content_hash == pipeline.store.manifest(settings.release_store, release)["content_hash"]
    assert provenance.notebook_sha256 == hashlib.sha256(regression_notebook).hexdigest()
    assert provenance.notebook_path == "分析/回归.ipynb" and set(provenance.inputs) == {"参数/设置.json"}
    assert provenance.environment["distributions_sha256"] and provenance.environment["requirements_sha256"]

    # The same notebook on the synthetic release (the pre-run): the synthetic rows' coefficients.
    pre, on_synthetic = regression("pre-1", synthetic_view, "synthetic_release")
    assert (on_synthetic["斜率"], on_synthetic["截距"]) == pytest.approx(_coefficients(synthetic_view), rel=1e-9)
    assert on_synthetic["斜率"] != pytest.approx(on_real["斜率"], rel=1e-3)
    assert pre.provenance.data_hash != provenance.data_hash


# -- attacks from the notebook ------------------------------------------------------------------------

ATTACKS = (
    "import errno, json, os, socket, subprocess\nfound = {}\n"
    "found['interfaces'] = [n for _, n in socket.if_nameindex()]\n"
    "found['routes'] = open('/proc/net/route').read().splitlines()[1:]\n"
    "found['resolver'] = open('/etc/resolv.conf').read() if os.path.exists('/etc/resolv.conf') else ''\n"
    "def attempt(name, f):\n"
    "    try:\n        f(); found[name] = 'succeeded'\n"
    "    except OSError as exc:\n        found[name] = f'{type(exc).__name__}: {exc.strerror or exc}'",
    # A UDP connect only looks a route up: nothing is sent even if one existed.
    "attempt('udp_route', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).connect(('192.0.2.1', 53)))\n"
    "attempt('dns', lambda: socket.getaddrinfo('pypi.org', 443))\n"
    "attempt('write_data', lambda: open('/data/fixture@1/表.csv', 'a').write('x'))\n"
    "attempt('new_in_data', lambda: open('/data/fixture@1/new.csv', 'w'))\n"
    "attempt('write_env', lambda: open('/opt/enclave/env/pwned', 'w'))\n"
    "found['data_mount'] = [l.split()[5] for l in open('/proc/self/mountinfo') if l.split()[4] == '/data/fixture@1']\n"
    "found['data'] = open('/data/fixture@1/表.csv', encoding='utf-8').read()\n"
    "found['home'] = sorted(os.listdir(os.path.expanduser('~')))\n"
    "found['uid'] = os.getuid()\n"
    "found['hub'] = [p for p in ['/run/enclave', '/home/alice/.jupyter', '/var/run/docker.sock'] if os.path.exists(p)]",
    # Rows written where nothing is collected, and links planted under the outputs' names.
    "open('未选.csv', 'w').write(found['data'])\nopen('/tmp/raw.csv', 'w').write(found['data'])\n"
    "os.symlink('/data/fixture@1/表.csv', 'link.csv')\n"
    "os.symlink('/data/fixture@1', 'linked')\n"
    "os.symlink('/tmp/raw.csv', 'tmp-link.csv')\n"
    "os.mkfifo('pipe')\nos.mkdir('folder')\n"
    "open('big.bin', 'wb').write(b'0' * (2 * 2**20))\n"
    "json.dump(found, open('attacks.json', 'w'), ensure_ascii=False)",
)
ATTACK_OUTPUTS = ["attacks.json", "link.csv", "linked/表.csv", "tmp-link.csv", "pipe", "folder", "big.bin", "absent.csv"]


def on_backend(settings: Settings, backend: str) -> Settings:
    """``settings`` with sandboxes made by ``backend``: bubblewrap, or Docker containers of the image
    images/build.sh builds (enclave/sandbox), from the same policy."""
    return settings.model_copy(update={"sandbox": settings.sandbox.model_copy(update={"backend": backend})})


@pytest.fixture(scope="module", params=["bubblewrap", "docker"])
def attacked(request, settings, data_dir):
    """One run whose notebook attempts each attack and records what came of it in attacks.json."""
    settings = on_backend(settings, request.param)
    outcome = run_now(settings, request_for(settings, data_dir, "attacks-1", notebook(*ATTACKS), outputs=ATTACK_OUTPUTS,
                                        inputs=[("输入/说明.txt", "只是说明".encode())],
                                        limits=RunLimits(seconds=120, memory_mb=1024, disk_mb=64, output_max_mb=1)))
    assert outcome.state == "succeeded", (outcome.error, outcome.log)
    return outcome, json.loads(outcome.outputs["attacks.json"])


def test_no_network_no_route_and_no_dns(attacked):
    _, found = attacked
    assert found["interfaces"] == ["lo"] and found["routes"] == [] and found["resolver"] == ""
    assert found["udp_route"] == "OSError: Network is unreachable"
    assert found["dns"].startswith("gaierror")


def test_the_data_and_the_environment_are_read_only(attacked):
    _, found = attacked
    assert found["data"] == "地区,工资\n北京,1.5\n上海,2.5\n"  # readable by the run's uid...
    assert found["data_mount"][0].split(",")[0] == "ro"  # ...a read-only mount of files only root may write
    for attempt in ("write_data", "new_in_data", "write_env"):
        assert found[attempt] in ("PermissionError: Permission denied", "OSError: Read-only file system"), attempt


def test_the_home_is_fresh_and_the_run_has_its_own_uid_and_nothing_of_the_hub(settings, attacked):
    _, found = attacked
    assert found["home"] == sorted(["notebook.ipynb", "输入"])
    assert found["uid"] == sealed_run_uid(settings, 0) < settings.sandbox.uid_base
    assert found["hub"] == []


def test_only_the_selected_regular_files_are_collected_and_no_link_is_followed(attacked):
    outcome, _ = attacked
    assert list(outcome.outputs) == ["attacks.json"]
    assert outcome.withheld == {"link.csv": "not_a_regular_file", "linked/表.csv": "not_a_regular_file",
                                "tmp-link.csv": "not_a_regular_file", "pipe": "not_a_regular_file",
                                "folder": "not_a_regular_file", "big.bin": "too_large", "absent.csv": "missing"}
    # The rows the notebook wrote elsewhere (an unselected home file, /tmp) are nowhere in the outcome
    # but in the notebook's own outputs, which reviewers see.
    collected = b"".join(outcome.outputs.values())
    assert "北京".encode() in collected  # attacks.json holds what the notebook read, as selected
    assert "未选.csv" not in outcome.outputs and "/tmp/raw.csv" not in outcome.outputs


def test_a_failed_notebook_is_failed_with_its_exception(settings, data_dir):
    outcome = run_now(settings, request_for(settings, data_dir, "fails-1", notebook(
        "open('部分.csv', 'w').write('a,b\\n')", "raise ValueError('坏数据：第 3 行')", "print('never')"),
        outputs=["部分.csv"]))
    assert outcome.state == "failed"
    assert (outcome.error.type, outcome.error.message) == ("ValueError", "坏数据：第 3 行")
    # Reviewers get what there is: the notebook as far as it ran, and the outputs written before.
    assert outcome.outputs == {"部分.csv": b"a,b\n"}
    cells = outputs_of(outcome)
    assert cells[1][0]["ename"] == "ValueError" and cells[2] == []


@pytest.mark.parametrize("backend", ["bubblewrap", "docker"])
def test_sleeping_past_the_limit_is_timed_out_with_nothing_collected(settings, data_dir, backend):
    settings = on_backend(settings, backend)
    outcome = run_now(settings, request_for(settings, data_dir, "sleeps-1", notebook(
        "open('结果.csv', 'w').write(open('/data/fixture@1/表.csv', encoding='utf-8').read())",
        "import time\ntime.sleep(3600)"),
        outputs=["结果.csv"], limits=RunLimits(seconds=15, memory_mb=1024, disk_mb=64)))
    assert outcome.state == "timed_out" and outcome.error.type == "TimeoutError"
    assert outcome.executed_notebook is None and outcome.outputs == {} and outcome.withheld == {}
    assert outcome.log == ""


def test_a_cell_past_its_own_timeout_fails(settings, data_dir):
    outcome = run_now(settings, request_for(settings, data_dir, "cell-1", notebook("import time\ntime.sleep(3600)"),
                                        limits=RunLimits(seconds=120, cell_seconds=5, memory_mb=1024, disk_mb=64)))
    assert outcome.state == "failed" and outcome.error.type == "CellTimeoutError"


FILL = (
    "import errno, os\nwritten = {}\n"
    "def fill(path):\n"
    "    n = 0\n"
    "    try:\n"
    "        with open(path, 'wb') as f:\n"
    "            while n < 4096:\n                f.write(b'1' * 2**20); f.flush(); os.fsync(f.fileno()); n += 1\n"
    "    except OSError as exc:\n        written[path] = (n, exc.errno)\n"
    "    os.remove(path)\n"
    "fill('fill.bin'); fill('/tmp/fill.bin')"
)


def test_filling_the_disk_stops_at_the_quota_and_the_host_is_unaffected(settings, data_dir):
    outcome = run_now(settings, request_for(settings, data_dir, "fills-1", notebook(
        FILL, "import json\nhome, tmp = os.statvfs('.'), os.statvfs('/tmp')\n"
              "print(json.dumps([written, home.f_blocks * home.f_frsize // 2**20, tmp.f_blocks * tmp.f_frsize // 2**20]))"),
        limits=RunLimits(seconds=120, memory_mb=1024, disk_mb=32, tmp_mb=16)))
    assert outcome.state == "succeeded", (outcome.error, outcome.log)
    written, home_size, tmp_size = json.loads(outputs_of(outcome)[1][0]["text"])
    home_mb, home_errno = written["fill.bin"]
    tmp_mb, tmp_errno = written["/tmp/fill.bin"]
    assert home_errno == tmp_errno == 28  # ENOSPC, in the home and in /tmp
    assert home_mb < 32 and tmp_mb < 16
    # What the notebook filled were the run's own filesystems of those sizes (the home its
    # preallocated disk image, now removed; /tmp a sized tmpfs), never the host's.
    assert home_size <= 32 and tmp_size == 16


# -- refusals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "code"), [
    ({"inputs": {"/etc/passwd": b""}}, "sealed_run.absolute_path"),
    ({"inputs": {"../其他/x.py": b""}}, "sealed_run.parent_path"),
    ({"outputs": ["结果/../../x"]}, "sealed_run.parent_path"),
    ({"inputs": [("a/b.py", b"1"), ("a//./b.py", b"2")]}, "sealed_run.duplicate_path"),
    ({"inputs": {"notebook.ipynb": b"{}"}}, "sealed_run.duplicate_path"),
    ({"inputs": {"a": b"", "a/b": b""}}, "sealed_run.file_is_folder"),
    ({"outputs": [".sealed-run/executed.ipynb"]}, "sealed_run.reserved_path"),
    ({"notebook": b"print('not a notebook')"}, "sealed_run.bad_notebook"),
    ({"notebook_path": "分析.py"}, "sealed_run.not_a_notebook_path"),
    ({"run_id": "../up"}, "sealed_run.bad_id"),
    ({"release": "../fixture@1"}, "sealed_run.bad_release"),
    ({"uid": 200_001}, "sealed_run.bad_uid"),  # a workspace sandbox's
    ({"uid": 0}, "sealed_run.bad_uid"),
    ({"limits": RunLimits(seconds=0, memory_mb=1024, disk_mb=64)}, "sealed_run.bad_limit"),
])
def test_a_bad_request_is_refused_naming_the_problem(settings, data_dir, changes, code):
    req = replace(request_for(settings, data_dir, "refused-1", notebook("1")), **changes)
    with pytest.raises(SealedRunRefusal) as caught:
        check_request(settings, req)
    assert caught.value.code == code
    outcome = asyncio.run(run(settings, req))
    assert outcome.state == "refused" and outcome.error.type == code and outcome.executed_notebook is None
    assert not (settings.run_dir / "sealed" / "refused-1").exists()
    assert caught.value.render("zh_CN") != str(caught.value)  # in the reader's language


def test_a_data_folder_or_uid_that_cannot_be_used_is_refused(settings, data_dir, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(data_dir)
    assert run_now(settings, request_for(settings, link, "refused-2", notebook("1"))).error.type == "sealed_run.no_data"
    holding = tmp_path / "holding"
    holding.mkdir()
    (holding / "escape").symlink_to("/etc/shadow")
    outcome = run_now(settings, request_for(settings, holding, "refused-3", notebook("1")))
    assert outcome.state == "refused" and outcome.error.type == "sealed_run.data_not_plain"
    busy = os.fork()
    if busy == 0:  # a process of the run's uid: another run still holds it
        os.setuid(sealed_run_uid(settings, 9))
        os.execv("/bin/sleep", ["sleep", "60"])
    try:
        wait_for(lambda: processes_of_uid(sealed_run_uid(settings, 9)), 10, "the process under the run's uid")
        with pytest.raises(SealedRunRefusal) as caught:
            check_request(settings, request_for(settings, data_dir, "refused-4", notebook("1"), slot=9))
        assert caught.value.code == "sealed_run.uid_in_use"
    finally:
        os.kill(busy, 9)
        os.waitpid(busy, 0)


def test_inputs_are_read_from_a_home_without_following_links(tmp_path):
    home = tmp_path / "home"
    (home / "lib").mkdir(parents=True)
    (home / "lib" / "工具.py").write_text("X = 1\n", encoding="utf-8")
    (home / "lib" / "秘密.py").symlink_to("/etc/shadow")
    (home / "out").symlink_to("/etc")
    assert read_inputs(home, ["lib/工具.py"], max_mb=1) == [("lib/工具.py", "X = 1\n".encode())]
    for path, code in (("lib/秘密.py", "sealed_run.input_not_a_file"), ("out/passwd", "sealed_run.input_not_a_file"),
                       ("lib/无.py", "sealed_run.input_missing"), ("/etc/passwd", "sealed_run.absolute_path")):
        with pytest.raises(SealedRunRefusal) as caught:
            read_inputs(home, [path], max_mb=1)
        assert caught.value.code == code, path


# -- from a workspace's kernel: nothing of a run ------------------------------------------------------


def test_a_runs_data_home_and_processes_are_out_of_a_workspace_kernels_reach(enclave, alice_kernel):
    hub_settings = Settings(home=enclave.home)
    source = hub_settings.holder_dir / "sealed" / RELEASE / "data"
    source.mkdir(parents=True)
    (source / "表.csv").write_text("秘密,1\n", encoding="utf-8")
    alice_kernel.run("open('/home/alice/alice-only.txt', 'w').write('alice')")
    # The run waits for a file the test puts into its home from the host once the kernel has looked.
    waits = notebook("import os, time\nfor _ in range(600):\n    if os.path.exists('go'): break\n    time.sleep(0.5)",
                     "os.path.exists('/home/alice/alice-only.txt')")
    req = request_for(hub_settings, source, "watched-1", waits, slot=3)
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(result=asyncio.run(run(hub_settings, req))))
    runner.start()
    run_folder = hub_settings.run_dir / "sealed" / "watched-1"
    try:
        wait_for(lambda: processes_of_uid(req.uid) and (run_folder / "home" / "notebook.ipynb").exists(), 60,
                 "the sealed run")
        paths = [str(hub_settings.holder_dir), str(source), str(run_folder), str(run_folder / "data"),
                 str(run_folder / "home"), f"/data/{RELEASE}"]
        assert alice_kernel.value(f"import os, json; print(json.dumps([p for p in {paths!r} if os.path.exists(p)]))") == []
        assert alice_kernel.value("import os, json; print(json.dumps(os.listdir('/data')))") == ["households@1"]
        # The run's processes are in a pid namespace of their own; its uid owns nothing the kernel sees.
        seen = alice_kernel.value(
            "import os, json\nuids = set()\nfor p in os.listdir('/proc'):\n    if p.isdigit():\n"
            "        try: uids.add(os.stat(f'/proc/{p}').st_uid)\n        except OSError: pass\n"
            "print(json.dumps(sorted(uids)))")
        assert req.uid not in seen and processes_of_uid(req.uid)
    finally:
        (run_folder / "home" / "go").write_text("")
        runner.join(120)
    result = outcome["result"]
    assert result.state == "succeeded", (result.error, result.log)
    assert outputs_of(result)[1][0]["data"]["text/plain"] == "False"  # alice's home is not the run's
    shutil.rmtree(hub_settings.holder_dir / "sealed" / RELEASE)


def test_the_policy_gives_a_run_nothing_but_the_system_its_home_and_its_data(settings, tmp_path):
    identity = Identity(uid=sealed_run_uid(settings, 0), gid=sealed_run_uid(settings, 0), username="alice",
                        home="/home/alice")
    policy = sealed_run_policy(settings.sandbox.python_env, identity, LIMITS.sandbox_limits(), "sealed-x",
                               tmp_path / "home", (tmp_path / "data", RELEASE), "分析/回归.ipynb", 60,
                               {"ENCLAVE_ACRO_THRESHOLDS": "{}"})
    own = {(m.target, m.kind, m.source) for m in policy.mounts if not m.system and m.kind in ("ro", "rw")}
    assert own == {("/home/alice", "rw", str(tmp_path / "home")), (f"/data/{RELEASE}", "ro", str(tmp_path / "data"))}
    assert not [m for m in policy.mounts if m.target.startswith("/run")]  # no socket of any service
    assert [m.size_mb for m in policy.mounts if m.target == "/tmp"] == [LIMITS.tmp_mb]
    assert policy.network == "none" and policy.workdir == "/home/alice"
    assert policy.argv[:3] == ("/opt/enclave/env/bin/python", "-I", "-c")
    assert policy.argv[-3:] == ("/home/alice/分析/回归.ipynb", "/home/alice/.sealed-run", "60")
    assert not [k for k in policy.env if k.startswith(("JUPYTERHUB", "JPY_"))]
    assert policy.env["ENCLAVE_ACRO_THRESHOLDS"] == "{}" and policy.env["HOME"] == "/home/alice"
    for bad in ("../x.ipynb", "/home/alice/x.ipynb"):
        with pytest.raises(ValueError):
            sealed_run_policy(settings.sandbox.python_env, identity, LIMITS.sandbox_limits(), "sealed-x",
                              tmp_path / "home", (tmp_path / "data", RELEASE), bad, 60)
