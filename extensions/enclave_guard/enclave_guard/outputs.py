"""Output policy: which MIME types reach the browser, sanitised HTML, and byte budgets.

Used on the live kernel channel (``kernel_channel``) and on notebooks the contents API saves or
returns (``contents``), so a notebook cannot carry more than its cells could have shown.
"""

from __future__ import annotations

import json
from collections import OrderedDict

import nh3

from .messages import N_, Message
from .policy import HTML_ATTRIBUTES, HTML_TAGS, OUTPUT_MIME_ALLOWED


def notice(reason: Message) -> str:
    """What shows in place of withheld output: why, in the operator's language."""
    return Message("guard.output.withheld", N_("[Enclave: output withheld: %(reason)s]"), {"reason": reason}).render()


def over_budget(budget: "OutputBudget") -> Message:
    return Message("guard.output.over_budget",
                   N_("over the output budget (%(message_kib)s KiB per message, %(cell_kib)s KiB per cell)"),
                   {"message_kib": budget.per_message // 1024, "cell_kib": budget.per_cell // 1024})


def type_not_allowed(removed: list[str]) -> Message:
    return Message("guard.output.type_not_allowed", N_("type not allowed: %(types)s"), {"types": ", ".join(removed)})


def sanitise_html(html: str) -> str:
    return nh3.clean(
        html,
        tags=set(HTML_TAGS),
        attributes={k: set(v) for k, v in HTML_ATTRIBUTES.items()},
        url_schemes=set(),
        link_rel=None,
        strip_comments=True,
    )


def _text(value) -> str:
    # nbformat allows multi-line strings as lists of lines.
    return "".join(value) if isinstance(value, list) else value


def filter_bundle(data: dict, metadata: dict | None = None) -> tuple[dict, dict, list[str]]:
    """Keep allowed MIME types, sanitise HTML; return (data, metadata, removed types)."""
    kept, removed = {}, []
    for mime, value in data.items():
        if mime not in OUTPUT_MIME_ALLOWED:
            removed.append(mime)
        elif mime == "text/html":
            kept[mime] = sanitise_html(_text(value))
        else:
            kept[mime] = value
    meta = {k: v for k, v in (metadata or {}).items() if k not in removed}
    return kept, meta, removed


def bundle_size(data: dict) -> int:
    return sum(len(_text(v)) if isinstance(v, (str, list)) else len(json.dumps(v)) for v in data.values())


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit]


class OutputBudget:
    """Bytes already shown per execution (keyed by the request's msg_id), bounded in memory."""

    def __init__(self, per_message: int, per_cell: int, remembered: int = 512):
        self.per_message = per_message
        self.per_cell = per_cell
        self._used: OrderedDict[str, int] = OrderedDict()
        self._remembered = remembered
        self._noticed: set[str] = set()

    def allowance(self, key: str, reserve: int = 0) -> int:
        """How many bytes the next message of this execution may show, leaving ``reserve`` bytes of
        the execution's budget unspent."""
        return max(0, min(self.per_message, self.per_cell - reserve - self._used.get(key, 0)))

    def spend(self, key: str, size: int) -> None:
        self._used[key] = self._used.get(key, 0) + size
        self._used.move_to_end(key)
        while len(self._used) > self._remembered:
            old, _ = self._used.popitem(last=False)
            self._noticed.discard(old)

    def first_notice(self, key: str) -> bool:
        """True once per execution: the first time something of it is withheld."""
        if key in self._noticed:
            return False
        self._noticed.add(key)
        return True


def limit_output(msg_type: str, content: dict, budget: OutputBudget, key: str) -> dict | None:
    """Apply the MIME policy and the budget to one output's content.

    Returns the content to show (possibly trimmed, or replaced by a notice), or None when the
    execution's budget is spent and its notice was already shown.
    """
    over = over_budget(budget)
    if msg_type == "stream":
        text = _text(content.get("text", ""))
        room = budget.allowance(key)
        if len(text) <= room:
            budget.spend(key, len(text))
            return content
        budget.spend(key, room)
        if room == 0 and not budget.first_notice(key):
            return None
        return {**content, "text": truncate(text, room) + "\n" + notice(over) + "\n"}

    if msg_type in ("display_data", "execute_result", "update_display_data"):
        data, meta, removed = filter_bundle(content.get("data", {}), content.get("metadata"))
        size = bundle_size(data)
        room = budget.allowance(key)
        if data and size <= room:
            budget.spend(key, size)
            return {**content, "data": data, "metadata": meta}
        if size > room:
            budget.spend(key, room)
            if room == 0 and not budget.first_notice(key):
                return None
            reason = over
        else:
            reason = type_not_allowed(removed)
        return {**content, "data": {"text/plain": notice(reason)}, "metadata": {}}

    if msg_type == "error":
        room = budget.allowance(key)
        evalue = truncate(content.get("evalue", ""), room)
        room -= len(evalue)
        lines = []
        for line in content.get("traceback", []):
            if len(line) > room:
                lines.append(notice(Message("guard.output.traceback_over_budget", N_("traceback %(over)s"),
                                            {"over": over})))
                break
            lines.append(line)
            room -= len(line)
        budget.spend(key, len(evalue) + sum(len(x) for x in lines))
        return {**content, "evalue": evalue, "traceback": lines}

    return content


def limit_notebook(nb: dict, per_message: int, per_cell: int) -> dict:
    """Apply the output policy to every code cell of a notebook (nbformat 4 dict), in place.

    Cell attachments (files embedded in Markdown cells) are removed: they are files by another name.
    """
    for index, cell in enumerate(nb.get("cells", [])):
        cell.pop("attachments", None)
        if cell.get("cell_type") != "code":
            continue
        budget = OutputBudget(per_message, per_cell)
        kept = []
        for output in cell.get("outputs", []):
            kind = output.get("output_type")
            if kind not in ("stream", "display_data", "execute_result", "error"):
                continue
            shown = limit_output(kind, output, budget, str(index))
            if shown is not None:
                kept.append(shown)
        cell["outputs"] = kept
    return nb


def withhold_outputs(nb: dict, budget: int) -> dict:
    """Withhold code cells' outputs, the last cells' first, until the notebook as served fits in
    ``budget`` bytes (one read is one execution's output), in place. Each cell whose outputs are
    withheld shows a notice instead; its code is kept. What does not fit even so is the caller's
    to refuse."""
    cells = [c for c in nb.get("cells", []) if c.get("cell_type") == "code" and c.get("outputs")]
    size = len(json.dumps(nb, sort_keys=True).encode())
    while size > budget and cells:
        cell = cells.pop()
        before = len(json.dumps(cell["outputs"]).encode())
        cell["outputs"] = [{"output_type": "stream", "name": "stderr",
                            "text": notice(Message("guard.output.notebook_over_read", N_(
                                "this notebook is over the budget of one read; run the cell again"))) + "\n"}]
        size -= before - len(json.dumps(cell["outputs"]).encode())
    return nb
