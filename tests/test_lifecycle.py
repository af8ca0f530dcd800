"""The lifecycle of workspaces and accounts, end to end on running sandboxes (issue #15, part 3).

One hub, enforcing every second and keeping archived homes for 0 days. An admin changes state as
the ``enclave`` command does (the service layer, recorded in the audit log); the hub notices on its
own: it freezes at expiry, stops sandboxes, ends sessions, revokes tokens and deletes archived
homes, each with its audit record, and refuses what may no longer start.

    alpha: operators alice, bob; reviewer carol     beta: operator erin
    gamma: operators dave, frank
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from conftest import PASSWORD, seed
from enclave_testing import free_port, wait_for
from jupyterhub import orm
from jupyterhub.scopes import define_custom_scopes

from enclave import accounts, db, rbac, workspaces
from enclave.audit.client import AuditClient
from enclave.exports.service import Actor, ExportService, Refused, Upload
from enclave.settings import Settings

ADMIN = "root-admin"


@pytest.fixture(scope="module")
def hub(hub_factory):
    hub = hub_factory("lifecycle", ENCLAVE_SANDBOX__IDLE_TIMEOUT="0",
                      ENCLAVE_WORKSPACES__LIFECYCLE_INTERVAL_SECONDS="1",
                      ENCLAVE_WORKSPACES__ARCHIVE_RETENTION_DAYS="0",
                      ENCLAVE_PROVISIONING__PORT=str(free_port()))
    seed(hub)
    settings = Settings(home=hub.home)
    workspaces.create(settings, "gamma")
    for name in ("dave", "frank"):
        accounts.add_user(settings, name, ["operator"], PASSWORD)
        workspaces.add_member(settings, "gamma", name, "operator")
    hub.start()
    hub.settings = settings
    return hub


@pytest.fixture(scope="module")
def record(hub):
    """The audit recorder the ``enclave`` command hands the service layer, as the admin's."""
    client = AuditClient(hub.settings)

    def append(action, workspace=None, detail=None):
        client.append("cli", ADMIN, action, workspace=workspace, detail=detail)

    yield append
    client.close()


@pytest.fixture(scope="module")
def admin(hub):
    return hub.login(ADMIN, PASSWORD)


def servers(admin, user: str) -> dict:
    r = admin.hub_api("GET", f"/users/{user}")
    assert r.status_code == 200, r.text
    return r.json()["servers"]


def wait_stopped(admin, user: str, workspace: str) -> None:
    wait_for(lambda: workspace not in servers(admin, user), 60, f"{user}/{workspace} to be stopped")


def stop_record(hub, user: str, workspace: str) -> dict:
    """The lifecycle's ``sandbox.stop`` record of ``user``'s sandbox of ``workspace`` (the last one)."""
    found = [r for r in hub.audit_records(workspace=workspace, action="sandbox.stop")
             if r["sandbox"].startswith(f"{user}/{workspace}/")]
    assert found, f"no sandbox.stop of {user}/{workspace}"
    return found[-1]


def start_page(session, workspace: str) -> tuple[int, str]:
    """The spawn page's status and text (UTF-8, as its <meta charset> says)."""
    r = session.http.get(f"{session.hub.url}/hub/spawn/{session.username}/{workspace}")
    return r.status_code, r.content.decode()


def test_freeze_stops_the_workspace_and_refuses_starts_and_export_requests(hub, admin, record):
    alice = hub.login("alice", PASSWORD)
    assert alice.start("alpha").status_code == 200
    reason = "安全事件调查 (security incident)"
    workspaces.freeze(hub.settings, "alpha", reason, record)

    wait_stopped(admin, "alice", "alpha")
    stop = stop_record(hub, "alice", "alpha")
    assert stop["source"] == "hub" and stop["actor"] == "system", stop
    assert stop["detail"]["reason"] == f"workspace 'alpha' is frozen: {reason}", stop

    status, page = start_page(alice, "alpha")
    assert status == 403 and f"is frozen ({reason}): no sandbox starts in it until an administrator" in page, page
    # Nor through the REST API, past the spawn page: the spawner refuses too.
    api = alice.hub_api("POST", "/users/alice/servers/alpha")
    assert api.status_code == 403 and f"is frozen ({reason})" in api.json()["message"], api.text
    home = alice.http.get(f"{hub.url}/hub/home").content.decode()
    assert f'id="state-alpha">frozen: {reason}<' in home and 'id="start-alpha"' not in home, home

    # An export request made with a sandbox's token of the workspace (the server's own token is gone
    # with it; the review service refuses all the same).
    exports = ExportService(hub.settings)
    try:
        with pytest.raises(Refused, match="'alpha' is frozen .*no new export requests"):
            exports.submit(Actor("alice", frozenset({"custom:exports:request!user=alice"}), workspace="alpha"),
                           "counts", "district counts", [Upload("t.csv", b"district,n\nHeping,12\n")])
    finally:
        exports.close()

    workspaces.unfreeze(hub.settings, "alpha", record)
    assert alice.start("alpha").status_code == 200


def test_expiry_freezes_the_workspace_and_stops_its_sandboxes(hub, admin, record):
    assert servers(admin, "alice")["alpha"]["ready"]
    expired = db.utcnow().replace(microsecond=0) - timedelta(minutes=1)
    workspaces.set_expiry(hub.settings, "alpha", expired, record)

    wait_for(lambda: workspaces.get(hub.settings, "alpha").state == "frozen", 60, "alpha to be frozen at its expiry")
    freeze = hub.audit_records(workspace="alpha", action="workspace.freeze")[-1]
    assert freeze["actor"] == "system" and freeze["source"] == "hub", freeze
    assert freeze["detail"] == {"before": "active", "reason": f"expired on {expired.isoformat()}"}, freeze
    wait_stopped(admin, "alice", "alpha")
    assert stop_record(hub, "alice", "alpha")["detail"]["reason"] == f"workspace 'alpha' is frozen: expired on {expired.isoformat()}"

    workspaces.set_expiry(hub.settings, "alpha", None, record)
    workspaces.unfreeze(hub.settings, "alpha", record)


def test_removing_an_operator_stops_their_sandbox(hub, admin, record):
    bob = hub.login("bob", PASSWORD)
    assert bob.start("alpha").status_code == 200
    workspaces.remove_member(hub.settings, "alpha", "bob", "operator", record)

    wait_stopped(admin, "bob", "alpha")
    stop = stop_record(hub, "bob", "alpha")
    assert stop["actor"] == "system" and stop["detail"]["reason"] == "'bob' is no longer an operator of workspace 'alpha'"


def mint_token(hub, user: str, scopes: tuple[str, ...] = ("read:users!user",)) -> str:
    """An API token of ``user``, made in the hub's database as ``jupyterhub token`` makes one (with
    Enclave's custom scopes known, as the hub knows them: the token's scopes are checked against its
    owner's roles)."""
    define_custom_scopes(rbac.CUSTOM_SCOPES)
    session = orm.new_session_factory(hub.settings.hub_db_url)()
    try:
        token = orm.User.find(session, user).new_api_token(note="a script", scopes=list(scopes))
        session.commit()
        return token
    finally:
        session.close()


def token_works(hub, token: str) -> bool:
    r = requests.get(f"{hub.url}/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=30)
    assert r.status_code in (200, 403), r.text
    return r.status_code == 200


def review_service_takes(hub, token: str) -> bool:
    """Whether the review service still takes ``token`` (it asks the hub again within seconds)."""
    r = requests.get(f"{hub.service_url('exports')}/api/requests?mine=1", headers={"Authorization": f"token {token}"},
                     timeout=30)
    assert r.status_code in (200, 403), r.text
    return r.status_code == 200


def logged_out(hub, session) -> bool:
    r = session.http.get(f"{hub.url}/hub/home", allow_redirects=False)
    return r.status_code == 302 and "/hub/login" in r.headers["Location"]


def test_disabling_an_account_stops_its_sandboxes_ends_its_sessions_and_revokes_its_tokens(hub, admin, record):
    dave = hub.login("dave", PASSWORD)
    assert dave.start("gamma").status_code == 200
    token = mint_token(hub, "dave")
    service_token = mint_token(hub, "dave", (f"access:services!service={rbac.EXPORTS_SERVICE}", "custom:exports:request!user"))
    assert token_works(hub, token) and not logged_out(hub, dave) and review_service_takes(hub, service_token)
    reason = "离职 (left the project)"
    accounts.disable(hub.settings, "dave", reason, record)

    wait_stopped(admin, "dave", "gamma")
    assert stop_record(hub, "dave", "gamma")["detail"]["reason"] == f"account 'dave' is disabled: {reason}"
    wait_for(lambda: logged_out(hub, dave), 60, "dave's browser session to end")
    assert not token_works(hub, token)
    # The services forget a token's owner within seconds (enclave.hub_oauth), not JupyterHub's five minutes.
    wait_for(lambda: not review_service_takes(hub, service_token), 30, "the review service to refuse dave's token")

    with pytest.raises(AssertionError, match="login as dave failed"):
        hub.login("dave", PASSWORD)
    denied = hub.audit_records(user="dave", action="auth.login")[-1]
    assert denied["outcome"] == "denied" and denied["detail"]["reason"] == "account disabled", denied

    accounts.enable(hub.settings, "dave", record)
    dave = hub.login("dave", PASSWORD)
    assert not logged_out(hub, dave)


def test_an_expired_account_is_treated_as_disabled(hub, admin, record):
    frank = hub.login("frank", PASSWORD)
    assert frank.start("gamma").status_code == 200
    expired = db.utcnow().replace(microsecond=0) - timedelta(minutes=1)
    accounts.set_expiry(hub.settings, "frank", expired, record)

    wait_stopped(admin, "frank", "gamma")
    assert stop_record(hub, "frank", "gamma")["detail"]["reason"] == f"account 'frank' expired on {expired.isoformat()}"
    wait_for(lambda: logged_out(hub, frank), 60, "frank's browser session to end")
    expire = wait_for(lambda: hub.audit_records(action="account.expire"), 60, "account.expire")
    assert [(r["actor"], r["detail"]) for r in expire] == [("system", {"user": "frank", "expires_at": expired.isoformat()})]
    with pytest.raises(AssertionError, match="login as frank failed"):
        hub.login("frank", PASSWORD)
    assert hub.audit_records(user="frank", action="auth.login")[-1]["detail"]["reason"] == "account expired"


def test_archiving_stops_refuses_and_deletes_the_homes_after_retention(hub, admin, record):
    erin = hub.login("erin", PASSWORD)
    assert erin.start("beta").status_code == 200
    home, image = hub.settings.operator_home("erin", "beta")
    assert image.exists()
    workspaces.archive(hub.settings, "beta", "项目结束 (project ended)", record)

    wait_stopped(admin, "erin", "beta")
    assert stop_record(hub, "erin", "beta")["detail"]["reason"] == "workspace 'beta' is archived: 项目结束 (project ended)"
    status, page = start_page(erin, "beta")
    assert status == 403 and "is archived (项目结束 (project ended)): no sandbox starts in it again" in page, page
    exports = ExportService(hub.settings)
    try:
        with pytest.raises(Refused, match="'beta' is archived .*no new export requests"):
            exports.submit(Actor("erin", frozenset({"custom:exports:request!user=erin"}), workspace="beta"),
                           "counts", "counts", [Upload("t.csv", b"id,n\nx,12\n")])
    finally:
        exports.close()
    # Retention of 0 days: the homes go at once, recorded.
    wait_for(lambda: not image.exists() and not home.exists(), 60, "erin's home in beta to be deleted")
    deleted = hub.audit_records(workspace="beta", action="workspace.homes_delete")
    assert len(deleted) == 1 and deleted[0]["actor"] == "system" and deleted[0]["detail"]["homes"] == ["erin"], deleted

    # The lifecycle ran many times since frank expired: one account.expire all the same.
    assert len(hub.audit_records(action="account.expire")) == 1
