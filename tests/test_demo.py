"""The demo as ``enclave demo`` seeds it: every step it records is a record the audit log takes; its
raw source stays registered on the holder's side, and a synthetic release of it is attached beside
the masked one, its sealed view built."""

from __future__ import annotations

import stat

import pandas as pd
import pyarrow.parquet as pq
import pytest

from enclave import demo, sources, workspaces
from enclave.audit import records
from enclave.audit.client import audit_service
from enclave.settings import Settings
from synthetic import keys, masking, sealed, store
from synthetic import sources as holder_sources
from synthetic.contract import Contract


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """(settings, the records taken), the demo seeded once for the module."""
    taken = []

    def record(action, workspace=None, detail=None):
        # What the audit service checks before it appends (enclave.audit.records.check).
        taken.append(records.check({"source": "cli", "actor": "root", "action": action, "outcome": "ok",
                                    "workspace": workspace, "detail": detail}))

    settings = Settings(home=tmp_path_factory.mktemp("demo"))
    # The CLI's own records are the ones taken here; the review service's layer, which keeps the
    # sealed-run policy, records through the audit service (started for the while, as the CLI does).
    with audit_service(settings):
        assert demo.seed(settings, record)
    return settings, taken


def test_every_record_of_the_demos_seeding_is_one_the_audit_log_takes(seeded):
    _, taken = seeded
    published = [r for r in taken if r.action == "data.release_published"]
    assert [(r.detail["release"], r.detail["method"]) for r in published] == [
        ("residents@1", "masked"), ("residents@2", "synthetic")]
    # Verdicts only: a gate's detail and reason may name values of the data.
    assert all(r.detail["gates"] and all(set(g) == {"gate", "table", "value", "threshold", "passed"}
                                         for g in r.detail["gates"]) for r in published)
    assert published[1].detail["seed"] == 0
    # What the demo records for the masked release, it records for the synthetic one.
    for action in ("workspace.attach_request", "workspace.attach"):
        assert sorted(r.detail["release"] for r in taken if r.action == action) == ["residents@1", "residents@2"]
        assert all(r.workspace == demo.WORKSPACE for r in taken if r.action == action)
    assert [r.detail for r in taken if r.action == "data.source_registered"] == [
        {"source": "residents", "change": "registered"}]
    (built,) = [r for r in taken if r.action == "data.sealed_view_built"]
    assert built.detail["release"] == "residents@2" and built.detail["source"] == "residents"


def test_the_raw_source_stays_registered_on_the_holders_side_as_heidis(seeded):
    settings, _ = seeded
    src = holder_sources.source(settings.holder_dir, "residents")
    (version,) = src.files["residents"]
    raw = settings.holder_dir / "demo" / "residents" / "residents.generated.csv"
    assert version.path == str(raw) and store.sha256_file(raw) == version.sha256
    for path in (raw.parent, raw, raw.parent / "residents.yaml"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600)
    assert not raw.is_relative_to(settings.release_store)
    assert sources.holder_of(settings, "residents@2") == demo.HOLDER


def test_the_synthetic_release_is_attached_beside_the_masked_one_and_its_sealed_view_built(seeded):
    settings, _ = seeded
    assert [store.manifest(settings.release_store, r)["method"] for r in ("residents@1", "residents@2")] == [
        "masked", "synthetic"]
    ws = workspaces.get(settings, demo.WORKSPACE)
    assert ws.releases == ("residents@1", "residents@2") and ws.views == {}
    assert sealed.check(settings, "residents@2") == []
    view = pq.read_table(sealed.sealed_dir(settings.holder_dir, "residents@2") / "data" / "residents.parquet")
    release = settings.release_store / "residents@2" / "data" / "residents.parquet"
    assert view.schema.equals(pq.read_schema(release), check_metadata=True)
    # The release's own key: the sealed view's resident pseudonyms are the raw residents'.
    contract = Contract.model_validate(store.manifest(settings.release_store, "residents@2")["contract"])
    raw = pd.read_csv(settings.holder_dir / "demo" / "residents" / "residents.generated.csv", dtype=str)
    key = keys.release_key(settings.secrets_dir, contract, "residents@2")
    assert sorted(view.column("resident_id").to_pylist()) == sorted(masking.pseudonymise(raw["resident_id"], key))
    # The demo workspace's sealed view is the whole view, at the paths its sandboxes read.
    given = sealed.for_workspace(settings, demo.WORKSPACE, "residents@2")
    assert sorted(p.name for p in given.path.iterdir()) == ["README.txt", "residents.csv", "residents.parquet"]


def test_the_holder_lets_the_demos_reviewers_review_its_sealed_runs(seeded):
    from enclave.exports.service import ExportService
    from enclave.sealed.service import SealedRuns

    settings, _ = seeded
    exports = ExportService(settings)
    try:
        policy = SealedRuns(exports).policy(demo.WORKSPACE)
    finally:
        exports.close()
    assert policy["reviewers"] == ["carol", "dave"] and policy["approval_required"] and policy["version"] == 1
    assert not set(policy["reviewers"]) & workspaces.get(settings, demo.WORKSPACE).operators
