"""Uploaded files: what is refused outright, and what is extracted from the rest for the checks.

:func:`inspect` either raises :class:`FileRejected` with a message naming the file and the problem
(nothing of the request is then stored) or returns an :class:`Inspected` holding everything the
checks and the review pages need: the sniffed content type, the decoded text, the table's rows,
the notebook's extracted outputs and every embedded image's metadata, each with its location.
"""

from __future__ import annotations

import base64
import binascii
import csv
import gc
import io
import json
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ..i18n import N_
from ..refusals import Refusal
from . import notebook_tables
from .notebook_tables import FoundTable

# nbformat, Pillow, pypdf and defusedxml are imported by the functions that read those formats, so
# importing this module (and the CLI that names it) stays cheap.

# Extension -> the kind of content it must hold.
KINDS = {
    "csv": "table",
    "tsv": "table",
    "txt": "text",
    "md": "text",
    "json": "json",
    "png": "png",
    "jpg": "jpeg",
    "jpeg": "jpeg",
    "svg": "svg",
    "pdf": "pdf",
    "html": "html",
    "ipynb": "notebook",
}

# Archives and compressed streams are never accepted: their size says nothing of what they hold.
_ARCHIVE_MAGIC = {
    b"PK\x03\x04": "zip archive",
    b"PK\x05\x06": "zip archive",
    b"\x1f\x8b": "gzip stream",
    b"BZh": "bzip2 stream",
    b"\xfd7zXZ\x00": "xz stream",
    b"7z\xbc\xaf\x27\x1c": "7-zip archive",
    b"\x28\xb5\x2f\xfd": "zstd stream",
    b"Rar!\x1a\x07": "rar archive",
    b"\x04\x22\x4d\x18": "lz4 stream",
}

_SAFE_NAME = re.compile(r"^[^/\\\x00-\x1f\x7f]{1,200}$")
_SCRIPT = re.compile(r"<script\b|\bon\w+\s*=|javascript:", re.I)
# Images above this many pixels are refused (Pillow's decompression-bomb guard raises past it).
MAX_IMAGE_PIXELS = 40_000_000


# The code of a file over the size cap (a 413, where the other rejections are a 400).
OVER_CAP = "export.file.over_cap"


class FileRejected(Refusal, ValueError):
    """An uploaded file that is not accepted at all: a stable code (``export.file.*``), the reason
    naming the file (``str()``: English) and its params."""


@dataclass
class Fragment:
    """A piece of text found in a file, with where it was found."""

    location: str
    text: str


@dataclass
class Inspected:
    name: str
    ext: str
    kind: str  # what the extension promises
    data: bytes
    sniffed: str  # what the content is
    text: str | None = None
    rows: list[list[str]] | None = None  # tables: header first
    # Where a table came from inside a notebook ("cell 4, output 1, HTML table 1"); "" for a file.
    location: str = ""
    label_columns: int = 1  # leading columns holding row labels, not counts
    total_rows: int | None = None  # rows of the whole frame when a notebook output shows only some
    tables: list["Inspected"] = field(default_factory=list)  # a notebook's tables, inspected as tables
    fragments: list[Fragment] = field(default_factory=list)  # text to scan, besides ``text``
    image_metadata: list[tuple[str, dict]] = field(default_factory=list)  # (location, {key: value})
    notebook_outputs: int = 0
    active_content: list[str] = field(default_factory=list)  # scripts, widget state: not rendered
    # Results several checks share (the count cells of a table), computed once.
    cache: dict = field(default_factory=dict)


def check_name(name: str) -> str:
    """The file name, or FileRejected if it is not a plain file name with an allowed extension."""
    if not _SAFE_NAME.match(name) or name in (".", "..") or name.startswith("."):
        raise FileRejected("export.file.bad_name", N_(
            "file name %(file)s is not allowed: use a plain file name (no folders, no '/' or '\\', no control"
            " characters, not starting with '.')"), file=repr(name))
    if PurePosixPath(name).name != name or ".." in name:
        raise FileRejected("export.file.dot_dot", N_("file name %(file)s is not allowed: it must not contain '..'"),
                           file=repr(name))
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext not in KINDS:
        raise FileRejected("export.file.type_not_exportable", N_(
            "file %(file)s: type '.%(ext)s' is not exportable; allowed: %(allowed)s"), file=repr(name), ext=ext,
            allowed=", ".join(sorted(KINDS)))
    return ext


def _archive(data: bytes) -> str | None:
    for magic, what in _ARCHIVE_MAGIC.items():
        if data.startswith(magic):
            return what
    return None


def _utf8(name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileRejected("export.file.not_utf8", N_(
            "file %(file)s is not UTF-8 text (invalid byte at offset %(offset)s): save it as UTF-8 (Excel: CSV"
            " UTF-8; pandas: encoding=\"utf-8-sig\"), not GBK or GB18030"), file=repr(name), offset=exc.start) from None


def _sniff(data: bytes) -> str:
    """What the bytes are, whatever the name says."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"%PDF-"):
        return "pdf"
    if b"\x00" in data[:8192]:
        return "binary"
    # The start decides; a multi-byte character cut at the end of the sample is not an error.
    sample = data[:65536]
    try:
        head = sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 3:
            return "binary"
        head = sample[: exc.start].decode("utf-8")
    head = head.lstrip()[:2048].lower()
    if head.startswith("{") or head.startswith("["):
        try:
            value = json.loads(data)
        except ValueError:
            return "text"
        if isinstance(value, dict) and "cells" in value and "nbformat" in value:
            return "notebook"
        return "json"
    if "<svg" in head and (head.startswith("<?xml") or head.startswith("<svg") or head.startswith("<!--")):
        return "svg"
    if head.startswith("<!doctype html") or head.startswith("<html") or re.search(r"<(body|div|table|p)\b", head):
        return "html"
    return "text"


# Which sniffed contents each kind accepts (csv and markdown are text; html may be any text).
_COMPATIBLE = {
    "table": {"text"},
    "text": {"text", "json", "html"},
    "json": {"json"},
    "png": {"png"},
    "jpeg": {"jpeg"},
    "svg": {"svg"},
    "pdf": {"pdf"},
    "html": {"html", "text"},
    "notebook": {"notebook"},
}


def content_matches(inspected: Inspected) -> bool:
    return inspected.sniffed in _COMPATIBLE[inspected.kind]


def image_metadata(name: str, data: bytes) -> dict[str, str]:
    """Text chunks, EXIF and other metadata of a PNG/JPEG, as strings; FileRejected if unsafe."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                img.load()  # decodes every chunk, so oversized text chunks surface here
                meta = {}
                for key, value in (img.info or {}).items():
                    if key in ("dpi", "gamma", "transparency", "aspect", "interlace", "progression",
                               "progressive", "jfif", "jfif_version", "jfif_unit", "jfif_density"):
                        continue
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", "replace")
                    meta[str(key)] = str(value)
                for tag, value in img.getexif().items():
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", "replace")
                    meta[f"exif:{tag}"] = str(value)
                return meta
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise FileRejected("export.file.image_bomb", N_("image %(file)s is refused as a decompression bomb: %(detail)s"),
                           file=repr(name), detail=str(exc)) from None
    except ValueError as exc:  # Pillow: "Decompressed data too large" for zTXt/iTXt chunks
        raise FileRejected("export.file.image_refused", N_("image %(file)s is refused: %(detail)s"), file=repr(name),
                           detail=str(exc)) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise FileRejected("export.file.image_unreadable", N_("image %(file)s cannot be read: %(detail)s"),
                           file=repr(name), detail=str(exc)) from None


def _table(name: str, ext: str, text: str) -> list[list[str]]:
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter="\t" if ext == "tsv" else ","))
    except csv.Error as exc:
        raise FileRejected("export.file.bad_csv", N_("table %(file)s is not valid CSV: %(detail)s"), file=repr(name),
                           detail=str(exc)) from None
    if not rows:
        raise FileRejected("export.file.empty_table", N_("table %(file)s is empty"), file=repr(name))
    width = len(rows[0])
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != width:
            raise FileRejected("export.file.ragged_table", N_(
                "table %(file)s is ragged: line %(line)s has %(fields)s fields, the header has %(width)s"),
                file=repr(name), line=i, fields=len(row), width=width)
    return rows


def _notebook(inspected: Inspected) -> None:
    import nbformat

    name = inspected.name
    try:
        nb = nbformat.reads(inspected.text, as_version=4)
    except Exception as exc:  # nbformat raises several unrelated types for bad documents
        raise FileRejected("export.file.notebook_unreadable", N_("notebook %(file)s cannot be read: %(detail)s"),
                           file=repr(name), detail=str(exc)) from None
    frags = inspected.fragments
    frags.append(Fragment("notebook metadata", json.dumps(nb.metadata, ensure_ascii=False)))
    if "widgets" in nb.metadata:
        inspected.active_content.append("notebook metadata holds widget state")
        for state in (nb.metadata.widgets or {}).values():
            if isinstance(state, dict):
                _add_tables(inspected, notebook_tables.widget_tables(state, "widget state"))
    for ci, cell in enumerate(nb.cells, start=1):
        where = f"cell {ci}"
        frags.append(Fragment(f"{where} source", cell.source))
        if cell.cell_type == "markdown":
            _add_tables(inspected, _markup_tables(cell.source, where))
        elif cell.cell_type == "raw":
            _add_tables(inspected, _markup_tables(cell.source, where)
                        or notebook_tables.csv_tables(cell.source, where))
        if cell.get("metadata"):
            frags.append(Fragment(f"{where} metadata", json.dumps(cell.metadata, ensure_ascii=False)))
        for att_name, bundle in (cell.get("attachments") or {}).items():
            _bundle(inspected, f"{where}, attachment {att_name!r}", bundle)
        for oi, out in enumerate(cell.get("outputs") or [], start=1):
            inspected.notebook_outputs += 1
            owhere = f"{where}, output {oi}"
            if out.get("output_type") == "stream":
                text = out.get("text", "")
                frags.append(Fragment(f"{owhere} ({out.get('name', 'stream')})", text))
                _add_tables(inspected, notebook_tables.output_text_tables(text, owhere))
            elif out.get("output_type") == "error":
                frags.append(Fragment(f"{owhere} (error)", "\n".join(out.get("traceback", []))))
            else:
                _bundle(inspected, owhere, out.get("data") or {})
            if out.get("metadata"):
                frags.append(Fragment(f"{owhere} metadata", json.dumps(out.metadata, ensure_ascii=False)))


def _markup_tables(text: str, where: str) -> list[FoundTable]:
    """Markdown tables, and HTML tables written into Markdown."""
    found = notebook_tables.markdown_tables(text, where)
    if "<table" in text.lower():
        found += notebook_tables.html_tables(text, where)[0]
    return found


def _add_tables(inspected: Inspected, found: list[FoundTable]) -> None:
    """A notebook's tables, each inspected as a table file would be so the table checks run on it."""
    for t in found:
        inspected.tables.append(Inspected(
            name=inspected.name, ext="csv", kind="table", data=b"", sniffed="text", rows=t.rows,
            location=t.location, label_columns=t.label_columns, total_rows=t.total_rows))


def _bundle(inspected: Inspected, where: str, bundle: dict) -> None:
    """One output (or attachment) mime bundle: text is scanned, images decoded, tables extracted."""
    tables: list[FoundTable] = []
    for mime, value in bundle.items():
        if mime in ("image/png", "image/jpeg"):
            try:
                raw = base64.b64decode(value if isinstance(value, str) else "".join(value), validate=False)
            except (binascii.Error, ValueError):
                raise FileRejected("export.file.not_base64", N_(
                    "notebook %(file)s: %(where)s has a %(mime)s that is not base64"), file=repr(inspected.name),
                    where=where, mime=mime) from None
            meta = image_metadata(f"{inspected.name} ({where})", raw)
            if meta:
                inspected.image_metadata.append((f"{where} {mime}", meta))
                for key, val in meta.items():
                    inspected.fragments.append(Fragment(f"{where} {mime} metadata {key!r}", val))
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if mime in ("application/javascript", "text/javascript") or "widget" in mime or (
                mime == "text/html" and _SCRIPT.search(text)):
            inspected.active_content.append(f"{where}: {mime}")
        inspected.fragments.append(Fragment(f"{where} {mime}", text))
        if mime == "text/html":
            found, image_texts = notebook_tables.html_tables(text, where)
            tables += found
            if image_texts:
                inspected.fragments.append(Fragment(f"{where} image alt text", "\n".join(image_texts)))
        elif mime == "text/markdown":
            tables += _markup_tables(text, where)
        elif mime in ("text/csv", "text/tab-separated-values"):
            tables += notebook_tables.csv_tables(text, where)
        elif mime.endswith("json") and "widget" not in mime:
            try:
                data = json.loads(value) if isinstance(value, str) else value
            except ValueError:
                continue
            if (table := notebook_tables.json_table(data, where)) is not None:
                tables.append(table)
    # The text/plain beside an HTML table is the same frame again: read only when nothing else was.
    if not tables and isinstance(plain := bundle.get("text/plain"), str):
        tables = notebook_tables.output_text_tables(plain, where)
    _add_tables(inspected, tables)


def _pdf(inspected: Inspected) -> None:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(inspected.data))
        meta = {str(k): str(v) for k, v in (reader.metadata or {}).items()}
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, RecursionError) as exc:
        # pypdf raises LimitReachedError (a PdfReadError) for decompression bombs.
        raise FileRejected("export.file.pdf_unreadable", N_("PDF %(file)s cannot be read safely: %(detail)s"),
                           file=repr(inspected.name), detail=str(exc)) from None
    if meta:
        inspected.image_metadata.append(("document information", meta))
        for key, val in meta.items():
            inspected.fragments.append(Fragment(f"PDF metadata {key}", val))
    for i, text in enumerate(pages, start=1):
        inspected.fragments.append(Fragment(f"page {i}", text))


def _svg(inspected: Inspected) -> None:
    from defusedxml import ElementTree as SafeET
    from defusedxml.common import DefusedXmlException

    try:
        root = SafeET.fromstring(inspected.data, forbid_dtd=True)
    except (DefusedXmlException, SafeET.ParseError) as exc:
        raise FileRejected("export.file.svg_refused", N_("SVG %(file)s is refused: %(detail)s"),
                           file=repr(inspected.name), detail=str(exc)) from None
    texts = [t for el in root.iter() for t in (el.text, el.tail) if t and t.strip()]
    if any(el.tag.rsplit("}", 1)[-1] in ("script", "foreignObject") for el in root.iter()):
        inspected.active_content.append("SVG holds script or foreign content")
    inspected.fragments.append(Fragment("SVG text", "\n".join(texts)))


@contextmanager
def gc_paused():
    """Pause the cyclic garbage collector while building millions of acyclic objects.

    Parsing a 16 MB table creates a few million strings in lists; each allocation threshold
    crossed triggers a collection that walks them all, which more than doubles the time. Nothing
    built here holds reference cycles, so nothing is left for the collector when it resumes.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def inspect(name: str, data: bytes, max_bytes: int) -> Inspected:
    """Validate one uploaded file and extract what the checks need; FileRejected if unacceptable."""
    with gc_paused():
        return _inspect(name, data, max_bytes)


def _inspect(name: str, data: bytes, max_bytes: int) -> Inspected:
    ext = check_name(name)
    if len(data) == 0:
        raise FileRejected("export.file.empty", N_("file %(file)s is empty"), file=repr(name))
    if len(data) > max_bytes:
        raise FileRejected(OVER_CAP, N_("file %(file)s is %(size)s MiB, over the %(cap)s MiB cap"), file=repr(name),
                           size=f"{len(data) / 2**20:.1f}", cap=f"{max_bytes / 2**20:.0f}")
    archive = _archive(data)
    if archive:
        raise FileRejected("export.file.archive", N_(
            "file %(file)s is a %(archive)s: archives and compressed files are not accepted"), file=repr(name),
            archive=archive)
    inspected = Inspected(name=name, ext=ext, kind=KINDS[ext], data=data, sniffed=_sniff(data))
    # A table must be UTF-8 CSV unless it is plainly something else (then the type check fails it).
    if inspected.kind == "table" and inspected.sniffed not in ("png", "jpeg", "pdf"):
        inspected.text = _utf8(name, data)
        # A byte order mark (pandas' encoding="utf-8-sig", which Excel needs to read Chinese) is no
        # part of the first column's name: kept there, that name would match no released column.
        inspected.rows = _table(name, ext, inspected.text.removeprefix("\ufeff"))
    elif inspected.sniffed in ("png", "jpeg"):
        meta = image_metadata(name, data)
        if meta:
            inspected.image_metadata.append(("image", meta))
            for key, val in meta.items():
                inspected.fragments.append(Fragment(f"image metadata {key!r}", val))
    elif inspected.sniffed == "pdf":
        _pdf(inspected)
    elif inspected.sniffed != "binary":
        inspected.text = _utf8(name, data)
        if inspected.sniffed == "notebook":
            _notebook(inspected)
            inspected.text = None  # scanned through its fragments, each with a location
        elif inspected.sniffed == "svg":
            _svg(inspected)
        elif inspected.sniffed == "html" and _SCRIPT.search(inspected.text):
            inspected.active_content.append("HTML holds scripts or event handlers")
    return inspected
