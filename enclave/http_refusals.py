"""A refusal answered over HTTP with a stable code: the one class the hub and its services (the export
review service, the audit service) raise for an answer a person reads (issue #17).

:class:`HTTPRefusal` is a tornado ``HTTPError`` carrying an :class:`enclave.i18n.Message`: its English
text is the error's message (logs, JupyterHub's REST API), its code and its text in the reader's
language are what a page or a JSON answer shows. :mod:`enclave.refusals` is the service layer's
counterpart, free of tornado for the command line; this module imports only tornado's ``web``, which
every process that answers HTTP has loaded already.
"""

from __future__ import annotations

from tornado import web

from .i18n import Message


class HTTPRefusal(web.HTTPError):
    """An HTTP answer ``status`` refused with ``message`` (a code, an English text, its params)."""

    def __init__(self, status: int, message: Message) -> None:
        super().__init__(status, "%s", str(message))
        self.message = message

    @property
    def enclave_message(self) -> Message:
        """The message, under the name the hub's templates read (``enclave/templates/error.html``):
        on JupyterHub's pages ``exception.message`` may be a :class:`jupyterhub.spawner.SpawnException`'s
        plain text."""
        return self.message
