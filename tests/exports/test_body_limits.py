"""Request bodies: nobody gets the review service to hold a body before it knows who they are.

Upload routes authenticate and authorise from the request's headers, then accept a body up to
their limit; every other route accepts 64 KiB. Attacks go through both listeners of the real
service: the proxy (anyone who reaches the hub) and the intake socket (any sandbox).
"""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests

from enclave.exports.app import max_body_bytes

MIB = 2**20
FILLER = b"x" * MIB
FLOOD_BYTES = 64 * MIB
PARALLEL = 8
NO_REQUEST = "0" * 32
ROUTES = {
    "submit": "api/requests",
    "checks": "api/checks",
    "new file versions": f"api/requests/{NO_REQUEST}/files",
    "transition (JSON)": f"api/requests/{NO_REQUEST}/transitions",
}


def connect(hub, listener: str) -> tuple[socket.socket, str]:
    """A connection to the service through ``listener`` and the path prefix of its routes there."""
    if listener == "intake":
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(hub.intake_socket))
        return sock, "/"
    url = urlsplit(hub.service)
    return socket.create_connection((url.hostname, url.port)), url.path + "/"


def post(hub, listener: str, route: str, size: int, headers: dict[str, str | None] | None = None,
         send_body: bool = True) -> tuple[int | str, bytes]:
    """POST a well-formed ``size``-byte body (a JSON object, or one file's part) as a plain client would.

    Without ``send_body``, only the headers go, with ``Expect: 100-continue``, as a careful client
    asks before sending a large body (the proxy forwards no request before its body, or that header).
    Returns the final status (or "closed" if none came) and the answer's body. A header given as
    None is left out.
    """
    if route == ROUTES["transition (JSON)"]:
        content_type, head, tail = "application/json", b'{"to": "', b'"}'
    else:
        content_type, tail = "multipart/form-data; boundary=b", b"\r\n--b--\r\n"
        head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\n'
    fields = {"Host": "exports", "Connection": "close", "Content-Type": content_type,
              "Content-Length": str(size), **({} if send_body else {"Expect": "100-continue"}), **(headers or {})}
    sock, prefix = connect(hub, listener)
    with sock:
        sock.settimeout(30)
        sock.sendall(f"POST {prefix}{route} HTTP/1.1\r\n".encode()
                     + "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v is not None).encode() + b"\r\n")
        filler = size - len(head) - len(tail)
        try:
            if send_body:
                sock.sendall(head)
                for _ in range(filler // MIB):
                    sock.sendall(FILLER)
                sock.sendall(FILLER[: filler % MIB] + tail)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the service stopped reading: it closed the connection after answering (or without)
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except ConnectionResetError:
            pass
    while answer.startswith(b"HTTP/1.1 100 "):
        answer = answer.partition(b"\r\n\r\n")[2]
    if not answer.startswith(b"HTTP/1.1 "):
        return "closed", b""
    status_line, _, body = answer.partition(b"\r\n\r\n")
    return int(status_line.split(b" ", 2)[1]), body


def memory_kib(pid: int) -> dict[str, int]:
    status = open(f"/proc/{pid}/status").read().splitlines()
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in status) if k in ("VmRSS", "VmHWM")}


@pytest.mark.parametrize("listener", ["proxy", "intake"])
@pytest.mark.parametrize("route", ROUTES)
def test_anonymous_64_mib_posts_are_refused_without_reading_them(hub, listener, route):
    pid = hub.service_pid()
    with open(f"/proc/{pid}/clear_refs", "w") as fh:
        fh.write("5")  # restart the peak (VmHWM) from the present resident size
    before = memory_kib(pid)["VmRSS"]
    with ThreadPoolExecutor(PARALLEL) as pool:
        outcomes = list(pool.map(lambda _: post(hub, listener, ROUTES[route], FLOOD_BYTES)[0], range(PARALLEL)))
    peak = memory_kib(pid)["VmHWM"]
    print(f"{listener} {route}: {outcomes}; service resident {before // 1024} MiB before, "
          f"peak {peak // 1024} MiB during the posts")
    assert peak - before < 50 * 1024, f"resident memory grew from {before // 1024} to {peak // 1024} MiB"
    # Uploads are refused for want of credentials, the JSON route's body by tornado (over 64 KiB),
    # and the connection closed with the rest unread. The proxy, still forwarding the body then,
    # often answers 503 for the service.
    refused = {403 if route != "transition (JSON)" else 400, "closed"} | ({503} if listener == "proxy" else set())
    assert set(outcomes) <= refused, outcomes
    assert hub.service_pid() == pid


def test_an_operator_upload_still_goes_through_both_listeners(hub, tokens, client, intake):
    table = b"region,count\nnorth,120\nsouth,35\n"
    for api in (client(tokens["olga@ws1"]), intake(tokens["olga@ws1"])):
        r = api.submit({"table.csv": table})
        assert r.status_code == 201, r.text
        assert r.json()["files"][0]["size"] == len(table)


@pytest.mark.parametrize("listener", ["proxy", "intake"])
def test_bodies_over_the_route_limit_are_refused_before_they_are_sent(hub, tokens, listener):
    limit = max_body_bytes(hub.settings)
    auth = {"Authorization": f"token {tokens['olga@ws1']}"}
    status, body = post(hub, listener, ROUTES["submit"], limit + 1, auth, send_body=False)
    assert status == 413, body
    assert json.loads(body)["error"] == (
        f"the request body is {limit + 1} bytes, over the limit of {limit // MIB} MiB for uploads;"
        " send fewer or smaller files")
    status, body = post(hub, listener, ROUTES["checks"], 0, {**auth, "Content-Length": None,
                                                             "Transfer-Encoding": "chunked"}, send_body=False)
    assert status == 411, body
    assert json.loads(body)["error"].startswith("send uploads with a Content-Length header")
    status, body = post(hub, listener, ROUTES["new file versions"], limit, send_body=False)
    assert status == 403 and json.loads(body)["error"].startswith("not authenticated"), body
    # Every other route takes 64 KiB (tornado refuses more, before any handler runs).
    assert post(hub, listener, ROUTES["transition (JSON)"], 64 * 1024 + 1, auth, send_body=False)[0] == 400


def test_a_browser_session_counts_for_uploads_only_with_the_xsrf_header(hub):
    """The HubOAuth cookie identifies who uploads together with an X-XSRFToken header; an _xsrf form
    field is in the body, which is not read before the caller is known."""
    browser = hub.login("olga")
    assert browser.get(f"{hub.service}/mine", timeout=30).status_code == 200
    xsrf = browser.cookies.get("_xsrf", path="/services/exports/")
    files = {"file": ("t.csv", b"region,count\nnorth,120\n")}
    # olga is identified; she may request exports, but only from her sandbox.
    r = browser.post(f"{hub.service}/api/checks", files=files, headers={"X-XSRFToken": xsrf}, timeout=30)
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "export requests are accepted only with a workspace sandbox's server token"
    r = browser.post(f"{hub.service}/api/checks", files=files, data={"_xsrf": xsrf}, timeout=30)
    assert r.status_code == 403 and r.json()["error"].startswith("not authenticated"), r.text
    # Without its _xsrf cookie the header matches nothing: refused, and answered. (JupyterHub's
    # blocking HubAuth path deadlocks on this; uploads identify their caller without it.)
    for cookie in [c for c in browser.cookies if c.name == "_xsrf" and c.path == "/services/exports/"]:
        browser.cookies.clear(cookie.domain, cookie.path, cookie.name)
    r = browser.post(f"{hub.service}/api/checks", files=files, headers={"X-XSRFToken": xsrf}, timeout=10)
    assert r.status_code == 403 and r.json()["error"].startswith("not authenticated"), r.text
    assert requests.get(f"{hub.service}/api/openapi.json", timeout=10).status_code == 200
