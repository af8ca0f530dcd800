"""File names and contents reach the reviewer's page as text, never as markup.

A file named ``chart" src="?decoy" x=".png`` once gave the reviewer's ``<img>`` a source of the
requester's choosing. Hostile names go in through the intake socket with a sandbox server's token;
the reviewer's page is parsed and compared, element by element, with the page of the same files
under plain names.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
from html.parser import HTMLParser
from urllib.parse import urlsplit

import nbformat
import requests_unixsocket
from nbformat.v4 import new_code_cell, new_notebook, new_output
from PIL import Image

# Elements that have no end tag.
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(out, "PNG")
    return out.getvalue()


def notebook() -> bytes:
    return nbformat.writes(new_notebook(cells=[new_code_cell("1 + 1", outputs=[
        new_output("execute_result", data={"text/plain": "2"}, execution_count=1)])])).encode()


def table(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


TABLE_ROWS = [["地区", "<b>count</b>"], ["北京 \"east\"", "<img src=x onerror=alert(1)>"], ["R&D &amp; 'q'", "12"]]
TEXT = "</pre><script>alert(1)</script> & \"引号\" 'q' &amp; <i>\n"

# Each hostile name with the plain name of its twin and the content both carry.
FILES = [
    ('chart" src="?decoy" x=".png', "chart.png", png()),
    ('报告 "摘要".png', "report.png", png()),
    ("R&D &amp; <b>'表' \"q\".csv", "table.csv", table(TABLE_ROWS)),
    ("notes' <i> \"x\" & 说明.txt", "notes.txt", TEXT.encode()),
    ('nb" srcdoc="<h1>Approved" x=".ipynb', "analysis.ipynb", notebook()),
]


def multipart(fields: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, str]:
    """A multipart body whose file names are quoted strings with '"' and '\\' escaped (RFC 7230),
    which tornado decodes to the names as they are; browsers and urllib3 send '"' as %22 instead."""
    boundary = secrets.token_hex(16)

    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts += [f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename={quoted(name)}\r\n"
              "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
              for name, data in files.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Node:
    def __init__(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tag, self.attrs, self.children = tag, attrs, []

    def iter(self):
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def find_all(self, tag: str, **attrs) -> list["Node"]:
        return [n for n in self.iter() if n.tag == tag and all(dict(n.attrs).get(k) == v for k, v in attrs.items())]

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)


class Page(HTMLParser):
    """The element tree of a page, each element's attributes in order, duplicates kept."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", [])
        self._open = [self.root]
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs)
        self._open[-1].children.append(node)
        if tag not in VOID:
            self._open.append(node)

    def handle_endtag(self, tag):
        for i in range(len(self._open) - 1, 0, -1):
            if self._open[i].tag == tag:
                del self._open[i:]
                return

    def handle_data(self, data):
        self._open[-1].children.append(data)

    def structure(self) -> list[tuple[str, list[str]]]:
        return [(n.tag, [k for k, _ in n.attrs]) for n in self.root.iter()]


def submit_raw(intake, token: str, files: dict[str, bytes], title: str) -> dict:
    manifest = {"files": {name: {"sha256": hashlib.sha256(data).hexdigest(), "provenance": {"notebook": "a.ipynb"}}
                          for name, data in files.items()}}
    fields = {"title": title, "context": "Counts for the report.", "manifest": json.dumps(manifest)}
    body, content_type = multipart(fields, files)
    api = intake(token)
    r = api.session.post(api.base + "/api/requests", data=body, headers={"Content-Type": content_type}, timeout=60)
    assert r.status_code == 201, r.text
    return r.json()


def reviewer_page(hub, request_id: str) -> Page:
    r = hub.login("rita").get(f"{hub.service}/requests/{request_id}", timeout=30)
    assert r.status_code == 200, r.text
    return Page(r.text)


def test_hostile_file_names_stay_text_on_the_reviewers_page(hub, tokens, intake):
    title = 'Q&A "季度" <b>report'
    hostile = submit_raw(intake, tokens["olga@ws1"], {name: data for name, _, data in FILES}, title)
    plain = submit_raw(intake, tokens["olga@ws1"], {name: data for _, name, data in FILES}, "Plain")
    assert [f["name"] for f in hostile["files"]] == [name for name, _, _ in FILES]

    page, twin = reviewer_page(hub, hostile["id"]), reviewer_page(hub, plain["id"])
    # Not one element or attribute more or less than under plain names.
    assert page.structure() == twin.structure()
    assert page.root.find_all("h1")[0].children[0].strip() == title

    for f in hostile["files"]:
        [section] = page.root.find_all("section", id=f"file-{f['id']}")
        assert section.find_all("h3")[0].children[0].strip() == f["name"]
        assert [b.text() for b in section.find_all("button")] == [f"Vote on {f['name']}"]
        url = f"{urlsplit(hub.service).path}/requests/{hostile['id']}/files/{f['id']}"
        images, frames = [], []
        if f["name"].endswith(".png"):
            images = [[("class", "preview"), ("alt", f["name"]), ("src", f"{url}/raw")]]
        elif f["name"].endswith(".ipynb"):
            frames = [[("class", "render"), ("sandbox", None), ("title", f["name"]), ("src", f"{url}/render")]]
        elif f["name"].endswith(".csv"):
            [data] = section.find_all("table", **{"class": "data"})
            rows = [[cell.text() for cell in tr.children if isinstance(cell, Node)] for tr in data.find_all("tr")]
            assert rows == [["#", *TABLE_ROWS[0]]] + [[str(i), *row] for i, row in enumerate(TABLE_ROWS[1:], 1)]
        else:
            assert [p.text() for p in section.find_all("pre", **{"class": "text"})] == [TEXT]
        assert [i.attrs for i in section.find_all("img")] == images
        assert [i.attrs for i in section.find_all("iframe")] == frames


def test_names_as_browsers_and_the_guard_send_them_arrive_intact(hub, tokens, intake):
    """The guard percent-encodes file names (RFC 7578), so '"' and a literal '%22' stay two names;
    browsers and urllib3 left to themselves send '"' as %22, which decodes to it as well."""
    name = '报告 "摘要".png'
    r = intake(tokens["olga@ws1"]).submit({name: png(), "plain 50%22.csv": b"region,count\nnorth,120\n"})
    assert r.status_code == 201, r.text
    req = r.json()
    assert [f["name"] for f in req["files"]] == [name, "plain 50%22.csv"]
    as_a_form_sends_it = requests_unixsocket.Session().post(
        intake(tokens["olga@ws1"]).base + "/api/requests", headers={"Authorization": f"token {tokens['olga@ws1']}"},
        data={"title": "t", "context": "c"}, files=[("file", ('注 "a".csv', b"region,count\nnorth,120\n"))], timeout=60)
    assert as_a_form_sends_it.status_code == 201, as_a_form_sends_it.text
    assert [f["name"] for f in as_a_form_sends_it.json()["files"]] == ['注 "a".csv']
    page = reviewer_page(hub, req["id"])
    [image] = page.root.find_all("img", **{"class": "preview"})
    assert dict(image.attrs)["alt"] == name
