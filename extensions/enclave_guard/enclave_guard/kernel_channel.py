"""The kernel websocket, guarded: every message between browser and kernel passes the policy.

Browser -> kernel: only the request types in ``policy.INCOMING_MESSAGES`` (no debugger, no comms);
``user_expressions`` are emptied (their results would come back outside the output budget); every
``execute_request`` is written to the audit trail; every request is remembered for its kernel
(``KnownRequests``), so that what the kernel sends back can be tied to it.

Kernel -> browser: only the message types in ``policy.OUTGOING_MESSAGES``; binary buffers are
dropped; outputs and replies pass the MIME allow-list and the HTML sanitiser. Then the budgets count
whole messages, every byte the kernel serialised (header, parent header, metadata, content), because
kernel code can write any of them: a message under a known request's id counts against that
request's budget on this connection and against the per-message budget; a message under any other
parent id (forged, or never sent through the guard) counts against the connection's budget, and
past it the connection is closed, with a notice on the latest execution's output and a record in
the audit trail. Over budget, output is dropped with one notice per execution (a stream shows what
fits first); a status or reply is replaced by a minimal valid one, never dropped, because JupyterLab
waits for every reply and for the "idle" that ends a request. Minimal messages are built by the
guard (fresh header, the request's own header as parent) so padded headers carry nothing; once the
request's budget is spent they count against the connection's budget too, so a kernel cannot repeat
them without end. Both websocket protocols (the legacy JSON one and ``v1.kernel.websocket.jupyter.org``)
pass through the same checks.

Last, what passes is charged to the operator's egress budget in the workspace (``egress``: rolling
hour and day, kept on the hub side). Past it, output is held (the request's first held output is
replaced by the reason) and statuses and replies go as their minimal stand-ins; the notice at 80 %
follows the output that crossed it, on stderr.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass

from jupyter_client import protocol_version
from jupyter_client.session import DELIM, Session
from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
)
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from traitlets import default

from . import policy
from .audit import RecordNotTaken
from .messages import N_, Message
from .outputs import OutputBudget, filter_bundle, notice, over_budget, type_not_allowed

V1 = "v1.kernel.websocket.jupyter.org"
# The header fields of the messaging protocol: what the guard keeps of a request's header.
HEADER_FIELDS = ("msg_id", "msg_type", "session", "username", "date", "version")
# Closing a websocket for breaking the policy (RFC 6455); JupyterLab then reconnects.
POLICY_VIOLATION = 1008


class KnownRequests:
    """The requests the browser sent one kernel through the guard: the newest
    ``policy.REMEMBERED_REQUESTS``, each as the browser's own header (standard fields only).

    Shared by all the kernel's connections: JupyterLab may open several (a notebook and its
    console), and a reconnected websocket receives the answers to requests sent through the one it
    replaces. The stored header is the parent header of every message the guard builds in answer.
    """

    def __init__(self):
        self._headers: OrderedDict[str, dict] = OrderedDict()
        self.latest_execution: dict | None = None

    def add(self, header: dict) -> None:
        msg_id = header.get("msg_id")
        if not isinstance(msg_id, str):
            return
        self._headers[msg_id] = {k: header[k] for k in HEADER_FIELDS if k in header}
        self._headers.move_to_end(msg_id)
        while len(self._headers) > policy.REMEMBERED_REQUESTS:
            self._headers.popitem(last=False)
        if header.get("msg_type") == "execute_request":
            self.latest_execution = self._headers[msg_id]

    def get(self, msg_id) -> dict | None:
        return self._headers.get(msg_id) if isinstance(msg_id, str) else None


class RecordingSession(Session):
    """A connection's session, which makes every request it sends the kernel a known request.

    Besides the browser's requests, jupyter_server sends its own ``kernel_info_request``s through
    it when a websocket opens (``nudge``); ipykernel attributes output from background threads to
    the latest request it received, so those must be known too, or a thread's prints would count
    against the connection's budget and close it.
    """

    known: KnownRequests

    def send(self, stream, msg_or_type, *args, **kwargs):
        msg = super().send(stream, msg_or_type, *args, **kwargs)
        self.known.add(msg["header"])
        return msg

    def send_raw(self, stream, msg_list, *args, **kwargs):
        self.known.add(self.unpack(msg_list[0]))
        super().send_raw(stream, msg_list, *args, **kwargs)


def _coded(message: Message) -> dict:
    """The metadata of an output the guard writes: its message's stable code and params, so that what
    reads the output need not read the text (which is in the operator's language)."""
    return {"enclave": {"code": message.code, "params": message.params_json()}}


def _size(parts: list[bytes]) -> int:
    return sum(len(p) for p in parts)


@dataclass
class Outgoing:
    """One message from the kernel on its way to the browser."""

    stream: object
    idents: list
    msg_type: str
    # Header, parent header, metadata and content, serialised (binary buffers are dropped).
    parts: list[bytes]
    # The kernel's own frames, while the parts are as it sent them (and it sent no buffers).
    wire: list | None

    @property
    def size(self) -> int:
        return _size(self.parts)

    def replace(self, parts: list[bytes]) -> None:
        self.parts, self.wire = parts, None


def _withheld_reply() -> str:
    """What stands in for a reply over the output budget (in the operator's language)."""
    return notice(Message("guard.output.reply_over_budget", N_("reply over the output budget")))


EXECUTION_STATES = ("starting", "idle", "busy", "restarting", "dead")


def _execution_count(value) -> int | None:
    """An execution count the page can show; anything else would be a place to hide data."""
    return value if isinstance(value, int) and 0 <= value < 2**31 else None


# The smallest valid stand-in for each status and reply, from the kernel's content. Only values
# from small fixed sets are kept (a state, a status, a flag, an execution count): nothing that
# could carry the withheld bytes.
MINIMAL_ANSWERS = {
    "status": lambda c: {
        "execution_state": c.get("execution_state") if c.get("execution_state") in EXECUTION_STATES else "idle"},
    "execute_reply": lambda c: {
        "status": c.get("status") if c.get("status") in ("ok", "error", "aborted") else "error",
        "execution_count": _execution_count(c.get("execution_count")), "user_expressions": {}, "payload": []},
    "inspect_reply": lambda c: {"status": "ok", "found": True, "data": {"text/plain": _withheld_reply()},
                                "metadata": {}},
    "complete_reply": lambda c: {"status": "ok", "matches": [], "cursor_start": 0, "cursor_end": 0, "metadata": {}},
    "history_reply": lambda c: {"status": "ok", "history": []},
    "is_complete_reply": lambda c: {"status": "unknown"},
    "comm_info_reply": lambda c: {"status": "ok", "comms": {}},
    "kernel_info_reply": lambda c: {
        "status": "ok", "protocol_version": protocol_version, "implementation": "", "implementation_version": "",
        "language_info": {"name": ""}, "banner": _withheld_reply(), "help_links": []},
    "shutdown_reply": lambda c: {"status": "ok", "restart": c.get("restart") is True},
    "interrupt_reply": lambda c: {"status": "ok"},
    "input_request": lambda c: {"prompt": _withheld_reply(), "password": c.get("password") is True},
}


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _filtered_output(content: dict) -> dict:
    data, metadata, removed = filter_bundle(_dict(content.get("data")), _dict(content.get("metadata")))
    if not data:
        data, metadata = {"text/plain": notice(type_not_allowed(removed))}, {}
    return {**content, "data": data, "metadata": metadata}


def _filtered_execute_reply(content: dict) -> dict:
    payload = content.get("payload") if isinstance(content.get("payload"), list) else []
    payload = [{**item, "data": filter_bundle(item["data"])[0]}
               if isinstance(item, dict) and isinstance(item.get("data"), dict) else item for item in payload]
    return {**content, "user_expressions": {}, "payload": payload}


def _filtered_inspect_reply(content: dict) -> dict:
    if not isinstance(content.get("data"), dict):
        return content
    data, metadata, _ = filter_bundle(content["data"], _dict(content.get("metadata")))
    return {**content, "data": data, "metadata": metadata}


# Messages that carry MIME bundles (or, for execute_reply, user_expressions), with the MIME policy
# for their content.
BUNDLE_CARRIERS = {
    "display_data": _filtered_output,
    "execute_result": _filtered_output,
    "update_display_data": _filtered_output,
    "execute_reply": _filtered_execute_reply,
    "inspect_reply": _filtered_inspect_reply,
}


class GuardedKernelConnection(ZMQChannelsWebsocketConnection):
    # Each kernel's known requests, shared by its connections (kernel id -> KnownRequests).
    _known_requests: dict[str, KnownRequests] = {}

    _requests: KnownRequests | None = None
    _executions: OutputBudget | None = None
    _other_requests: OutputBudget | None = None
    _message_max: int = 0
    _unattributed_max: int = 0
    _unattributed: int = 0
    _closed_by_guard: bool = False
    _notebook_path: str | None = None
    _holds_shown: set[str]

    @property
    def guard(self):
        return self.websocket_handler.settings.get("enclave_guard")

    @default("session")
    def _default_session(self):
        return RecordingSession(config=self.config)

    async def prepare(self):
        if self.guard is None:
            raise RuntimeError("the Enclave guard is not loaded; kernel connections are refused")
        known = GuardedKernelConnection._known_requests
        for kernel_id in [k for k in known if k not in self.multi_kernel_manager]:
            del known[kernel_id]  # shut down since
        # Before the first request: jupyter_server's own kernel_info_request, in prepare().
        self._requests = self.session.known = known.setdefault(self.kernel_id, KnownRequests())
        await super().prepare()
        settings = self.guard.workspace.guard
        # A request stays known while fewer than REMEMBERED_REQUESTS newer ones arrive, so at most
        # twice as many can be spent on meanwhile: a budget that remembers that many never forgets
        # a request that is still known (which would give it a fresh budget).
        remembered = 2 * policy.REMEMBERED_REQUESTS
        self._message_max = per_message = settings.output_message_max_bytes
        self._executions = OutputBudget(per_message, settings.output_cell_max_bytes, remembered)
        self._other_requests = OutputBudget(per_message, per_message, remembered)
        self._unattributed_max = settings.output_connection_max_bytes
        self._holds_shown = set()
        sessions = self.websocket_handler.settings["session_manager"]
        try:
            self._notebook_path = (await sessions.get_session(kernel_id=self.kernel_id))["path"]
        except Exception:  # a kernel without a session (started through /api/kernels)
            self._notebook_path = None

    # -- browser -> kernel ---------------------------------------------------------------------

    def handle_incoming_message(self, incoming_msg) -> None:
        if not self.channels:
            return
        if self.subprotocol == V1:
            channel, msg_list = deserialize_msg_from_ws_v1(incoming_msg)
            header = self.session.unpack(msg_list[0])
            msg = None
        else:
            msg = deserialize_binary_message(incoming_msg) if isinstance(incoming_msg, bytes) else json.loads(incoming_msg)
            channel = msg.pop("channel", None) or "shell"
            header = msg["header"]
            msg_list = None
        channel = channel or "shell"
        if channel not in self.channels:
            self.log.warning("Enclave guard: no such kernel channel %r", channel)
            return
        msg_type = header.get("msg_type")
        if msg_type not in policy.INCOMING_MESSAGES:
            self.log.warning("Enclave guard: refused %r from the browser to kernel %s", msg_type, self.kernel_id)
            return
        if msg_type == "execute_request":
            content = msg["content"] if msg is not None else self.session.unpack(msg_list[3])
            if content.get("user_expressions"):
                content["user_expressions"] = {}
                if msg_list is not None:
                    msg_list[3] = self.session.pack(content)
            try:
                self.guard.record_execution(kernel_id=self.kernel_id, msg_id=header.get("msg_id", ""),
                                            notebook=self._notebook_path, code=content.get("code", ""))
            except RecordNotTaken as exc:
                # Fail closed: code runs only as a recorded execution. The cell says why it did not.
                self.log.error("Enclave guard: execution held back, not recorded: %s", exc)
                self._held_back(header)
                return
        stream = self.channels[channel]  # sent through the RecordingSession: a known request from now on
        if msg_list is not None:
            self.session.send_raw(stream, msg_list[:4])
        else:
            msg["buffers"] = []
            self.session.send(stream, msg)

    def _egress_notice(self, channel: str, reason: str, used: int, budget: int) -> None:
        """An egress budget notice for the audit log. Only a record of what was held back: whether
        it is taken or not, nothing more reaches the browser."""
        detail = {"channel": channel, "used": used, "budget": budget, "reason": reason, "kernel": self.kernel_id}
        if self._notebook_path:
            detail["notebook"] = self._notebook_path
        try:
            self.guard.audit.write("egress.notice", **detail)
        except RecordNotTaken as exc:
            self.log.error("Enclave guard: egress notice not recorded: %s", exc)

    def _held_back(self, request: dict) -> None:
        """Answer an execute request the kernel never got: busy, the reason as an error, the reply,
        idle; JupyterLab ends the cell with the message shown."""
        parent = {k: request[k] for k in HEADER_FIELDS if k in request}
        reason = Message("guard.kernel.execution_not_recorded", N_(
            "Enclave held this cell back: the audit log cannot record it, and code runs only as a recorded"
            " execution. Nothing was run; try again in a moment.")).render()
        error = {"ename": "ExecutionNotRecorded", "evalue": reason, "traceback": [reason]}
        iopub, shell = self.channels.get("iopub"), self.channels.get("shell")
        for stream, msg_type, content in (
            (iopub, "status", {"execution_state": "busy"}),
            (iopub, "error", error),
            (shell, "execute_reply", {"status": "error", "execution_count": None, **error}),
            (iopub, "status", {"execution_state": "idle"}),
        ):
            if stream is not None:
                self._send(Outgoing(stream, [], msg_type, self._rebuilt(msg_type, parent, content), wire=None))

    # -- kernel -> browser ---------------------------------------------------------------------

    def handle_outgoing_message(self, stream, outgoing_msg) -> None:
        if self._closed_by_guard:
            return
        channel = stream if isinstance(stream, str) else getattr(stream, "channel", None)
        idents, parts = self.session.feed_identities(outgoing_msg)
        # parts: signature, header, parent header, metadata, content, buffers...
        msg_type = self._decode(parts[1]).get("msg_type") if len(parts) >= 5 else None
        if msg_type not in policy.OUTGOING_MESSAGES.get(channel, ()):
            self.log.debug("Enclave guard: dropped %r on %s from kernel %s", msg_type, channel, self.kernel_id)
            return
        msg = Outgoing(stream, idents, msg_type, parts[1:5], outgoing_msg if len(parts) == 5 else None)
        filtered = self._filtered_content(msg_type, msg.parts[3])
        if filtered is not None:
            msg.replace([*msg.parts[:3], filtered])
        request = self._requests.get(self._decode(msg.parts[1]).get("msg_id"))
        if request is None:
            self._pass_unattributed(msg)
        else:
            self._pass_within_budget(msg, request)

    def _pass_within_budget(self, msg: Outgoing, request: dict) -> None:
        """A message answering a known request: on that request's budget."""
        key = request["msg_id"]
        budget = self._executions if request.get("msg_type") in policy.EXECUTION_REQUESTS else self._other_requests
        if msg.msg_type in policy.NEVER_DROPPED:
            if msg.size > budget.allowance(key):
                msg.replace(self._minimal_answer(msg, request))
                # Beyond the request's budget even so: on the connection's, so that a kernel cannot
                # repeat stand-ins without end.
                if msg.size > budget.allowance(key) and not self._within_connection_budget(msg.size):
                    return
            budget.spend(key, msg.size)
            self._send_charged(msg, request)
            return
        # Output leaves room in the budget for the reply and status messages that end the request.
        room = budget.allowance(key, reserve=min(policy.ANSWER_RESERVE_BYTES, budget.per_cell // 4))
        if msg.size > room:
            shown = self._withheld_output(msg, request, room, budget)
            if shown is None:
                return
            msg.replace(shown)
        budget.spend(key, msg.size)
        self._send_charged(msg, request)

    def _withheld_output(self, msg: Outgoing, request: dict, room: int, budget: OutputBudget) -> list[bytes] | None:
        """What shows of an output over budget: a stream's text cut to what fits, with the notice;
        of any other output, the notice alone, once per request; or nothing."""
        over = over_budget(budget)
        tail = "\n" + notice(over) + "\n"
        content = self._decode(msg.parts[3]) if msg.msg_type == "stream" else {}
        name = content.get("name") if content.get("name") in ("stdout", "stderr") else "stderr"
        text = content.get("text") if isinstance(content.get("text"), str) else ""
        header = self._header("stream")
        notice_only = self._rebuilt("stream", request, {"name": name, "text": tail}, header)
        keep = room - _size(notice_only)
        first = budget.first_notice(request["msg_id"])
        if first:
            self._egress_notice("kernel_output", str(over), budget.per_cell - room, budget.per_cell)
        if not (text and keep > 0):
            return notice_only if first else None
        shown = self._rebuilt("stream", request, {"name": name, "text": text[:keep] + tail}, header)
        # Every character takes at least one byte once encoded: cutting as many more as the excess fits.
        excess = _size(shown) - room
        if excess > 0:
            shown = self._rebuilt("stream", request, {"name": name, "text": text[:max(0, keep - excess)] + tail}, header)
        return shown

    def _pass_unattributed(self, msg: Outgoing) -> None:
        """A message under a parent id the browser never sent this kernel: on the connection's budget."""
        if msg.size > self._message_max:
            if msg.msg_type not in policy.NEVER_DROPPED:
                return
            msg.replace(self._minimal_answer(msg, {}))
        if self._within_connection_budget(msg.size):
            self._send_charged(msg, {})

    def _within_connection_budget(self, size: int) -> bool:
        """Count bytes that no request's budget holds; past the connection's budget, close it."""
        self._unattributed += size
        if self._unattributed <= self._unattributed_max:
            return True
        self._close_over_budget()
        return False

    def _close_over_budget(self) -> None:
        self._closed_by_guard = True
        budget_kib = self._unattributed_max // 1024
        reason = Message("guard.kernel.connection_over_budget",
                         N_("the kernel sent more than %(budget_kib)s KiB outside any request's budget"),
                         {"budget_kib": budget_kib})
        self.log.warning("Enclave guard: closed a websocket of kernel %s: %s", self.kernel_id, reason)
        self._egress_notice("kernel_connection", str(reason), self._unattributed, self._unattributed_max)
        latest = self._requests.latest_execution
        if latest is not None and "iopub" in self.channels:
            text = notice(Message("guard.kernel.connection_closed", N_("kernel connection closed: %(reason)s"),
                                  {"reason": reason})) + "\n"
            parts = self._rebuilt("stream", latest, {"name": "stderr", "text": text})
            self._send(Outgoing(self.channels["iopub"], [], "stream", parts, wire=None))
        self.websocket_handler.close(POLICY_VIOLATION, "Enclave guard: kernel output over the connection budget")

    def _send_charged(self, msg: Outgoing, request: dict) -> None:
        """Pass a message on within the operator's egress budget (``egress``). Past it, a status or
        reply still goes, as its minimal stand-in (JupyterLab waits for it); output is held, and the
        request's first held output is replaced by the reason. A notice the ledger gave follows the
        output that crossed its mark."""
        egress = self.guard.egress
        decision = egress.admit("kernel_output", msg.size)
        if not decision.allowed:
            if msg.msg_type in policy.NEVER_DROPPED:
                msg.replace(self._minimal_answer(msg, request))
                egress.spend("kernel_output", msg.size)
                self._send(msg)
            elif request and self._first_hold(request["msg_id"]):
                parts = self._rebuilt("stream", request, {"name": "stderr", "text": decision.held.render() + "\n"},
                                      metadata=_coded(decision.held))
                self._send(Outgoing(self.channels["iopub"], [], "stream", parts, wire=None))
            return
        self._send(msg)
        if request and msg.msg_type not in policy.NEVER_DROPPED and (notice := egress.take_notice()):
            parts = self._rebuilt("stream", request, {"name": "stderr", "text": notice.render() + "\n"},
                                  metadata=_coded(notice))
            self._send(Outgoing(self.channels["iopub"], [], "stream", parts, wire=None))

    def _first_hold(self, msg_id: str) -> bool:
        """True once per request: the first time its output is held for the egress budget."""
        if msg_id in self._holds_shown:
            return False
        if len(self._holds_shown) >= policy.REMEMBERED_REQUESTS:
            self._holds_shown.clear()
        self._holds_shown.add(msg_id)
        return True

    # -- message parts -------------------------------------------------------------------------

    def _decode(self, part: bytes) -> dict:
        """One part of a kernel message, or {} if it is not a JSON object (kernel code may send anything)."""
        try:
            value = self.session.unpack(part)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def _filtered_content(self, msg_type: str, content_part: bytes) -> bytes | None:
        """The content with the MIME policy applied, or None if the policy leaves it as it is."""
        if msg_type not in BUNDLE_CARRIERS:
            return None
        content = self._decode(content_part)
        filtered = BUNDLE_CARRIERS[msg_type](content)
        return None if filtered == content else self.session.pack(filtered)

    def _header(self, msg_type: str) -> bytes:
        return self.session.pack(self.session.msg_header(msg_type))

    def _rebuilt(self, msg_type: str, parent: dict, content: dict, header: bytes | None = None,
                 metadata: dict | None = None) -> list[bytes]:
        """A message of the guard's own making: a fresh header, the request's header as parent, no
        metadata but the guard's own (``metadata``). Nothing the kernel padded its own headers with
        comes along."""
        pack = self.session.pack
        return [header or self._header(msg_type), pack(parent), pack(metadata or {}), pack(content)]

    def _minimal_answer(self, msg: Outgoing, parent: dict) -> list[bytes]:
        return self._rebuilt(msg.msg_type, parent, MINIMAL_ANSWERS[msg.msg_type](self._decode(msg.parts[3])))

    def _send(self, msg: Outgoing) -> None:
        """Pass a message on: the kernel's own frames if nothing changed, else its parts, signed anew."""
        wire = msg.wire or [*msg.idents, DELIM, self.session.sign(msg.parts), *msg.parts]
        super().handle_outgoing_message(msg.stream, wire)

