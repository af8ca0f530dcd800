"""Refusals: HTTP errors whose JSON body carries the guard's stable code next to the message.

``{"message": <text in the operator's language>, "code": "guard.upload_too_large", "params": {...},
"reason": "Refused by Enclave"}``: JupyterLab shows ``message``; scripts and tests rely on ``code``.
"""

from __future__ import annotations

import json

from tornado import web

from .messages import Message


class Refusal(web.HTTPError):
    """A request the guard refuses: its status and a :class:`Message`. The error's text
    (``log_message``, which JupyterLab shows) is the message in the operator's language."""

    def __init__(self, status: int, code: str, text: str, reason: str = "Refused by Enclave", **params):
        self.message = Message(code, text, params)
        # Without arguments: tornado takes the text as it is (its log_message doubles a '%' in it, so
        # the JSON body is made from the message itself: error_body).
        super().__init__(status, self.message.render(), reason=reason)

    @classmethod
    def of(cls, status: int, message: Message, reason: str = "Refused by Enclave") -> "Refusal":
        return cls(status, message.code, message.text, reason=reason, **message.params)


def error_body(exc, fallback: str) -> dict:
    """The JSON body of an error answer: ``message`` (in the operator's language), and for a refusal
    of the guard's its ``code`` and ``params``; ``reason`` as JupyterLab's handlers give it."""
    if isinstance(exc, Refusal):
        return {**exc.message.as_json(), "reason": exc.reason}
    message = getattr(exc, "log_message", None)
    if message:
        # The message a tornado HTTPError was raised with, as written (tornado keeps a format string:
        # read as it is, a message without arguments would show every '%' doubled).
        message = message % getattr(exc, "args", ())
    return {"message": message or fallback, "reason": getattr(exc, "reason", None)}


class CodedErrors:
    """Mixin for jupyter_server's API handlers (contents, sessions, kernels): their error answers
    carry the guard's ``code`` and ``params`` next to the ``message``."""

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if not isinstance(exc, Refusal):
            return super().write_error(status_code, **kwargs)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(error_body(exc, self._reason)))
