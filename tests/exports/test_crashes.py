"""Crashes: ``kill -9`` of the review service in the middle of heavy logging loses no operation it
acknowledged, and a killed hub's services make way for those of the hub started after it.

These tests run a hub of their own, since they kill its review service and the hub itself.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass

import pytest
import requests

from .conftest import Client, Intake, make_tokens, running_hub
from .test_api import SAFE_TABLE, submit

THREADS_PER_KIND = 2
# Operations acknowledged before the kill, at least: the service is killed under load.
ACKNOWLEDGED_BEFORE_KILL = 200


@pytest.fixture(scope="module")
def crashing(tmp_path_factory):
    with running_hub(tmp_path_factory.mktemp("exports-crash-home")) as hub:
        yield hub, make_tokens(hub)


@dataclass(frozen=True)
class Operation:
    kind: str  # vote, comment or submission
    actor: str
    request_id: str | None
    what: str  # the vote's reason, the comment's text, the submission's title
    status: int  # the HTTP status, 0 when the connection failed
    answer: dict | None = None

    @property
    def acknowledged(self) -> bool:
        return 200 <= self.status < 300


class Load:
    """Votes, comments and submissions from many threads at once, each keeping what it got back."""

    def __init__(self, hub, tokens) -> None:
        self.hub, self.tokens = hub, tokens
        self.done: list[Operation] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def acknowledged(self, kind: str | None = None) -> list[Operation]:
        with self._lock:
            return [op for op in self.done if op.acknowledged and kind in (None, op.kind)]

    def _run(self, send) -> None:
        n = 0
        while not self.stop.is_set():
            try:
                op = send(n)
            except requests.RequestException as exc:
                op = Operation("failed", "", None, str(exc), 0)
            with self._lock:
                self.done.append(op)
            if not op.acknowledged:
                time.sleep(0.05)  # the service is down: knock again, not flat out
            n += 1

    def votes(self, reviewer: str, files: list[tuple[str, int, str]]) -> None:
        """``reviewer`` votes again and again on ``files`` (request, file id, name), which no one
        else votes on: a vote may change until the second is in, and each change is a vote."""
        api = Client(self.tokens[reviewer], self.hub.service + "/api")

        def send(n: int) -> Operation:
            rid, fid, name = files[n % len(files)]
            reason = f"{reviewer} on {name}, vote {n}"
            r = api.post(f"/requests/{rid}/votes", {"file_id": fid, "decision": "approve", "reason": reason})
            return Operation("vote", reviewer, rid, f"{name}|{reason}", r.status_code)

        self._run(send)

    def comments(self, reviewer: str, request_id: str) -> None:
        api = Client(self.tokens[reviewer], self.hub.service + "/api")

        def send(n: int) -> Operation:
            text = f"{reviewer}'s comment {n}"
            r = api.post(f"/requests/{request_id}/comments", {"text": text, "visibility": "private"})
            return Operation("comment", reviewer, request_id, text, r.status_code,
                             r.json() if r.status_code == 201 else None)

        self._run(send)

    def submissions(self, worker: int) -> None:
        sandbox = Intake(self.tokens["olga@ws1"], self.hub.intake_socket)

        def send(n: int) -> Operation:
            title = f"load {worker}.{n}"
            r = sandbox.submit({"table.csv": SAFE_TABLE}, title=title)
            return Operation("submission", "olga", r.json()["id"] if r.status_code == 201 else None, title,
                             r.status_code)

        self._run(send)


def test_killing_the_review_service_under_load_loses_no_acknowledged_operation(crashing):
    hub, tokens = crashing

    def client(token: str) -> Client:
        return Client(token, hub.service + "/api")

    table_files = {f"t{i}.csv": SAFE_TABLE for i in range(5)}
    requests_to_vote_on = [submit(client, tokens["olga@ws1"], table_files) for _ in range(2 * THREADS_PER_KIND)]
    load = Load(hub, tokens)
    threads = []
    for i, req in enumerate(requests_to_vote_on):
        reviewer = ("rita", "rob")[i % 2]
        files = [(req["id"], f["id"], f["name"]) for f in req["files"]]
        threads.append(threading.Thread(target=load.votes, args=(reviewer, files)))
    for reviewer, req in zip(("rita", "rob"), requests_to_vote_on):
        threads.append(threading.Thread(target=load.comments, args=(reviewer, req["id"])))
    threads += [threading.Thread(target=load.submissions, args=(i,)) for i in range(THREADS_PER_KIND)]
    for t in threads:
        t.start()
    try:
        # Killed once operations of every kind are acknowledged: a submission (five files checked)
        # takes much longer than a vote, and on a loaded machine 200 votes and comments come first.
        deadline = time.monotonic() + 60
        while len(load.acknowledged()) < ACKNOWLEDGED_BEFORE_KILL or not load.acknowledged("submission"):
            assert time.monotonic() < deadline, (f"only {len(load.acknowledged())} operations in 60 s,"
                                                 f" {len(load.acknowledged('submission'))} of them submissions")
            time.sleep(0.05)
        pid = hub.service_pid()
        os.kill(pid, signal.SIGKILL)
        time.sleep(1)  # operations keep coming while it is down
    finally:
        load.stop.set()
        for t in threads:
            t.join()
    assert [op for op in load.done if not op.acknowledged], "the service was killed while operations came"
    hub.wait_for_restart(pid)

    # Every acknowledged operation is in the audit log (votes, submissions: comments are not
    # recorded there) and in the review service's own database.
    voted = {(r["actor"], r["detail"]["request_id"], f"{r['detail']['file']}|{r['detail']['reason']}")
             for r in hub.records("export.vote")}
    submitted = {r["detail"]["request_id"] for r in hub.records("export.request")}
    for op in load.acknowledged("vote"):
        assert (op.actor, op.request_id, op.what) in voted, f"acknowledged, not recorded: {op}"
    for op in load.acknowledged("submission"):
        assert op.request_id in submitted, f"acknowledged, not recorded: {op}"
        assert client(tokens["olga"]).get(f"/requests/{op.request_id}").json()["title"] == op.what
    for req in requests_to_vote_on:
        for reviewer in ("rita", "rob"):
            seen = client(tokens[reviewer]).get(f"/requests/{req['id']}").json()
            kept = {f"{e['detail']['file']}|{e['detail']['reason']}" for e in seen["history"]
                    if e["action"] == "vote" and e["actor"] == reviewer}
            comments = {c["id"] for c in seen["comments"]}
            for op in load.acknowledged():
                if op.request_id == req["id"] and op.actor == reviewer:
                    assert (op.what in kept) if op.kind == "vote" else (op.answer["id"] in comments), op
    assert len(load.acknowledged("vote")) >= 10 and load.acknowledged("submission")
    hub.verify_audit_log()


def test_a_killed_hub_s_services_make_way_for_the_next_hub_s(crashing):
    hub, tokens = crashing
    review = hub.service_pid()
    os.kill(hub.proc.pid, signal.SIGKILL)
    hub.proc.wait()

    # Orphaned, the review and audit services stop on their own, and cleanly.
    deadline = time.monotonic() + 15
    while hub.services_running():
        assert time.monotonic() < deadline, f"still running without their hub: {hub.services_running()}"
        time.sleep(0.2)
    assert "export review service stopping" in hub.log.read_text()

    # The next hub's services take the port, the intake socket and the audit log.
    hub.start()
    hub.wait_for_service(timeout=90)
    assert hub.service_pid() != review
    r = Intake(tokens["olga@ws1"], hub.intake_socket).submit({"table.csv": SAFE_TABLE}, title="after the crash")
    assert r.status_code == 201, r.text
    assert len(hub.records("export.request", r.json()["id"])) == 1
    hub.verify_audit_log()
