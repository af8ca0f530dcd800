"""What the writer accepts, the canonical encoding it hashes, and the rules-as-data page."""

from __future__ import annotations

import json

import pytest

from enclave.audit import docs
from enclave.audit.actions import ACTIONS, DETAIL_KEYS, SOURCES, WHERE, actions_matching
from enclave.audit.records import MAX_DETAIL_BYTES, BadRecord, canonical, check, check_sealed, timestamp, parse_time

LOGIN = {"source": "hub", "actor": "alice", "action": "auth.login", "outcome": "ok", "detail": {"method": "native"}}


def test_the_docs_page_is_generated_from_the_actions_table():
    assert docs.DOC_PATH.read_text(encoding="utf-8") == docs.render(), "run 'enclave audit actions-doc'"
    for name, action in ACTIONS.items():
        assert f"| `{name}` | {action.records} |" in docs.render()


def test_every_action_is_well_formed():
    used = {key for action in ACTIONS.values() for key in action.keys}
    assert used == set(DETAIL_KEYS), "every detail key is explained once, and every explained key is used"
    for name, action in ACTIONS.items():
        assert action.where in WHERE, name
        assert len(set(action.keys)) == len(action.keys), name
        assert name.count(".") == 1 and name == name.lower(), name


def test_the_sources_of_issue_10_are_all_there():
    for name in ("auth.login", "auth.throttle", "auth.logout", "account.create", "account.roles_set",
                 "workspace.create", "workspace.member_add", "workspace.attach", "workspace.limits_set",
                 "workspace.guard_set", "sandbox.start", "sandbox.stop", "sandbox.cull", "kernel.execute",
                 "terminal.input", "contents.read", "contents.save", "contents.rename", "contents.delete",
                 "egress.notice", "export.request", "export.check", "export.vote", "export.decision",
                 "export.release", "export.download", "export.revoke", "data.release_published",
                 "data.release_refused"):
        assert name in ACTIONS
    assert set(SOURCES) >= {"hub", "cli", "exports", "sandbox"}
    assert actions_matching("export.*") == [n for n in ACTIONS if n.startswith("export.")]
    assert actions_matching("auth.login") == ["auth.login"] and actions_matching("nope") == []


def test_the_canonical_form_is_sorted_compact_utf8_json():
    record = check({**LOGIN, "actor": "张三", "detail": {"method": "native", "reason": "密码错误"}}).sealed(
        7, "2026-03-01T08:00:00.000001Z")
    entry = canonical(record)
    assert entry == json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert entry.startswith(b'{"action":"auth.login","actor":"\xe5\xbc\xa0\xe4\xb8\x89","detail":{"method"')
    assert "张三".encode() in entry and b"\\u" not in entry  # Chinese stays as it is
    assert json.loads(entry) == record


@pytest.mark.parametrize("text", ['quote " backslash \\ slash /', "\x00\x1f\x7f\n\t", "\u2028\u2029",
                                  "张三 😀 \ue000", "", "x" * 128])
def test_the_writers_fast_encoding_is_the_canonical_form(text):
    names = text[:128] or "a"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in names):
        names = "name"
    for record in (
        {**LOGIN, "actor": names, "detail": {"method": text, "remote_ip": "::1", "failures": -(2**53 - 1)}},
        {"source": "sandbox", "actor": names, "action": "kernel.execute", "outcome": "failed", "workspace": names,
         "sandbox": names, "detail": {"kernel": text, "code": text, "code_sha256": "", "code_truncated": True,
                                      "notebook": None, "cell": "c"}},
        {"source": "cli", "actor": names, "action": "workspace.limits_set", "workspace": names,
         "detail": {"limits": {"memory_mb": 4096, "cpus": "1.5", text: [text, {"z": 1, "a": [True, None]}]}}},
    ):
        checked = check(record)
        assert checked.entry(42, "2026-03-01T08:00:00.000001Z") == canonical(
            checked.sealed(42, "2026-03-01T08:00:00.000001Z"))


def test_time_is_fixed_width_utc_with_microseconds():
    moment = parse_time("2026-03-01T16:00:00+08:00")
    assert timestamp(moment) == "2026-03-01T08:00:00.000000Z"
    assert timestamp(parse_time("2026-03-01")) == "2026-03-01T00:00:00.000000Z"
    with pytest.raises(BadRecord, match="not an ISO 8601"):
        parse_time("yesterday")


@pytest.mark.parametrize("change, problem", [
    ({"action": "auth.signin"}, "unknown action 'auth.signin'"),
    ({"action": 3}, "action must be a string"),
    ({"source": "kernel"}, "source must be one of hub, cli, exports, sandbox"),
    ({"outcome": "maybe"}, "outcome must be one of ok, denied, failed"),
    ({"actor": ""}, "actor must be a non-empty string"),
    ({"actor": 42}, "actor must be a non-empty string"),
    ({"actor": "a" * 129}, "actor is longer than 128 characters"),
    ({"actor": "alice\nroot"}, "actor contains a control character"),
    ({"actor": "\ud800"}, "actor is not valid Unicode text"),
    ({"seq": 5}, "seq are set by the audit service"),
    ({"time": "2020-01-01T00:00:00Z"}, "time are set by the audit service"),
    ({"user": "bob"}, "unknown field(s) user"),
    ({"workspace": "demo"}, "auth.login happens outside workspaces"),
    ({"detail": []}, "detail must be a JSON object"),
    ({"detail": {}}, "auth.login needs detail key(s) method"),
    ({"detail": {"method": "native", "password": "x"}}, "does not record detail key(s) password"),
    ({"detail": {"method": "native", "failures": 1.5}}, "detail.failures is a floating-point number"),
    ({"detail": {"method": "native", "failures": 2**53}}, "detail.failures is an integer beyond"),
    ({"detail": {"method": "native", "reason": "\udc80"}}, "detail.reason is not valid Unicode text"),
    ({"detail": {"method": "native", "reason": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}}},
     "nested deeper than 8 levels"),
    ({"detail": {"method": "native", "reason": "x" * MAX_DETAIL_BYTES}}, f"the cap is {MAX_DETAIL_BYTES} bytes"),
])
def test_bad_records_are_refused_naming_the_problem(change, problem):
    with pytest.raises(BadRecord) as refused:
        check({**LOGIN, **change})
    assert problem in str(refused.value)


def test_where_an_action_happens_decides_workspace_and_sandbox():
    execution = {"source": "sandbox", "actor": "alice", "action": "kernel.execute",
                 "detail": {"kernel": "k", "code": "1", "code_sha256": "x"}}
    with pytest.raises(BadRecord, match="needs the workspace"):
        check(execution)
    with pytest.raises(BadRecord, match="needs the sandbox"):
        check({**execution, "workspace": "demo"})
    assert check({**execution, "workspace": "demo", "sandbox": "alice/demo"}).sandbox == "alice/demo"
    with pytest.raises(BadRecord, match="not done in a sandbox"):
        check({"source": "exports", "actor": "carol", "action": "export.vote", "workspace": "demo",
               "sandbox": "alice/demo", "detail": {"request_id": "r", "file": "t.csv", "decision": "approve",
                                                   "reason": "ok"}})


def test_a_sealed_record_read_back_is_checked_too():
    sealed = check(LOGIN).sealed(1, "2026-03-01T08:00:00.000000Z")
    check_sealed(sealed)
    with pytest.raises(BadRecord, match="seq must be a positive integer"):
        check_sealed({**sealed, "seq": "1"})
    with pytest.raises(BadRecord, match="time must look like"):
        check_sealed({**sealed, "time": "2026-03-01"})
