"""Sealed runs through the review service's layer (#18): the data holder's policy, submission and its
refusals, approval, the queue, real runs (the synthetic pre-run, then the sealed view, in bubblewrap
sandboxes), and their results as export requests that only the appointed reviewers see until they
decide. The operator's view is compared for a run that succeeded and one that failed.

A real audit service records every step (started for the while, as the CLI starts one); the
release is a small synthetic release of a GENERATED table with an outlier and missing values, and
its sealed view is built from the raw rows as the holder builds it.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from enclave_testing import HOLDER, grant

from enclave import accounts, workspaces
from enclave.audit.client import audit_service
from enclave.audit.reader import AuditReader
from enclave.audit.trace import render_text, trace
from enclave.exports import workflow as export_workflow
from enclave.exports.models import SealedRun
from enclave.exports.service import SCOPE_REQUEST, SCOPE_REVIEW, Actor, ExportError, ExportService
from enclave.sealed.service import SealedRuns
from enclave.settings import Settings
from synthetic import pipeline, sealed, store

WS = "alpha"
TABLE = "收入"
CONTRACT = {
    "name": "incomes", "generated": True,
    "tables": {TABLE: {"path": "收入.csv", "primary_key": "编号", "columns": {
        "编号": {"role": "direct_identifier", "type": "string", "treatment": "pseudonymise"},
        "年龄": {"role": "measure", "type": "integer", "uniqueness_accepted": "年龄是回归分析所需的变量，按年取整"},
        "地区": {"role": "quasi_identifier", "type": "string"},
        "收入": {"role": "sensitive", "type": "float"},
    }}},
    "privacy": {"k": 2, "l": 2, "max_suppressed": 0.5},
    "gates": {"quality": 0.5, "new_row_synthesis": 0.5, "max_copy_excess": 0.2, "max_attack_risk": 0.5,
              "dcr_overfitting_protection": 0.5},
}
# The operator's regression: income on age, coefficients to an output file (beside the notebook, whose
# folder is the kernel's working directory: 分析/结果/系数.json in the home).
REGRESSION = [
    "import json, os\nimport numpy as np, pandas as pd\n"
    f"df = pd.read_parquet('/data/' + os.listdir('/data')[0] + '/{TABLE}.parquet').dropna()\n"
    "slope, intercept = np.polyfit(df['年龄'].astype(float), df['收入'].astype(float), 1)",
    "os.makedirs('结果', exist_ok=True)\n"
    "json.dump({'斜率': slope, '截距': intercept}, open('结果/系数.json', 'w', encoding='utf-8'), ensure_ascii=False)",
]
# Fails on the real rows only: the raw table holds an outlier income no synthetic row reaches.
FAILS_ON_REAL = REGRESSION[:1] + ["assert df['收入'].max() < 1e7, '真实数据里有异常值'"] + REGRESSION[1:]
# Fails on the synthetic release too: refused before the real data is touched.
FAILS_EVERYWHERE = ["raise ValueError('合成数据上就失败')"]
SECONDS = 25
RELEASE: list[str] = []  # the synthetic release the settings fixture publishes


def notebook(cells: list[str]) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    return nbformat.writes(nb).encode()


def raw_table(n: int = 400, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    age = rng.integers(20, 65, n)
    income = 2000 + 150 * age + rng.normal(0, 800, n)
    income[rng.choice(n, 12, replace=False)] = np.nan  # missing values
    income[7] = 5e7  # an outlier
    return pd.DataFrame({"编号": [f"R{i:05d}" for i in range(n)], "年龄": age,  # sorted ids
                         "地区": rng.choice(["和平区", "河西区", "南开区"], n), "收入": income.round(1)})


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    settings = Settings(home=tmp_path_factory.mktemp("sealed-service"))
    raw = tmp_path_factory.mktemp("sealed-service-raw")
    raw_table().to_csv(raw / "收入.csv", index=False)
    (raw / "incomes.yaml").write_text(yaml.safe_dump(CONTRACT, allow_unicode=True), encoding="utf-8")
    release = pipeline.release(settings, raw / "incomes.yaml", "synthetic", by="tester", progress=False).release
    sealed.build(settings, release, by="tester")
    RELEASE.append(release)
    for name, roles in {"alice": ["operator"], "owen": ["operator"], "rita": ["reviewer"], "rob": ["reviewer"],
                        "ruth": ["reviewer"]}.items():
        accounts.add_user(settings, name, roles, "sealed-service-password")
    workspaces.create(settings, WS)
    for name, role in (("alice", "operator"), ("owen", "operator"), ("ruth", "reviewer")):
        workspaces.add_member(settings, WS, name, role)
    grant(settings, WS, release, reason="收入与年龄的回归")
    return settings


@pytest.fixture(scope="module")
def runs(settings):
    with audit_service(settings) as log:
        # What the holder's commands record of the release and its sealed view (enclave data ...).
        manifest = store.manifest(settings.release_store, RELEASE[0])
        log.append("cli", "tester", "data.source_registered", detail={"source": "incomes", "change": "registered"})
        log.append("cli", "tester", "data.release_published", detail={
            "release": RELEASE[0], "method": "synthetic", "content_hash": manifest["content_hash"], "gates": {}})
        log.append("cli", "tester", "data.sealed_view_built", detail={
            "release": RELEASE[0], "source": "incomes", "content_hash": sealed.read_manifest(
                settings.holder_dir, RELEASE[0])["content_hash"]})
        exports = ExportService(settings)
        yield SealedRuns(exports)
        exports.close()


def operator(name: str = "alice") -> Actor:
    return Actor(name, frozenset({SCOPE_REQUEST}), workspace=WS)


def person(name: str, *scopes: str) -> Actor:
    return Actor(name, frozenset(scopes))


def code_of(call, *args, **kwargs) -> str:
    with pytest.raises(ExportError) as refused:
        call(*args, **kwargs)
    return refused.value.code


def records(settings, action: str) -> list[dict]:
    reader = AuditReader(settings)
    try:
        return reader.query(action=action, limit=1000)["records"]
    finally:
        reader.close()


def submit(runs, settings, cells=REGRESSION, who="alice", outputs=("分析/结果/系数.json",)):
    return runs.submit(operator(who), RELEASE[0], "分析/回归.ipynb", notebook(cells),
                       [("分析/说明.md", "# 说明".encode())], list(outputs))


def test_the_policy_is_the_data_holders(runs, settings):
    for who in (operator(), person("rita", SCOPE_REVIEW)):
        assert code_of(runs.set_policy, who, WS, {"approval_required": False}) == "sealed_run.not_the_holder"
    holder = person(HOLDER)
    assert code_of(runs.set_policy, holder, WS, {"reviewers": ["rita", "alice"]}) == "sealed_run.reviewer_is_operator"
    assert code_of(runs.set_policy, holder, WS, {"reviewers": ["rita", "无此人"]}) == "sealed_run.reviewer_unknown"
    assert code_of(runs.set_policy, holder, WS, {"reviewers": [HOLDER]}) == "sealed_run.reviewer_without_role"
    assert code_of(runs.set_policy, holder, WS, {"runs_per_day": -1}) == "sealed_run.bad_runs_per_day"
    assert code_of(runs.set_policy, holder, WS, {"approval_required": "yes"}) == "sealed_run.bad_approval_required"
    assert code_of(runs.set_policy, holder, WS, {"limits": {"seconds": 1}}) == "sealed_run.bad_limits"
    assert code_of(runs.set_policy, holder, WS, {"colour": "red"}) == "sealed_run.unknown_policy_key"
    # Before any reviewer is appointed, no run can be made: nobody could review its results.
    assert code_of(submit, runs, settings) == "sealed_run.no_reviewers"
    policy = runs.set_policy(holder, WS, {"reviewers": ["rita", "rob"], "runs_per_day": 6,
                                          "limits": {"seconds": SECONDS, "memory_mb": 1024, "disk_mb": 64}})
    assert policy["reviewers"] == ["rita", "rob"] and policy["approval_required"] and policy["version"] == 1
    [record] = records(settings, "sealed_run.policy")
    assert record["actor"] == HOLDER and record["detail"]["reviewers"] == ["rita", "rob"]


def test_a_run_waits_for_the_holders_approval_and_refusals_say_why(runs, settings):
    first = submit(runs, settings)
    assert first["state"] == "awaiting_approval" and set(first) == {"id", "release", "notebook", "submitted_at", "state"}
    assert code_of(runs.decide, operator(), first["id"], True) == "sealed_run.not_the_holder"
    [awaiting] = runs.awaiting_holder(person(HOLDER))  # what the holder decides from, the code included
    assert awaiting["id"] == first["id"] and awaiting["code"] == REGRESSION
    assert runs.awaiting_holder(person("rita", SCOPE_REVIEW)) == []
    refused = runs.decide(person(HOLDER), first["id"], False, "目的不符")
    assert refused["state"] == "refused" and refused["refusal"]["text"] == "目的不符"
    second = submit(runs, settings)
    assert runs.decide(person(HOLDER), second["id"], True)["state"] == "queued"
    assert runs.withdraw(operator(), second["id"])["state"] == "withdrawn"
    assert code_of(runs.withdraw, operator("owen"), second["id"]) == "sealed_run.unknown"
    assert code_of(runs.decide, person(HOLDER), second["id"], True) == "sealed_run.step_not_allowed"
    # What the run is given and keeps is checked before it is queued.
    for outputs, code in (((".x.csv",), "export.file.bad_name"), (("结果/模型.pkl",), "export.file.type_not_exportable"),
                          (("a/回归.ipynb",), "sealed_run.result_name_taken"), (("error.txt",), "sealed_run.result_name_taken"),
                          (("../x.csv",), "sealed_run.parent_path")):
        assert code_of(submit, runs, settings, outputs=outputs) == code, outputs
    assert code_of(runs.submit, operator(), "other@1", "a.ipynb", notebook(["1"]), [], []) == "sealed.not_attached"
    steps = [(r["detail"]["step"], r["detail"]["state"]) for r in records(settings, "sealed_run.step")]
    assert steps == [("refuse", "refused"), ("approve", "queued"), ("withdraw", "withdrawn")]


def test_the_daily_limit_counts_the_past_24_hours(runs, settings):
    runs.set_policy(person(HOLDER), WS, {"runs_per_day": 2})
    owens = submit(runs, settings, who="owen")
    assert code_of(submit, runs, settings) == "sealed_run.daily_limit"  # alice's two earlier today; owen's is his
    with runs.exports._writing() as s:  # a day later, they no longer count
        for row in s.query(SealedRun).filter_by(requester="alice"):
            row.submitted_at -= timedelta(hours=24, seconds=1)
    alices = submit(runs, settings)
    assert alices["state"] == "awaiting_approval"
    runs.withdraw(operator("owen"), owens["id"])
    runs.withdraw(operator(), alices["id"])
    runs.set_policy(person(HOLDER), WS, {"runs_per_day": 20, "approval_required": False})


def test_runs_end_as_requests_the_appointed_reviewers_alone_see_and_the_operator_sees_the_same_states(runs, settings):
    ok, failed, broken = (submit(runs, settings, cells) for cells in (REGRESSION, FAILS_ON_REAL, FAILS_EVERYWHERE))
    assert {ok["state"], failed["state"], broken["state"]} == {"queued"}

    async def run_all():
        taken = [runs.start_next() for _ in range(3)]
        assert taken == [ok["id"], failed["id"], broken["id"]] and runs.start_next() is None
        return await asyncio.gather(*(runs.execute(run_id, slot) for slot, run_id in enumerate(taken)))

    outcomes = asyncio.run(run_all())
    assert [o.state if o else None for o in outcomes] == ["succeeded", "failed", None]

    # The operator: the pre-run's refusal with its error (synthetic data), the same words for the others.
    mine = {r["id"]: r for r in runs.runs_of(operator())}
    assert mine[broken["id"]]["state"] == "refused"
    assert "合成数据上就失败" in mine[broken["id"]]["refusal"]["params"]["error"]
    with runs.exports.db.snapshot() as s:
        rows = {r: s.get(SealedRun, r) for r in (ok["id"], failed["id"])}
        starts = {r: row.started_at.timestamp() for r, row in rows.items()}
        request_ids = {r: row.export_request_id for r, row in rows.items()}
    for run_id, start in starts.items():
        for offset, word in ((1, "running"), (SECONDS - 1, "running"), (SECONDS + 1, "ended")):
            shown = runs.shown(rows[run_id], at=start + offset)
            assert {k: v for k, v in shown.items() if k not in ("id", "submitted_at")} == {
                "release": RELEASE[0], "notebook": "分析/回归.ipynb", "state": word}

    # Their requests: hidden from the operator, not in the workspace reviewer's queue, in the appointed ones'.
    exports = runs.exports
    alice = Actor("alice", frozenset({SCOPE_REQUEST}))
    for request_id in request_ids.values():
        assert code_of(exports.get, alice, request_id) == "export.not_found"
        assert code_of(exports.get, person("ruth", SCOPE_REVIEW), request_id) == "export.not_found"
    assert exports.queue(alice, mine=True)["total"] == 0
    assert exports.queue(person("ruth", SCOPE_REVIEW))["total"] == 0
    queue = exports.queue(person("rita", SCOPE_REVIEW))
    assert {r["id"] for r in queue["requests"]} == set(request_ids.values())

    rita, rob = person("rita", SCOPE_REVIEW), person("rob", SCOPE_REVIEW)
    good = exports.get(rita, request_ids[ok["id"]])
    bad = exports.get(rita, request_ids[failed["id"]])
    assert {f["name"] for f in good["files"]} >= {"回归.ipynb", "系数.json"}
    assert {f["name"] for f in bad["files"]} >= {"回归.ipynb", "error-type.txt", "error.txt"}
    assert "真实数据里有异常值" in exports.file_content(rita, bad["id"], _file(bad, "error.txt"))[1].decode()
    provenance = _file(good, "系数.json", "provenance")
    assert provenance["sealed_run"] == ok["id"] and provenance["data_kind"] == "sealed_view"
    assert provenance["notebook_sha256"] == rows[ok["id"]].notebook_sha256
    assert provenance["source"] == "incomes" and set(provenance["source_files"]) == {TABLE}
    assert code_of(exports.vote, rita, good["id"], _file(good, "系数.json"), "request_changes", "改") == \
        "export.sealed_run_no_changes"

    # Two appointed reviewers release the coefficients: the operator gets them, computed on the raw rows.
    for reviewer in (rita, rob):
        for f in good["files"]:
            exports.vote(reviewer, good["id"], f["id"], "approve" if f["name"] == "系数.json" else "reject", "审核")
    released = exports.get(alice, good["id"])
    assert released["state"] == export_workflow.RELEASED
    # Of the rest (the executed notebook, rejected), alice learns nothing: no name, size or check, and
    # not the run's outcome or duration from the context reviewers read.
    assert [f["name"] for f in released["files"]] == ["系数.json"] and released["context"] == ""
    assert all(h["detail"] == {} for h in released["history"]), released["history"]
    link = exports.create_link(alice, good["id"], _file(released, "系数.json"))
    coefficients = json.loads(exports.download(alice, link["token"])[1])
    raw = raw_table().dropna()
    slope, intercept = np.polyfit(raw["年龄"].astype(float), raw["收入"].astype(float), 1)
    assert coefficients == pytest.approx({"斜率": slope, "截距": intercept})
    mounted = {name: folder for folder, name in workspaces.data_mounts(settings, workspaces.get(settings, WS))}
    synthetic = pd.read_parquet(mounted[RELEASE[0]] / f"{TABLE}.parquet").dropna()
    assert np.polyfit(synthetic["年龄"].astype(float), synthetic["收入"].astype(float), 1)[0] != pytest.approx(slope)
    assert code_of(exports.get, alice, request_ids[failed["id"]]) == "export.not_found"  # still undecided

    # From the downloaded bytes back to the run, its notebook and its source.
    reader = AuditReader(settings)
    try:
        traced = trace(settings, reader, data=exports.download(alice, exports.create_link(
            alice, good["id"], _file(released, "系数.json"))["token"])[1])
    finally:
        reader.close()
    assert traced["released"] and traced["problems"] == [], traced["problems"]
    run = traced["sealed_run"]
    assert run["id"] == ok["id"] and run["notebook_sha256"] == rows[ok["id"]].notebook_sha256
    assert [s["step"] for s in run["steps"]] == ["start", "run", "end"] and run["requester"] == "alice"
    assert run["source"]["name"] == "incomes" and run["source"]["sealed_view"] and run["source"]["registered"]
    text = render_text(traced)
    assert f"sealed run {ok['id']}" in text and "the source incomes" in text

    ends = [r["detail"] for r in records(settings, "sealed_run.step") if r["detail"]["step"] == "end"]
    assert {e["run_id"]: e["outcome"]["state"] for e in ends} == {ok["id"]: "succeeded", failed["id"]: "failed"}
    assert {e["request_id"] for e in ends} == set(request_ids.values())


def _file(view: dict, name: str, key: str = "id"):
    return next(f[key] for f in view["files"] if f["name"] == name)


def test_the_sealed_runs_page_is_generated_from_the_steps():
    from enclave.sealed import docs

    assert docs.DOC_PATH.read_text(encoding="utf-8") == docs.render(), "run: python -m enclave.sealed.docs"


def test_a_restarted_service_queues_pre_runs_again_ends_interrupted_runs_and_removes_their_files(runs, settings):
    """What a service killed mid-run leaves: a run in its pre-run (synthetic data only) is queued
    again; one running on the real data ends, its request telling reviewers it was interrupted; the
    run's folder on disk is removed."""
    pre, real = (submit(runs, settings) for _ in range(2))
    for run_id in (pre["id"], real["id"]):
        assert runs.start_next() == run_id
    with runs.exports._writing() as s:  # the second one had got as far as its run on the real data
        runs._step(s, runs._get(s, real["id"], for_update=True), "running", "runner", "system")
    left = settings.run_dir / "sealed" / f"{real['id']}-run"
    (left / "home").mkdir(parents=True)
    (left / "home" / "partial.csv").write_text("半截输出\n", encoding="utf-8")

    assert runs.recover() == 2
    assert not left.exists()
    with runs.exports.db.snapshot() as s:
        assert s.get(SealedRun, pre["id"]).state == "queued"
        ended = s.get(SealedRun, real["id"])
        assert ended.state == "ended" and ended.outcome["error"]["type"] == "Interrupted"
        request_id = ended.export_request_id
    view = runs.exports.get(person("rita", SCOPE_REVIEW), request_id)
    assert {f["name"] for f in view["files"]} == {"error-type.txt", "error.txt"}
    assert runs.withdraw(operator(), pre["id"])["state"] == "withdrawn"


def test_without_the_sealed_view_of_its_release_a_run_is_refused(runs, settings):
    """The holder removed the sealed view (or never registered the source it is made from): a new run
    is refused, and one queued before is refused when its turn comes, before anything runs."""
    queued = submit(runs, settings)
    assert queued["state"] == "queued"
    sealed.remove(settings.holder_dir, RELEASE[0])
    assert code_of(submit, runs, settings) == "sealed.not_built"

    async def turn():
        assert runs.start_next() == queued["id"]
        return await runs.execute(queued["id"], 0)

    assert asyncio.run(turn()) is None
    shown = {r["id"]: r for r in runs.runs_of(operator())}[queued["id"]]
    assert shown["state"] == "refused" and shown["refusal"]["code"] == "sealed.not_built"
