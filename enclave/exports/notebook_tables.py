"""Tables shown in a notebook, extracted so that the disclosure checks see them as they see CSV files.

A DataFrame reaches a notebook in many forms: pandas' HTML (``_repr_html_``, with MultiIndex
headers, a "N rows × M columns" footer and "..." rows and columns when truncated, or a Styler's
HTML), its text (the ``text/plain`` repr of a DataFrame or Series, ``print(df)``,
``df.to_string()``), a Markdown table (``df.to_markdown()`` in an output, or pasted into a
markdown cell), JSON data (``application/json``, pandas' table schema) and widgets' saved state.
Each table found becomes rows of strings, header first, as ``df.to_csv()`` of the same frame would
write them: sparsified index labels are filled in, multi-level column headers joined with " / ",
"..." rows and columns dropped, and pandas' missing-value markers (NaN, <NA>, None, NaT) empty.

Only the standard library is used; HTML is tokenized, never rendered.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import re
from dataclasses import dataclass
from html import unescape
from itertools import takewhile

# Python literals (a dict or list printed as an output) longer than this are not evaluated.
MAX_LITERAL = 2 * 2**20
# Spans beyond these are no pandas output: they are cut so a crafted table cannot blow up.
MAX_SPAN = 1000
MAX_CELLS = 2_000_000
# pandas' markers for a missing value, written as an empty field by ``to_csv``.
MISSING = frozenset({"NaN", "nan", "<NA>", "None", "NaT", "null"})
TRUNCATED = frozenset({"...", "..", "…", "⋮", "⋯"})

_HTML_FOOTER = re.compile(r"(\d+)\s+rows\s+[×x]\s+(\d+)\s+columns")
_TEXT_FOOTER = re.compile(r"^\s*\[(\d+) rows x (\d+) columns\]\s*$")
_SERIES_FOOTER = re.compile(
    r"^(?:Freq: [^,]+, )?(?:Name: (?P<name>.*?), )?(?:Length: (?P<length>\d+), )?dtype: \S+\s*$"
)
_MD_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


@dataclass
class FoundTable:
    """One table of a notebook, in the shape the table checks read from a CSV file."""

    location: str  # "cell 4, output 1, HTML table 1"
    rows: list[list[str]]  # header first; every row as wide as the header
    label_columns: int = 1  # leading columns holding row labels (pandas' index levels)
    total_rows: int | None = None  # rows of the whole frame when the output shows only some


def _clean(value: str) -> str:
    value = " ".join(value.split())
    return "" if value in MISSING else value


def _rectangular(header: list[str], body: list[list[str]]) -> list[list[str]]:
    width = len(header)
    return [header] + [(row + [""] * width)[:width] for row in body]


def _drop_truncation(header: list[str], body: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Without pandas' "..." rows and columns (a truncated frame's place holders)."""
    rows = [r for r in body if not (r and all(v in TRUNCATED or v == "" for v in r) and any(v in TRUNCATED for v in r))]
    keep = [c for c, h in enumerate(header)
            if not (h in TRUNCATED and all(c >= len(r) or r[c] in TRUNCATED or r[c] == "" for r in rows))]
    return [header[c] for c in keep], [[r[c] for c in keep if c < len(r)] for r in rows]


def _join_header(header_rows: list[list[str]], width: int) -> list[str]:
    """One name per column from several header rows (MultiIndex levels, the index names' row)."""
    names = []
    for c in range(width):
        parts: list[str] = []
        for row in header_rows:
            v = row[c] if c < len(row) else ""
            if v and v not in parts:
                parts.append(v)
        names.append(" / ".join(parts))
    return names


# -- HTML (pandas' to_html and _repr_html_, Styler) --


_TAG = re.compile(r"""<!--.*?-->|<(/?)([a-zA-Z][a-zA-Z0-9]*)((?:[^>"']|"[^"]*"|'[^']*')*)>""", re.S)
_ATTR = re.compile(r"""([a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+))""")
_RAW_END = {"style": re.compile(r"</style\s*>", re.I), "script": re.compile(r"</script\s*>", re.I)}


def _attrs(text: str) -> dict[str, str]:
    return {m.group(1).lower(): unescape(m.group(2) or m.group(3) or m.group(4) or "") for m in _ATTR.finditer(text)}


class _HTMLTables:
    """Every <table>'s cells as (is_header, text, colspan, rowspan) per row, and the text after it.

    A tokenizer for the tags tables are made of, driven by one regular expression: a pandas
    frame of a few MB is read in well under a second, where :mod:`html.parser` takes ten. Other
    tags are dropped and their text kept, as a browser shows it; style and script bodies are skipped.
    """

    def __init__(self) -> None:
        self.tables: list[dict] = []
        self._open: list[dict] = []
        self._cell: dict | None = None
        self.image_texts: list[str] = []

    def feed(self, html: str) -> None:
        pos = 0
        while (m := _TAG.search(html, pos)) is not None:
            if m.start() > pos and (self._cell is not None or not self._open):
                self._data(html[pos:m.start()])
            pos = m.end()
            if m.group(2) is None:  # a comment
                continue
            tag = m.group(2).lower()
            if m.group(1):
                self._end(tag)
            elif tag in _RAW_END:
                end = _RAW_END[tag].search(html, pos)
                pos = end.end() if end else len(html)
            else:
                self._start(tag, m.group(3))
        if pos < len(html):
            self._data(html[pos:])

    def _start(self, tag: str, attr_text: str) -> None:
        if tag == "img":
            a = _attrs(attr_text)
            self.image_texts += [a[k] for k in ("alt", "title") if a.get(k)]
        elif tag == "table":
            self._open.append({"rows": [], "head": [], "after": ""})
        elif not self._open:
            return
        elif tag == "thead":
            self._open[-1]["in_head"] = True
        elif tag in ("tbody", "tfoot"):
            self._open[-1]["in_head"] = False
        elif tag == "tr":
            self._open[-1]["rows"].append([])
            self._open[-1]["head"].append(self._open[-1].get("in_head", False))
        elif tag in ("td", "th"):
            if not self._open[-1]["rows"]:
                self._open[-1]["rows"].append([])
                self._open[-1]["head"].append(self._open[-1].get("in_head", False))
            colspan = rowspan = 1
            if "span" in attr_text:
                a = _attrs(attr_text)
                colspan, rowspan = _span(a.get("colspan")), _span(a.get("rowspan"))
            self._cell = {"th": tag == "th", "text": [], "colspan": colspan, "rowspan": rowspan}
            self._open[-1]["rows"][-1].append(self._cell)
        elif tag == "br" and self._cell is not None:
            self._cell["text"].append(" ")

    def _end(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._cell = None
        elif tag == "thead" and self._open:
            self._open[-1]["in_head"] = False
        elif tag == "table" and self._open:
            self._cell = None
            self.tables.append(self._open.pop())

    def _data(self, data: str) -> None:
        if "&" in data:
            data = unescape(data)
        if self._cell is not None:
            self._cell["text"].append(data)
        elif not self._open and self.tables and len(self.tables[-1]["after"]) < 200:
            self.tables[-1]["after"] += data


def _span(value: str | None) -> int:
    try:
        return min(max(int(value or 1), 1), MAX_SPAN)
    except ValueError:
        return 1


def _grid(rows: list[list[dict]]) -> list[list[tuple[bool, str]]]:
    """The rows with colspan and rowspan expanded: a spanning cell's value fills every place it covers.

    Expansion stops at MAX_CELLS places in all, so spans cannot make a small text a huge table.
    """
    grid: list[list[tuple[bool, str]]] = []
    pending: dict[int, list] = {}  # column -> [rows still covered, (is_header, text)]
    budget = MAX_CELLS
    for row in rows:
        out: list[tuple[bool, str]] = []

        def place(value: tuple[bool, str]) -> None:
            nonlocal budget
            if budget <= 0:
                raise _Full
            budget -= 1
            out.append(value)

        def fill_pending() -> None:
            while len(out) in pending:
                col = len(out)
                left, value = pending[col]
                place(value)
                if left <= 1:
                    del pending[col]
                else:
                    pending[col][0] = left - 1

        try:
            for cell in row:
                fill_pending()
                value = (cell["th"], _clean("".join(cell["text"])))
                for _ in range(cell["colspan"]):
                    if cell["rowspan"] > 1:
                        pending[len(out)] = [cell["rowspan"] - 1, value]
                    place(value)
            fill_pending()
            # Spans reaching past the row's own cells (a sparsified index under a short row).
            for c in sorted(k for k in pending if k >= len(out)):
                while len(out) < c:
                    place((False, ""))
                fill_pending()
        except _Full:
            break
        grid.append(out)
    return grid


class _Full(Exception):
    """A table's expansion reached MAX_CELLS."""


def html_tables(html: str, where: str) -> tuple[list[FoundTable], list[str]]:
    """The tables of an HTML text, and the alt and title texts of its images."""
    parser = _HTMLTables()
    parser.feed(html)
    found = []
    for n, table in enumerate(parser.tables, start=1):
        grid = _grid(table["rows"])
        if not grid:
            continue
        # Header rows: those in <thead>, or else the leading rows made only of <th> cells.
        n_head = sum(1 for _ in takewhile(bool, table["head"][: len(grid)]))
        if n_head == 0:
            while n_head < len(grid) - 1 and all(th for th, _ in grid[n_head]):
                n_head += 1
        n_head = max(n_head, 1)
        body_rows = grid[n_head:]
        width = max(len(r) for r in grid)
        header = _join_header([[v for _, v in r] for r in grid[:n_head]], width)
        # pandas writes the index as <th> cells: the leading ones of every body row are its levels.
        labels = min((sum(1 for _ in takewhile(lambda cell: cell[0], r)) for r in body_rows), default=0)
        body = [[v for _, v in r] for r in body_rows]
        header, body = _drop_truncation(header, body)
        if not body or len(header) < 1:
            continue
        footer = _HTML_FOOTER.search(table["after"])
        found.append(FoundTable(f"{where}, HTML table {n}", _rectangular(header, body),
                                label_columns=labels, total_rows=int(footer.group(1)) if footer else None))
    return found, parser.image_texts


# -- text (the repr of a DataFrame or Series, print(df), df.to_string()) --


def _blocks(text: str) -> list[list[str]]:
    """Runs of non-blank lines, tabs expanded."""
    blocks: list[list[str]] = [[]]
    for line in text.expandtabs().splitlines():
        if line.strip():
            blocks[-1].append(line.rstrip())
        elif blocks[-1]:
            blocks.append([])
    return [b for b in blocks if b]


def _segments(lines: list[str]) -> list[tuple[int, int]]:
    """Column spans: runs of positions where some line has a character other than a space."""
    used = 0  # bit i set: some line has a character at position i (one big-integer OR per line)
    for line in lines:
        used |= int(_NOT_SPACE.sub("1", line).replace(" ", "0")[::-1] or "0", 2)
    return [(m.start(), m.end()) for m in re.finditer("1+", bin(used)[:1:-1])]


_NOT_SPACE = re.compile(r"[^ ]")


def _text_frame(lines: list[str], footer: bool) -> tuple[list[list[str]], int] | None:
    """Header first rows and the number of label columns of a frame printed as text, or None."""
    # Every line of a pandas frame but its header lines ends at the same place (values are
    # right-aligned), and so does its first line; anything else (a log, prose) is no frame.
    width = len(lines[0])
    if len(lines) < 2 or sum(1 for line in lines if len(line) == width) < len(lines) - 3:
        return None
    spans = _segments(lines)
    if len(spans) < 2:
        return None
    cut = [[line[a:b].strip() for a, b in spans] for line in lines]
    # Header lines: the first, then those with nothing in the last column (the index names' line,
    # upper levels of column headers); a data row always shows a value there, if only "NaN".
    n_head = 1
    while n_head < len(cut) - 1 and not cut[n_head][-1]:
        n_head += 1
    # Columns are right-aligned under right-aligned names: a span with no name, or with no values,
    # is the left part of the column after it (a value or name holding spaces), except the first.
    groups: list[list[int]] = []
    run: list[int] = []
    for s in range(len(spans)):
        run.append(s)
        named = any(cut[i][s] for i in range(n_head))
        valued = any(cut[i][s] for i in range(n_head, len(cut)))
        if s == len(spans) - 1 or s == 0 and valued or named and valued:
            groups.append(run)
            run = []
    rows = [[" ".join(line[spans[g[0]][0]:spans[g[-1]][1]].split()) for g in groups] for line in lines]
    head_rows, body = rows[:n_head], rows[n_head:]
    # pandas right-aligns values: every value of a data column ends at the column's right edge.
    index_named = [bool(any(h[g] for h in head_rows[1:])) and not head_rows[0][g] for g in range(len(groups))]
    labels = max(1, sum(1 for _ in takewhile(bool, index_named)))
    for g in range(labels, len(groups)):
        edge = spans[groups[g][-1]][1] - 1
        if any(line[edge:edge + 1] in ("", " ") and row[g] for line, row in zip(lines[n_head:], body)):
            return None
    # A printed frame names its last column on its first line (names are right-aligned), and starts
    # with the (blank) index corner, ends with pandas' footer, names its index on a line of its own,
    # or shows a value in every column of every row (to_string(index=False)).
    looks_like_frame = head_rows[0][-1] and (
        footer or lines[0].startswith(" ") or n_head > 1
        or (len(body) >= 2 and all(all(v for v in r[1:]) for r in body)))
    if not looks_like_frame or len(groups) < 2:
        return None
    # Index labels left empty under a repeated upper level (sparsified MultiIndex) are filled in.
    for r in range(1, len(body)):
        for c in range(labels):
            if body[r][c] == "" and body[r - 1][c]:
                body[r][c] = body[r - 1][c]
    header = _join_header(head_rows, len(groups))
    header, body = _drop_truncation(header, [[_clean(v) for v in r] for r in body])
    if not body:
        return None
    return _rectangular(header, body), labels


def _series(lines: list[str]) -> tuple[list[list[str]], int, int | None] | None:
    """A Series printed as text (its last line "Name: ..., dtype: ..."): rows, label columns, length.

    A Series has no header line; one is put above its values so it reads as a one-column frame.
    """
    m = _SERIES_FOOTER.match(lines[-1])
    if not m or len(lines) < 2:
        return None
    width = max(len(line) for line in lines[:-1])
    frame = _text_frame([" " * (width - 1) + "#"] + lines[:-1], footer=True)
    if not frame:
        return None
    rows, labels = frame
    rows[0][-1] = m.group("name") or "0"  # the header Series.to_csv writes
    return rows, labels, int(m.group("length")) if m.group("length") else None


def text_tables(text: str, where: str) -> list[FoundTable]:
    """Frames and Series printed as text, each a block of lines (pandas' "[N rows x M columns]"
    footer, after a blank line, gives the whole frame's size)."""
    found: list[FoundTable] = []
    blocks = _blocks(text)
    for i, block in enumerate(blocks):
        if _TEXT_FOOTER.match(block[0]) and len(block) == 1:
            continue
        series = _series(block)
        if series:
            rows, labels, length = series
            found.append(FoundTable(f"{where}, text table {len(found) + 1}", rows, labels, length))
            continue
        total = None
        lines = block
        if _TEXT_FOOTER.match(block[-1]):
            total, lines = int(_TEXT_FOOTER.match(block[-1]).group(1)), block[:-1]
        elif i + 1 < len(blocks) and len(blocks[i + 1]) == 1 and _TEXT_FOOTER.match(blocks[i + 1][0]):
            total = int(_TEXT_FOOTER.match(blocks[i + 1][0]).group(1))
        frame = _text_frame(lines, footer=total is not None)
        if frame:
            rows, labels = frame
            found.append(FoundTable(f"{where}, text table {len(found) + 1}", rows, labels, total))
    return found


# -- Markdown --


def _md_cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [_clean(c.replace("\\|", "|")) for c in re.split(r"(?<!\\)\|", line)]


def markdown_tables(text: str, where: str) -> list[FoundTable]:
    lines = text.splitlines()
    found = []
    i = 0
    while i < len(lines) - 1:
        if "|" in lines[i] and _MD_SEPARATOR.match(lines[i + 1]):
            header = _md_cells(lines[i])
            body = []
            j = i + 2
            while j < len(lines) and "|" in lines[j] and lines[j].strip():
                body.append(_md_cells(lines[j]))
                j += 1
            header, body = _drop_truncation(header, body)
            if body:
                found.append(FoundTable(f"{where}, Markdown table {len(found) + 1}", _rectangular(header, body),
                                        label_columns=1))
            i = j
        else:
            i += 1
    return found


# -- JSON data --


def _json_value(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, (int, float, str)):
        return _clean(str(v))
    return json.dumps(v, ensure_ascii=False)


def _records(items: list) -> tuple[list[str], list[list[str]]] | None:
    if not items or not all(isinstance(x, dict) for x in items):
        return None
    header: list[str] = []
    seen = set()
    for x in items:
        for k in x:
            if k not in seen:
                seen.add(k)
                header.append(str(k))
    return header, [[_json_value(x.get(k)) for k in header] for x in items]


def json_table(value, where: str) -> FoundTable | None:
    """A table in the shapes pandas writes JSON in (records, split, columns, index, table schema)."""
    labels, rows = 1, None
    if isinstance(value, dict) and isinstance(value.get("data"), list) and isinstance(value.get("schema"), dict):
        got = _records(value["data"])  # orient="table", and pandas' application/vnd.dataresource+json
        if got:
            keys = value["schema"].get("primaryKey") or []
            labels = len(keys)
            # An unnamed index is called "index" there; to_csv leaves its name empty.
            rows = [["" if h == "index" and keys == ["index"] else h for h in got[0]]] + got[1]
    elif isinstance(value, dict) and isinstance(value.get("columns"), list) and isinstance(value.get("data"), list):
        index = value.get("index")  # orient="split"
        data = [r for r in value["data"] if isinstance(r, list)]
        header = [str(c) for c in value["columns"]]
        if isinstance(index, list) and len(index) == len(data):
            rows = [[""] + header] + [[_json_value(i)] + [_json_value(v) for v in r] for i, r in zip(index, data)]
        else:
            labels = 0
            rows = [header] + [[_json_value(v) for v in r] for r in data]
    elif isinstance(value, list):
        got = _records(value)
        if got:
            labels, rows = 0, [got[0]] + got[1]
    elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
        columns = list(value)  # orient="columns": {column: {index: value}}
        index: list[str] = []
        for col in columns:
            index += [k for k in value[col] if k not in index]
        rows = [[""] + [str(c) for c in columns]] + [[str(i)] + [_json_value(value[c].get(i)) for c in columns]
                                                     for i in index]
    elif isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()) \
            and len({len(v) for v in value.values()}) == 1:
        columns = list(value)  # orient="list"
        labels = 0
        rows = [[str(c) for c in columns]] + [list(map(_json_value, r)) for r in zip(*value.values())]
    if not rows or len(rows) < 2 or len(rows[0]) < 1:
        return None
    return FoundTable(f"{where}, JSON table", _rectangular(rows[0], rows[1:]), label_columns=labels)


# -- CSV printed into an output (print(df.to_csv())) or kept in a raw cell --


def csv_tables(text: str, where: str) -> list[FoundTable]:
    """Blocks of lines that are CSV or TSV: every line with the same number of fields, at least two."""
    found = []
    for block in _blocks(text) if ("," in text or "\t" in text) else []:
        if len(block) < 3:
            continue
        for delimiter in (",", "\t"):
            try:
                rows = list(csv.reader(io.StringIO("\n".join(block)), delimiter=delimiter))
            except csv.Error:
                continue
            if len(rows[0]) >= 2 and all(len(r) == len(rows[0]) for r in rows):
                found.append(FoundTable(f"{where}, CSV table {len(found) + 1}",
                                        [rows[0]] + [[_clean(v) for v in r] for r in rows[1:]]))
                break
    return found


# Names a printed value may hold: missing values, and the wrappers numpy 2 and pandas print
# around scalars (np.str_('朝阳区'), np.float64(3.5), Timestamp('2024-01-01 00:00:00')).
_NAMES = {"nan": None, "NaN": None, "NaT": None, "None": None, "NA": None, "inf": "inf", "True": True,
          "False": False}
_WRAPPERS = re.compile(r"^(np|numpy|pd|pandas)\.\w+$|^(Timestamp|Timedelta|Decimal|datetime\.\w+)$")


def _literal(node: ast.AST):
    """The value of a printed literal; ValueError for anything that is not plain data."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_literal(k) if k is not None else None: _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.Attribute) and ast.unparse(node) in ("np.nan", "np.True_", "np.False_", "pd.NA", "pd.NaT"):
        return None if ast.unparse(node) in ("np.nan", "pd.NA", "pd.NaT") else ast.unparse(node) == "np.True_"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand)
        if isinstance(value, (int, float)):
            return -value
    if isinstance(node, ast.Call) and _WRAPPERS.match(ast.unparse(node.func)) and len(node.args) == 1 \
            and not node.keywords:
        value = _literal(node.args[0])
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
    raise ValueError("not plain data")


def literal_table(text: str, where: str) -> FoundTable | None:
    """A dict or list printed as Python (``df.to_dict()``, ``df.to_json()`` as the cell's value).

    The text is parsed, never run: only literals, missing-value names and numpy's or pandas'
    wrappers around a single literal are read.
    """
    text = text.strip()
    if not text or len(text) > MAX_LITERAL or text[0] + text[-1] not in ("{}", "[]", "''", '""'):
        return None
    try:
        value = _literal(ast.parse(text, mode="eval").body)
        if isinstance(value, str):
            value = json.loads(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    table = json_table(value, where)
    if table is not None:
        table.location = f"{where}, data table"
    return table


def output_text_tables(text: str, where: str) -> list[FoundTable]:
    """Tables in an output's text: a printed dict or list, else a printed frame or Series, else CSV."""
    if (table := literal_table(text, where)) is not None:
        return [table]
    return text_tables(text, where) or csv_tables(text, where)


# -- widget state --


def widget_tables(state: dict, where: str) -> list[FoundTable]:
    """Tables held in saved widget state: HTML values (HTML, Output widgets) and JSON data grids."""
    found: list[FoundTable] = []

    def walk(value, path: str, depth: int) -> None:
        if depth > 8:
            return
        if isinstance(value, str):
            if "<table" in value.lower():
                found.extend(html_tables(value, path)[0])
            elif "|" in value:
                found.extend(markdown_tables(value, path))
            return
        if isinstance(value, (dict, list)):
            table = json_table(value, path) if isinstance(value, dict) or len(value) > 1 else None
            if table and len(table.rows) > 1 and len(table.rows[0]) > 1:
                found.append(table)
                return
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                walk(v, f"{path} {str(k)[:40]}" if depth < 3 else path, depth + 1)

    for model_id, model in (state.get("state") or {}).items() if isinstance(state, dict) else []:
        if isinstance(model, dict):
            walk(model.get("state"), f"{where}, model {str(model_id)[:60]}", 0)
    return found
