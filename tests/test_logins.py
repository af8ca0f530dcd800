"""Failed logins slow down the client that makes them, never the account's owner elsewhere.

A hub of its own, through its real proxy: a client is slowed down after 3 failures in a row for an
account (``accounts.allowed_failed_logins``), its waits capped at 100 s (``accounts.lockout_seconds``).
Clients are told apart by their real address: the test process connects from several loopback
addresses (127.0.0.0/8 is all loopback), which the proxy reports to the hub. Time passes by moving
the stored failures into the past, never by waiting.
"""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from conftest import PASSWORD, seed
from enclave_testing import cookie_value, processes_of_uid

from enclave import accounts, db
from enclave.settings import Settings

ALLOWED = 3
CAP_SECONDS = 100


@pytest.fixture(scope="module")
def hub(hub_factory):
    hub = hub_factory("logins", ENCLAVE_ACCOUNTS__ALLOWED_FAILED_LOGINS=str(ALLOWED),
                      ENCLAVE_ACCOUNTS__LOCKOUT_SECONDS=str(CAP_SECONDS))
    seed(hub)
    for name in ("dora", "gina", "hugo", "ivan"):
        accounts.add_user(Settings(home=hub.home), name, ["operator"], PASSWORD)
    hub.start()
    return hub


class FromAddress(requests.adapters.HTTPAdapter):
    """Connections made from one local address, so that the proxy sees a client of its own."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def log_in(hub, username: str, password: str, client: str, headers: dict | None = None) -> bool:
    """One attempt on the login page from ``client``, as a browser there makes it (sending
    ``headers`` with every request): logged in?"""
    s = requests.Session()
    s.trust_env = False
    s.mount("http://", FromAddress(client))
    s.headers.update(headers or {})
    s.get(hub.url + "/hub/login")
    r = s.post(hub.url + "/hub/login", allow_redirects=False, data={
        "username": username, "password": password, "_xsrf": cookie_value(s, hub.url + "/hub/login", "_xsrf")})
    assert r.status_code in (302, 403), (r.status_code, r.text[:500])
    return r.status_code == 302 and r.headers["Location"].endswith("/hub/home")


def fail(hub, username: str, client: str, times: int) -> None:
    for _ in range(times):
        assert not log_in(hub, username, "not-the-password", client)


def let_time_pass(hub, seconds: float) -> None:
    """As if ``seconds`` had passed since every failed login on record."""
    with db.transaction(Settings(home=hub.home).enclave_db_url) as s:
        for failure in s.query(db.LoginFailure):
            failure.failed_at -= timedelta(seconds=seconds)


def denials(hub, username: str) -> list[dict]:
    return [r["detail"] for r in hub.audit_records(action="auth.login", user=username) if r["outcome"] == "denied"]


def throttles(hub, username: str) -> list[dict]:
    return [r["detail"] for r in hub.audit_records(action="auth.throttle", user=username)]


def test_a_stranger_s_failures_do_not_keep_the_owner_out(hub):
    # The finding: five anonymous failures as carol locked her out, everywhere, for 600 s.
    fail(hub, "carol", "127.0.0.2", 5)
    assert log_in(hub, "carol", PASSWORD, "127.0.0.3")
    # The stranger cannot even try a guess now: the right password from there is not checked.
    assert not log_in(hub, "carol", PASSWORD, "127.0.0.2")
    # Three failures, then three attempts refused unchecked (no guess, no further failure).
    refused = denials(hub, "carol")
    assert [d["reason"].split(":")[0][:15] for d in refused] == ["wrong password"] * 3 + ["throttled until"] * 3
    assert [d["failures"] for d in refused] == [1, 2, 3, 3, 3, 3]
    assert all(d["remote_ip"] == "127.0.0.2" for d in refused)
    logged_in = [r["detail"] for r in hub.audit_records(action="auth.login", user="carol") if r["outcome"] == "ok"]
    assert [d["remote_ip"] for d in logged_in] == ["127.0.0.3"]


def test_the_failing_client_waits_longer_after_each_failure(hub):
    fail(hub, "bob", "127.0.0.4", ALLOWED)
    assert [(t["scope"], t["failures"], t["delay_seconds"]) for t in throttles(hub, "bob")] == [("client", 3, 30)]
    assert not log_in(hub, "bob", PASSWORD, "127.0.0.4")  # refused unchecked while it waits
    assert denials(hub, "bob")[-1]["failures"] == ALLOWED  # a refusal is no failure
    for waited in (30, 60, 100):
        let_time_pass(hub, waited)
        fail(hub, "bob", "127.0.0.4", 1)
    assert [t["delay_seconds"] for t in throttles(hub, "bob")] == [30, 60, 100, 100]  # doubling, capped
    last = throttles(hub, "bob")[-1]
    assert last == {"user": "bob", "scope": "client", "remote_ip": "127.0.0.4", "failures": 6,
                    "throttled_until": last["throttled_until"], "delay_seconds": 100}
    # The state is in Enclave's database: a restarted hub still refuses.
    hub.restart()
    assert not log_in(hub, "bob", PASSWORD, "127.0.0.4")
    assert denials(hub, "bob")[-1]["reason"] == f"throttled until {last['throttled_until']}: repeated failed" \
                                                 " logins from this client"
    let_time_pass(hub, CAP_SECONDS)
    assert log_in(hub, "bob", PASSWORD, "127.0.0.4")
    # Logged in, the client starts afresh: its next failure is not slowed down.
    fail(hub, "bob", "127.0.0.4", 1)
    assert len(throttles(hub, "bob")) == 4 and denials(hub, "bob")[-1]["failures"] == 1


def test_a_forged_forwarded_address_gives_no_fresh_start(hub):
    fail(hub, "erin", "127.0.0.5", ALLOWED)
    for forged in ({"X-Forwarded-For": "10.9.8.7"}, {"X-Forwarded-For": "10.9.8.7, 10.9.8.6"},
                   {"X-Real-Ip": "10.9.8.7"}, {"X-Forwarded-For": "10.9.8.7", "X-Real-Ip": "10.9.8.6"}):
        assert not log_in(hub, "erin", PASSWORD, "127.0.0.5", headers=forged), forged
    refused = denials(hub, "erin")
    assert len(refused) == ALLOWED + 4
    assert {d["remote_ip"] for d in refused} == {"127.0.0.5"}
    assert all(d["reason"].startswith("throttled until") for d in refused[ALLOWED:])


# Logins sent straight to the hub's unix socket from inside a sandbox's server, each naming another
# address in X-Forwarded-For: argv = socket, user, then "address:password" per attempt; prints the statuses.
FROM_THE_SERVER = r"""
import http.client, json, socket, sys
from http.cookies import SimpleCookie
from urllib.parse import urlencode

class HubSocket(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sys.argv[1])

statuses = []
for attempt in sys.argv[3:]:
    address, password = attempt.split(":", 1)
    hub = HubSocket("localhost")
    hub.request("GET", "/hub/login", headers={"X-Forwarded-For": address})
    page = hub.getresponse()
    page.read()
    cookies = SimpleCookie()
    for value in page.headers.get_all("Set-Cookie"):
        cookies.load(value)
    xsrf = cookies["_xsrf"].value
    hub.request("POST", "/hub/login", urlencode({"username": sys.argv[2], "password": password, "_xsrf": xsrf}),
                {"Content-Type": "application/x-www-form-urlencoded", "Cookie": f"_xsrf={xsrf}",
                 "X-Forwarded-For": address})
    answer = hub.getresponse()
    answer.read()
    statuses.append(answer.status)
print(json.dumps(statuses))
"""


def test_a_sandbox_s_server_is_one_client_whatever_address_it_names(hub):
    """The hub's unix socket is bound into every sandbox's server (for the hub's API). A server taken
    over, sending logins there with a new X-Forwarded-For each time, gets no fresh start: it is one
    client, named by its uid."""
    alice = hub.login("alice", PASSWORD)
    assert alice.start("alpha").status_code == 200
    spec = json.loads((hub.home / "run" / "sandboxes" / "alice" / "alpha" / "spec.json").read_text())
    uid = spec["server"]["identity"]["uid"]
    server_pid = next(pid for pid in processes_of_uid(uid)
                      if b"enclave_singleuser" in Path(f"/proc/{pid}/cmdline").read_bytes())
    in_the_server = ["nsenter", f"--target={server_pid}", "--mount", "--", "setpriv", f"--reuid={uid}",
                     f"--regid={uid}", "--clear-groups", "/opt/enclave/env/bin/python", "-I", "-c"]
    attempts = [f"10.0.0.{i}:not-the-password" for i in range(1, ALLOWED + 1)] + [f"10.0.0.{ALLOWED + 1}:{PASSWORD}"]
    run = subprocess.run([*in_the_server, FROM_THE_SERVER, f"/run/enclave/hub/{Settings(home=hub.home).hub_socket.name}",
                          "ivan", *attempts], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    # Failures, then the right password from a "new" address: still the same client, throttled.
    assert json.loads(run.stdout) == [403] * (ALLOWED + 1)
    refused = denials(hub, "ivan")
    assert {d["remote_ip"] for d in refused} == {f"uid:{uid}"}
    assert refused[-1]["reason"].startswith("throttled until")
    assert log_in(hub, "ivan", PASSWORD, "127.0.0.9")  # ivan himself, from his own address


def test_an_account_s_failures_from_many_clients_have_an_hourly_ceiling(hub):
    # A distributed guesser: 15 addresses, each staying under the per-client allowance, 30 failures
    # for dora in all (the ceiling).
    guessers = [f"127.0.1.{i}" for i in range(1, 16)]
    for client in guessers:
        fail(hub, "dora", client, ALLOWED - 1)
    ceiling = throttles(hub, "dora")
    assert [(t["scope"], t["failures"], t["remote_ip"]) for t in ceiling] == [("account", 30, guessers[-1])]
    # Every client that has failed is refused unchecked, the right password too ...
    assert not log_in(hub, "dora", PASSWORD, guessers[0])
    assert denials(hub, "dora")[-1]["reason"].startswith(f"throttled until {ceiling[0]['throttled_until']}: 30 failed")
    # ... a fresh address gets one guess, then it has failed too ...
    fail(hub, "dora", "127.0.2.1", 1)
    assert not log_in(hub, "dora", PASSWORD, "127.0.2.1")
    # ... and the owner, on an address that has not failed, gets in.
    assert log_in(hub, "dora", PASSWORD, "127.0.2.2")
    let_time_pass(hub, 3600)
    assert log_in(hub, "dora", PASSWORD, guessers[0])


def test_an_admin_lists_and_clears_throttles(hub):
    fail(hub, "gina", "127.0.0.7", ALLOWED)
    let_time_pass(hub, 30)
    fail(hub, "gina", "127.0.0.7", 1)
    fail(hub, "gina", "127.0.0.6", ALLOWED)
    fail(hub, "hugo", "127.0.0.6", 1)
    r = hub.enclave("user", "throttles")
    assert r.returncode == 0, r.stderr
    listed = {tuple(line.split()[:3]): line.split()[3] for line in r.stdout.splitlines()[1:]}
    assert set(listed) >= {("gina", "127.0.0.6", "3"), ("gina", "127.0.0.7", "4"), ("hugo", "127.0.0.6", "1")}
    assert listed[("hugo", "127.0.0.6", "1")] == "-"  # failed, not slowed down
    until = {t["remote_ip"]: t["throttled_until"] for t in throttles(hub, "gina")}
    assert listed[("gina", "127.0.0.7", "4")] == until["127.0.0.7"][:19] + "+00:00"

    r = hub.enclave("user", "clear-throttle", "gina", "--client", "127.0.0.6")
    assert r.returncode == 0 and "forgot 3 failed login(s) of gina from 127.0.0.6" in r.stdout, r.stdout + r.stderr
    assert log_in(hub, "gina", PASSWORD, "127.0.0.6")
    assert not log_in(hub, "gina", PASSWORD, "127.0.0.7")
    r = hub.enclave("user", "clear-throttle", "gina")
    assert r.returncode == 0 and "forgot 4 failed login(s) of gina" in r.stdout, r.stdout + r.stderr
    assert log_in(hub, "gina", PASSWORD, "127.0.0.7")
    cleared = hub.audit_records(action="account.throttle_cleared")
    assert [(r["source"], r["actor"], r["detail"]) for r in cleared] == [
        ("cli", "root", {"user": "gina", "failures": 3, "client": "127.0.0.6"}),
        ("cli", "root", {"user": "gina", "failures": 4})]
    # Nothing left to clear: nothing changes, nothing is recorded.
    r = hub.enclave("user", "clear-throttle", "gina")
    assert r.returncode == 0 and "forgot 0" in r.stdout
    assert len(hub.audit_records(action="account.throttle_cleared")) == 2
    r = hub.enclave("user", "clear-throttle", "nobody")
    assert r.returncode != 0 and "no account named 'nobody'" in r.stderr
    r = hub.enclave("user", "throttles")
    assert [line.split()[0] for line in r.stdout.splitlines()].count("gina") == 0 and "hugo" in r.stdout
