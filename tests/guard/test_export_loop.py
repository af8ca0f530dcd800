"""The return → new version → resubmit loop, end to end: a real hub, proxy, bubblewrap sandbox and
export review service.

alice requests an export through her server's guard; carol returns it; alice sends a new version
of the file (read by her server from the home) and resubmits; carol approves; the file is released,
and what alice downloads is the new version, byte for byte. Around it, the guard's refusals: a new
version of a request that is not returned, a file that is not in the request, a hidden file, a file
outside the home, and a step that is not the requester's.
"""

from __future__ import annotations

import hashlib
import uuid

import pytest

# The export loop through a server and kernels in bubblewrap sandboxes, and in containers.
pytestmark = pytest.mark.backends("bubblewrap", "docker")

PASSWORD = "correct-horse-battery-staple"  # tests/conftest.py's accounts

OLD = "区县,户数\n和平区,120\n南山区,135\n"
NEW = "区县,户数\n和平区,125\n南山区,140\n"


def guard_call(alice, method: str, path: str, **kw):
    return alice.server_request("alpha", method, f"enclave/api/exports{path}", allow_redirects=False, **kw)


def write(kernel, path: str, text: str) -> None:
    out, err = kernel.run(
        f"import pathlib\np = pathlib.Path.home() / {path!r}\np.parent.mkdir(parents=True, exist_ok=True)\n"
        f"p.write_text({text!r}, encoding='utf-8')\nprint('ok')")
    assert err is None and out.strip() == "ok", err


@pytest.fixture(scope="module")
def loop(review_hub):
    alice, carol = review_hub.login("alice", PASSWORD), review_hub.login("carol", PASSWORD)
    assert alice.start("alpha").status_code == 200
    for s in (alice, carol):
        s.http.get(f"{review_hub.service_url('exports')}/")  # the service's OAuth hand-shake
    kernel = alice.kernel("alpha")
    yield alice, carol, kernel
    kernel.close()


def test_returned_request_gets_a_new_version_and_is_released(loop, decide, service_call):
    alice, carol, kernel = loop
    name = f"户数-{uuid.uuid4().hex[:6]}.csv"
    write(kernel, name, OLD)
    r = guard_call(alice, "POST", "", json={"paths": [name], "justification": "各区户数，用于年度报告。"})
    assert r.status_code == 201, r.text
    request_id = r.json()["id"]

    # A new version is refused while the request is under review.
    write(kernel, f"v2/{name}", NEW)
    r = guard_call(alice, "POST", f"/{request_id}/files", json={"files": [{"name": name, "path": f"v2/{name}"}]})
    assert r.status_code == 409 and "only while the request is returned" in r.json()["message"], r.text

    returned = decide(carol, request_id, "request_changes", "请把户数四舍五入到5。")
    assert returned["state"] == "returned"
    shown = guard_call(alice, "GET", f"/{request_id}").json()
    # Resubmitting waits for a new version of the file that was asked to change.
    assert shown["state"] == "returned" and shown["allowed"] == ["withdrawn"]
    assert "请把户数四舍五入到5。" in shown["returns"][-1]["reason"]
    assert shown["files"][0]["path"] == name and shown["files"][0]["version"] == 1

    # The checks for the new version, then the new version itself, read by the server from v2/.
    r = guard_call(alice, "POST", "/checks", json={"request": request_id, "files": [{"name": name, "path": f"v2/{name}"}]})
    assert r.status_code == 200, r.text
    assert r.json()["files"][0]["name"] == name and r.json()["files"][0]["path"] == f"v2/{name}"
    r = guard_call(alice, "POST", f"/{request_id}/files", json={"files": [{"name": name, "path": f"v2/{name}"}]})
    assert r.status_code == 200, r.text
    assert r.json()["changed"] == [{"name": name, "version": 2}]
    new_sha = hashlib.sha256(NEW.encode()).hexdigest()
    f = r.json()["request"]["files"][0]
    assert (f["version"], f["sha256"], f["path"]) == (2, new_sha, f"v2/{name}")
    assert sorted(r.json()["request"]["allowed"]) == ["submitted", "withdrawn"]

    r = guard_call(alice, "POST", f"/{request_id}/transitions", json={"to": "submitted"})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "submitted"

    released = decide(carol, request_id, "approve", "已四舍五入，可以发布。")
    assert released["state"] == "released", released["state"]
    f = released["files"][0]
    assert f["version"] == 2 and f["sha256"] == new_sha and f["release"] is not None

    # alice downloads the released file: the new version.
    link = service_call(alice, "POST", f"requests/{request_id}/files/{f['id']}/links")
    assert link.status_code == 201, link.text
    data = alice.http.get(alice.hub.service_url("exports").rsplit("/services/", 1)[0] + link.json()["url"]).content
    assert hashlib.sha256(data).hexdigest() == f["release"]["sha256"]
    assert "和平区,125" in data.decode("utf-8-sig") and "和平区,120" not in data.decode("utf-8-sig")
    shown = guard_call(alice, "GET", f"/{request_id}").json()
    assert shown["state"] == "released" and shown["files"][0]["released"] and shown["files"][0]["decision"] == "approved"


def test_new_versions_are_read_by_the_rules_of_a_first_submission(loop, decide, service_call):
    alice, carol, kernel = loop
    name = f"summary-{uuid.uuid4().hex[:6]}.csv"
    write(kernel, name, OLD)
    request_id = guard_call(alice, "POST", "", json={"paths": [name], "justification": "Counts."}).json()["id"]
    decide(carol, request_id, "request_changes", "Round the counts.")
    write(kernel, ".hidden/new.csv", NEW)
    out, err = kernel.run("import os, pathlib\np = pathlib.Path.home() / 'escape.csv'\np.unlink(missing_ok=True)\n"
                          "os.symlink('/etc/passwd', p)\nprint('ok')")
    assert err is None

    def send(files):
        return guard_call(alice, "POST", f"/{request_id}/files", json={"files": files})

    cases = [
        ([{"name": "other.csv", "path": name}], 400, "is not a file of this export request"),
        ([{"name": name, "path": ".hidden/new.csv"}], 403, "hidden files cannot be exported"),
        ([{"name": name, "path": "escape.csv"}], (403, 404), None),
        ([{"name": name, "path": "../../etc/passwd"}], (403, 404), None),
        ([{"name": name, "path": "missing.csv"}], 404, "no such file"),
        ([], 400, "'files' must be a non-empty list"),
        ("v2.csv", 400, "'files' must be a non-empty list"),
    ]
    for files, status, message in cases:
        r = send(files)
        assert r.status_code in (status if isinstance(status, tuple) else (status,)), (files, r.status_code, r.text)
        if message:
            assert message in r.json()["message"], (files, r.text)
        assert "root:" not in r.text
    # Nothing changed: still version 1, still returned.
    req = service_call(alice, "GET", f"requests/{request_id}").json()
    assert req["state"] == "returned" and [f["version"] for f in req["files"]] == [1]

    # Only the requester's own steps go through the guard; a reviewer's is refused by name.
    r = guard_call(alice, "POST", f"/{request_id}/transitions", json={"to": "approved"})
    assert r.status_code == 400 and "resubmit or withdraw" in r.json()["message"]
    r = guard_call(alice, "POST", f"/{request_id}/transitions", json={"to": "withdrawn", "reason": "不再需要。"})
    assert r.status_code == 200 and r.json()["state"] == "withdrawn" and r.json()["allowed"] == []
    # A step the review service refuses reaches the operator in the service's words, its code kept.
    r = guard_call(alice, "POST", f"/{request_id}/transitions", json={"to": "withdrawn", "reason": "again"})
    assert r.status_code == 409 and r.json()["code"] == "guard.export.review_refused", r.text
    assert r.json()["params"]["service_code"].startswith("export."), r.text
