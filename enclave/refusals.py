"""The service layer's refusals, with stable codes at their source (issue #17).

Every error the hub side raises for a person to read (an unknown workspace, a disabled account, an
invalid limit) is a :class:`Refusal`: a :class:`enclave.i18n.Message` (a stable dotted ``code``, an
English text marked with :func:`~enclave.i18n.N_` where it is raised, the ``params`` that fill its
``%(name)s`` placeholders) kept as ``exc.message``. ``str(exc)`` is the English text, as logs, audit
records and the JSON APIs' ``error`` read it; whoever shows it to a person renders the message in
their language (:meth:`Refusal.render`), and whoever decides on it (a 404 or a 409, a test) reads
the code, never the English::

    raise WorkspaceError("workspace.unknown", N_("no workspace named '%(workspace)s'"), workspace=name)
"""

from __future__ import annotations

from .i18n import Message


class Refusal(Exception):
    """An operation that cannot be done, with its reason as a message with a stable code."""

    def __init__(self, code: str, text: str, /, **params) -> None:
        self.message = Message(code, text, params)
        super().__init__(str(self.message))

    @classmethod
    def from_refusal(cls, refusal: Refusal) -> Refusal:
        """Another part's refusal, raised as this class: the same code, text and params."""
        return cls(refusal.code, refusal.message.text, **refusal.message.params)

    @property
    def code(self) -> str:
        return self.message.code

    @property
    def params(self) -> dict:
        return dict(self.message.params)

    def render(self, locale: str = "en") -> str:
        """The reason in ``locale``."""
        return self.message.render(locale)
