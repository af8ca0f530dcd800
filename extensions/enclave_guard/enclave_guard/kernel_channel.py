"""The kernel websocket, guarded: every message between browser and kernel passes the policy.

Browser -> kernel: only the request types in ``policy.INCOMING_MESSAGES`` (no debugger, no comms);
``user_expressions`` are emptied (their results would come back outside the output budget); every
``execute_request`` is written to the audit trail.

Kernel -> browser: only the message types in ``policy.OUTGOING_MESSAGES``; binary buffers are
dropped; outputs pass the MIME allow-list, the HTML sanitiser and the per-message and per-execution
budgets; replies are held to the per-message budget. Both websocket protocols (the legacy JSON one
and ``v1.kernel.websocket.jupyter.org``) pass through the same checks.
"""

from __future__ import annotations

import json

from jupyter_client.session import DELIM
from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
)
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

from . import policy
from .outputs import OutputBudget, filter_bundle, limit_output, notice

V1 = "v1.kernel.websocket.jupyter.org"


class GuardedKernelConnection(ZMQChannelsWebsocketConnection):
    _budget: OutputBudget | None = None
    _notebook_path: str | None = None

    @property
    def guard(self):
        return self.websocket_handler.settings.get("enclave_guard")

    async def prepare(self):
        if self.guard is None:
            raise RuntimeError("the Enclave guard is not loaded; kernel connections are refused")
        await super().prepare()
        settings = self.guard.workspace.guard
        self._budget = OutputBudget(settings.output_message_max_bytes, settings.output_cell_max_bytes)
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
            user = self.websocket_handler.current_user
            self.guard.record_execution(
                user=getattr(user, "username", str(user)),
                kernel_id=self.kernel_id,
                msg_id=header.get("msg_id", ""),
                notebook=self._notebook_path,
                code=content.get("code", ""),
            )
        stream = self.channels[channel]
        if msg_list is not None:
            self.session.send_raw(stream, msg_list[:4])
        else:
            msg["buffers"] = []
            self.session.send(stream, msg)

    # -- kernel -> browser ---------------------------------------------------------------------

    def handle_outgoing_message(self, stream, outgoing_msg) -> None:
        channel = stream if isinstance(stream, str) else getattr(stream, "channel", None)
        idents, parts = self.session.feed_identities(outgoing_msg)
        # parts: signature, header, parent header, metadata, content, buffers...
        header = self.session.unpack(parts[1])
        msg_type = header.get("msg_type")
        if msg_type not in policy.OUTGOING_MESSAGES.get(channel, ()):
            self.log.debug("Enclave guard: dropped %r on %s from kernel %s", msg_type, channel, self.kernel_id)
            return
        guarded = self._guard(channel, msg_type, parts)
        if guarded is None:
            return
        if guarded is not _UNCHANGED:
            parts = [parts[0], parts[1], parts[2], parts[3], self.session.pack(guarded)]
        elif len(parts) > 5:
            parts = parts[:5]
        else:
            return super().handle_outgoing_message(stream, outgoing_msg)
        signature = self.session.sign(parts[1:5])
        return super().handle_outgoing_message(stream, [*idents, DELIM, signature, *parts[1:5]])

    def _guard(self, channel: str, msg_type: str, parts: list):
        """The content to send: _UNCHANGED, a replacement, or None to drop the message."""
        budget = self._budget
        raw_size = len(parts[4])
        if channel == "iopub" and msg_type in policy.BUDGETED_OUTPUTS:
            key = self.session.unpack(parts[2]).get("msg_id", "")
            if msg_type == "stream" and raw_size <= budget.allowance(key):
                budget.spend(key, raw_size)  # within budget: pass without decoding the text
                return _UNCHANGED
            return limit_output(msg_type, self.session.unpack(parts[4]), budget, key)
        if channel in ("shell", "stdin") and msg_type in ("execute_reply", "inspect_reply", "input_request"):
            content = self.session.unpack(parts[4])
            changed = self._filter_reply(msg_type, content)
            if len(json.dumps(content)) > budget.per_message:
                return self._withheld(msg_type, content)
            return content if changed else _UNCHANGED
        if raw_size > budget.per_message:
            return self._withheld(msg_type, self.session.unpack(parts[4]))
        return _UNCHANGED

    @staticmethod
    def _filter_reply(msg_type: str, content: dict) -> bool:
        """Apply the MIME policy to the bundles replies carry; True if anything changed."""
        changed = False
        if msg_type == "execute_reply":
            if content.get("user_expressions"):
                content["user_expressions"] = {}
                changed = True
            for item in content.get("payload", []):
                if isinstance(item.get("data"), dict):
                    item["data"], _, _ = filter_bundle(item["data"])
                    changed = True
        elif msg_type == "inspect_reply" and isinstance(content.get("data"), dict):
            content["data"], content["metadata"], _ = filter_bundle(content["data"], content.get("metadata"))
            changed = True
        return changed

    @staticmethod
    def _withheld(msg_type: str, content: dict) -> dict:
        reason = notice("reply over the output budget")
        if msg_type == "input_request":
            return {"prompt": reason, "password": bool(content.get("password"))}
        if msg_type == "inspect_reply":
            return {"status": "ok", "found": True, "data": {"text/plain": reason}, "metadata": {}}
        if msg_type == "complete_reply":
            return {"status": "ok", "matches": [], "cursor_start": content.get("cursor_start", 0),
                    "cursor_end": content.get("cursor_end", 0), "metadata": {}}
        if msg_type == "execute_reply":
            return {"status": content.get("status", "ok"), "execution_count": content.get("execution_count"),
                    "user_expressions": {}, "payload": []}
        return {"status": "error", "ename": "OutputWithheld", "evalue": reason, "traceback": []}


_UNCHANGED = object()
