"""In a real sandbox: a workspace attached to a column view sees exactly those columns."""

from __future__ import annotations

from enclave import accounts, supply, workspaces
from enclave_testing import grant
from enclave.settings import Settings
from synthetic import demo

PASSWORD = "view-test-password-1"
COLUMNS = ["resident_id_birth_year_band", "diagnosis"]


def test_sandbox_sees_only_the_granted_columns(hub_factory):
    hub = hub_factory("views")
    settings = Settings(home=hub.home)
    release = demo.publish_demo_release(settings)
    accounts.add_user(settings, "vera", ["operator"], PASSWORD)
    workspaces.create(settings, "study")
    workspaces.add_member(settings, "study", "vera", "operator")
    grant(settings, "study", release, "steward", columns=COLUMNS, reason="diagnoses by birth decade")
    hub.start()
    try:
        session = hub.login("vera", PASSWORD)
        assert session.start("study").status_code == 200
        kernel = session.kernel("study")
        seen = kernel.value(
            "import os, json, csv\n"
            f"root = '/data/{release}'\n"
            "files = sorted(os.listdir(root))\n"
            "header = next(csv.reader(open(os.path.join(root, 'residents.csv'), encoding='utf-8')))\n"
            "blob = b''.join(open(os.path.join(root, f), 'rb').read() for f in files)\n"
            "print(json.dumps({'data': os.listdir('/data'), 'files': files, 'header': header,\n"
            "                  'other_columns': [c for c in ('mobile', 'income', 'visit_date', 'notes',\n"
            "                                    'resident_id_sex', 'education') if c.encode() in blob]}))"
        )
        kernel.close()
    finally:
        hub.stop_all_sandboxes()
        hub.stop()
    assert seen["data"] == [release]
    assert seen["files"] == ["README.txt", "residents.csv", "residents.parquet"]
    assert seen["header"] == COLUMNS
    assert seen["other_columns"] == []
    (entry,) = supply.read_manifest(settings, "study")
    assert (entry["action"], entry["by"], entry["reason"]) == ("attach", "steward", "diagnoses by birth decade")
    assert entry["columns"] == {"residents": COLUMNS}
