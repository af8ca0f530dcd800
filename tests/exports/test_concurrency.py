"""Actions on one export request arriving at the same moment, through the real API, on the review
service's SQLite database and on PostgreSQL.

Every state change of a request is serialised per request, so whatever the order the service takes
them in, afterwards: each request's history is one chain of allowed transitions (exactly one step
out of each state it was in, at most one "start review" per submission: two reviewers casting the
deciding votes at once make one decision and one release), releases exist only for requests that
are released (or revoked, with every release revoked) and can all be revoked, a reviewer has one
vote per file version, every success answered is in the history and in the audit log, and nothing
answered 5xx.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from enclave import workspaces
from enclave.exports import workflow

from .conftest import Client, make_tokens

# Each round races every pair of conflicting actions once, each on fresh export requests.
ROUNDS = 10
TABLE = b"region,count\nnorth,120\nsouth,35\neast,45\n"
# Steps recorded in the audit log as a request's decision (export.decision): those taken by hand and
# those the votes take; the start of a review and the release are not decisions, a revocation has
# records of its own.
DECISIONS = {t.action for t in workflow.TRANSITIONS.values()} - {"start review", "release", "revoke"}


def new_table(n: int) -> bytes:
    """A changed version of TABLE (a distinct one for each ``n``)."""
    return b"region,count\nnorth,120\nsouth,35\neast,%d\n" % (50 + 10 * n)


class Api:
    """The review service's JSON API as each test user calls it; every response is kept, by request."""

    def __init__(self, hub) -> None:
        self.hub = hub
        self.tokens = make_tokens(hub)
        self.base = hub.service + "/api"
        self.responses: dict[str, list[tuple[str, requests.Response]]] = defaultdict(list)
        self._lock = threading.Lock()

    def _keep(self, rid: str, kind: str, r: requests.Response) -> requests.Response:
        with self._lock:
            self.responses[rid].append((kind, r))
        return r

    def client(self, who: str) -> Client:
        # One session per call: requests' sessions are not shared between threads.
        return Client(self.tokens[who], self.base)

    def submit(self) -> dict:
        r = self.client("olga@ws1").submit({"table.csv": TABLE})
        assert r.status_code == 201, r.text
        return r.json()

    def vote(self, who: str, rid: str, fid: int, decision: str = "approve") -> requests.Response:
        body = {"file_id": fid, "decision": decision, "reason": f"{who} checked the counts"}
        return self._keep(rid, "vote", self.client(who).post(f"/requests/{rid}/votes", body))

    def move(self, who: str, rid: str, to: str) -> requests.Response:
        r = self.client(who).post(f"/requests/{rid}/transitions", {"to": to, "reason": f"{who}: concurrency test"})
        return self._keep(rid, "transition", r)

    def new_version(self, rid: str, n: int) -> requests.Response:
        r = self.client("olga@ws1").submit({"table.csv": new_table(n)}, path=f"/requests/{rid}/files")
        return self._keep(rid, "new version", r)

    def view(self, rid: str) -> dict:
        r = self.client("adam").get(f"/requests/{rid}")
        assert r.status_code == 200, r.text
        return r.json()

    @staticmethod
    def at_once(*actions) -> list[requests.Response]:
        """Run ``actions`` in threads released together by a barrier; their responses, in order."""
        barrier = threading.Barrier(len(actions))

        def run(action):
            barrier.wait()
            return action()

        with ThreadPoolExecutor(len(actions)) as pool:
            return list(pool.map(run, actions))

    # -- export requests in a given state, made one step at a time --

    def submitted(self) -> tuple[str, int]:
        req = self.submit()
        return req["id"], req["files"][0]["id"]

    def voted(self, votes: dict[str, str]) -> tuple[str, int]:
        """A request with the ``votes`` (reviewer: decision) on its one file."""
        rid, fid = self.submitted()
        for who, decision in votes.items():
            assert self.vote(who, rid, fid, decision).status_code == 201
        return rid, fid

    def released(self) -> str:
        rid, _ = self.voted({"rita": "approve", "rob": "approve"})
        assert self.view(rid)["state"] == "released"
        return rid

    def conflicted(self) -> str:
        rid, _ = self.voted({"rita": "approve", "rob": "reject"})
        assert self.view(rid)["state"] == "in_review"
        return rid

    def returned(self) -> str:
        rid, _ = self.voted({"rita": "request_changes", "rob": "request_changes"})
        assert self.view(rid)["state"] == "returned"
        return rid


@pytest.fixture(params=["sqlite", "postgresql"], scope="module")
def api(request) -> Api:
    """The API of a hub whose review service keeps its database in SQLite, or in PostgreSQL."""
    return Api(request.getfixturevalue({"sqlite": "hub", "postgresql": "pg_hub"}[request.param]))


def race_every_conflicting_pair(api: Api) -> None:
    """One round: each race on its own fresh export request."""
    # The two deciding votes at once, each completing one of the two files: one approval, one release.
    req = api.client("olga@ws1").submit({"a.csv": TABLE, "b.csv": new_table(0)}).json()
    rid, (a, b) = req["id"], [f["id"] for f in req["files"]]
    assert api.vote("rita", rid, a).status_code == api.vote("rob", rid, b).status_code == 201
    api.at_once(lambda: api.vote("rob", rid, a), lambda: api.vote("rita", rid, b))
    # The vote that approves (and releases), withdrawal, and revocation (which needs the release).
    rid, fid = api.voted({"rita": "approve"})
    api.at_once(lambda: api.vote("rob", rid, fid), lambda: api.move("olga", rid, "withdrawn"),
                lambda: api.move("adam", rid, "revoked"))
    # Two revocations of one release.
    rid = api.released()
    api.at_once(lambda: api.move("adam", rid, "revoked"), lambda: api.move("adam", rid, "revoked"))
    # The vote that rejects, a vote changed at the same time, and withdrawal.
    rid, fid = api.voted({"rita": "reject"})
    api.at_once(lambda: api.vote("rob", rid, fid, "reject"), lambda: api.vote("rita", rid, fid, "approve"),
                lambda: api.move("olga", rid, "withdrawn"))
    # The vote that returns the request, and withdrawal.
    rid, fid = api.voted({"rita": "request_changes"})
    api.at_once(lambda: api.vote("rob", rid, fid, "request_changes"), lambda: api.move("olga", rid, "withdrawn"))
    # A conflict: two reviewers decide differently at once, and the requester withdraws.
    rid = api.conflicted()
    api.at_once(lambda: api.move("rita", rid, "rejected"), lambda: api.move("rob", rid, "returned"),
                lambda: api.move("olga", rid, "withdrawn"))
    # The first vote (which starts the review) and withdrawal.
    rid, fid = api.submitted()
    api.at_once(lambda: api.vote("rita", rid, fid), lambda: api.move("olga", rid, "withdrawn"))
    # First votes of three reviewers, where the policy takes two: the second decides.
    rid, fid = api.submitted()
    api.at_once(*(lambda who=who: api.vote(who, rid, fid) for who in ("rita", "rob", "dual")))
    # Twelve votes of one reviewer on one file.
    rid, fid = api.submitted()
    api.at_once(*(lambda: api.vote("rita", rid, fid) for _ in range(12)))
    # A new version, resubmission and withdrawal of a returned request.
    rid = api.returned()
    api.at_once(lambda: api.new_version(rid, 1), lambda: api.move("olga@ws1", rid, "submitted"),
                lambda: api.move("olga", rid, "withdrawn"))
    # Two new versions of the same file.
    rid = api.returned()
    api.at_once(lambda: api.new_version(rid, 2), lambda: api.new_version(rid, 3))


def race_first_policy_changes(api: Api, n: int) -> None:
    """Two first changes of a workspace's export policy, by two admins at once (through the service
    layer every way in shares): both are taken, one after the other, with versions 1 and 2."""
    ws = f"policy-race-{n}"
    settings = api.hub.settings
    workspaces.create(settings, ws)
    views = api.at_once(lambda: workspaces.set_export_policy(settings, ws, {"approvals_required": 1}),
                        lambda: workspaces.set_export_policy(settings, ws, {"min_cell_count": 20}))
    assert sorted(v.export_policy_version for v in views) == [1, 2]
    assert workspaces.get(settings, ws).export_policy == {"approvals_required": 1, "min_cell_count": 20}


def check_invariants(api: Api, rid: str, audit: dict[str, Counter]) -> None:
    req = api.view(rid)
    answered = api.responses[rid]
    history = req["history"]

    # One chain of allowed transitions from submission to the request's state: the system's steps
    # named as the system's, every other by the person who took it.
    state = None
    for e in history:
        if e["from"] == e["to"]:
            continue  # votes, views, comments, new files: no change of state
        assert e["from"] == state, f"{e['action']} taken from {e['from']}, the request was {state}: {history}"
        if state is not None:
            t = (workflow.TRANSITIONS.get((state, e["to"], workflow.SYSTEM)) if e["actor"] == workflow.SYSTEM
                 else workflow.by_hand(state, e["to"]))
            assert t is not None and t.action == e["action"], e
        state = e["to"]
    assert state == req["state"]
    taken = [e for e in history if e["from"] != e["to"]]
    steps = Counter(e["action"] for e in taken)
    assert steps["start review"] <= steps["submit"] + steps["resubmit"]

    # Every success answered is in the history, and nothing else is.
    ok = Counter(kind for kind, r in answered if r.status_code in (200, 201))
    assert ok["transition"] == sum(e["actor"] != workflow.SYSTEM and e["action"] != "submit" for e in taken)
    assert ok["vote"] == sum(e["action"] == "vote" for e in history)

    # Releases only for released (or revoked) requests; all revoked once the request is.
    releases = [f["release"] for f in req["files"] if f["release"] is not None]
    if req["state"] == workflow.RELEASED:
        assert releases and not any(r["revoked"] for r in releases)
        assert all(f["decision"] == workflow.FILE_APPROVED for f in req["files"] if f["release"])
    elif req["state"] == workflow.REVOKED:
        assert releases and all(r["revoked"] for r in releases)
    else:
        assert not releases, f"a {req['state']} request has releases"

    # One vote per reviewer per file version, and no more votes than the policy takes.
    for f in req["files"]:
        reviewers = [v["reviewer"] for v in f["votes"]]
        assert len(reviewers) == len(set(reviewers)) <= req["approvals_required"]
    # Versions follow one another: each new version is one update.
    changed = Counter(c["name"] for e in history if e["action"] == "update files" for c in e["detail"]["changed"])
    assert all(f["version"] == 1 + changed[f["name"]] for f in req["files"])

    # The audit log has a record of each decision, vote, release and revocation, and of nothing else.
    assert audit[rid]["export.decision"] == sum(e["action"] in DECISIONS for e in taken)
    assert audit[rid]["export.vote"] == ok["vote"]
    assert audit[rid]["export.release"] == len(releases)
    assert audit[rid]["export.revoke"] == sum(r["revoked"] for r in releases)


def test_conflicting_actions_at_once_keep_every_request_consistent(api):
    for n in range(ROUNDS):
        race_every_conflicting_pair(api)
        race_first_policy_changes(api, n)

    # Every release can be revoked.
    for rid in list(api.responses):
        if api.view(rid)["state"] == workflow.RELEASED:
            r = api.move("adam", rid, "revoked")
            assert r.status_code == 200, r.text

    failed = [(kind, r.status_code, r.text) for answered in api.responses.values() for kind, r in answered
              if r.status_code >= 500]
    assert not failed, f"{len(failed)} actions answered 5xx: {failed}"

    audit: dict[str, Counter] = defaultdict(Counter)
    for record in api.hub.records("export.*"):
        audit[record["detail"].get("request_id")][record["action"]] += 1
    for rid in api.responses:
        check_invariants(api, rid, audit)
    api.hub.verify_audit_log()
