"""The ``enclave`` command in its user's language: Simplified Chinese under a ``zh_CN`` locale
(``LANG=zh_CN.UTF-8``, ``LANGUAGE=zh_CN``...), else English, as :func:`enclave.i18n.locale_from_environment`
decides.

A command's error is a :class:`CommandError`: an :class:`enclave.i18n.Message` (a stable code, an
English text marked with :func:`N_`, its parameters), shown in the user's locale with its code next
to it, ``错误：不存在名为 'beta' 的工作空间 [workspace.unknown]`` / ``Error: no workspace named 'beta'
[workspace.unknown]``, so that scripts and logs can rely on the code whatever the language. The
provisioning service's refusals carry their code from where they are raised (the service layer's
:class:`enclave.refusals.Refusal`, through the service's JSON answer): the command shows their
message as it is (:class:`enclave.provisioning.client.ProvisioningError`).

Click's own texts (usage errors, ``Usage:``, ``Options``, ``Error: ...``) are written with the
standard library's ``gettext``, which reads compiled ``.mo`` files only; Enclave compiles its
catalogue in memory (see :mod:`enclave.i18n`). While a command runs in Chinese,
:func:`click_speaking` gives click's modules our catalogue's ``gettext`` and ``ngettext`` instead
(the names each of them imported from ``gettext``), and gives the originals back when it ends.
A plural of click's is chosen by English's rule and its form then translated on its own (Chinese
has one form: "1 argument" and "2 arguments" read alike). The texts of click we translate are
listed in :mod:`enclave.cli.click_texts`, so that they are extracted with ours and the catalogue
test keeps them translated.

Start-up stays fast for English (issue #13's budget): :mod:`enclave.i18n` imports Babel only to
read a catalogue, and an English run reads none (:meth:`enclave.i18n.Message.render` in English is
the text itself).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import click

from ..i18n import Message, locale_from_environment, translations

# Click's modules that translate with gettext, each under the names it imported.
_CLICK_MODULES = ("core", "decorators", "exceptions", "formatting", "parser", "termui", "types")


def command_locale() -> str:
    """The locale of the user running the command (:func:`enclave.i18n.locale_from_environment`)."""
    return locale_from_environment()


def render(message) -> str:
    """A message (anything with ``code`` and ``render(locale)``: an :class:`enclave.i18n.Message`,
    a contract's or a release's refusal) in the user's locale, its code next to its first line (the
    others, a refusal's problems, carry their own or are a declarative file's problems)."""
    first, newline, rest = message.render(command_locale()).partition("\n")
    return f"{first} [{message.code}]{newline}{rest}"


class CommandError(click.ClickException):
    """A command's error, as a message with a stable code: shown in the user's locale with its
    code; ``str()`` and ``.message`` are the English text (for logs and the audit log)."""

    def __init__(self, message) -> None:
        self.localised = message
        self.code = message.code
        super().__init__(str(message))

    def format_message(self) -> str:
        return render(self.localised)


def refusal(code: str, text: str, /, **params) -> CommandError:
    """The error ``code`` (``workspace.unknown``) with its English ``text``, marked with :func:`N_`
    where it is written, and the ``params`` that fill its ``%(name)s`` placeholders."""
    return CommandError(Message(code, text, params))


@contextlib.contextmanager
def click_speaking(locale: str) -> Iterator[None]:
    """Click's own texts in ``locale`` while the block runs (see the module's docstring)."""
    if locale == "en":
        yield
        return
    catalogue = translations(locale)

    def one_form(singular: str, plural: str, n: int) -> str:
        return catalogue.gettext(singular if n == 1 else plural)

    ours = {"_": catalogue.gettext, "ngettext": one_form}
    originals = [(module, name, getattr(module, name)) for module in (getattr(click, m) for m in _CLICK_MODULES)
                 for name in ours if hasattr(module, name)]
    for module, name, _ in originals:
        setattr(module, name, ours[name])
    try:
        yield
    finally:
        for module, name, original in originals:
            setattr(module, name, original)


class EnclaveGroup(click.Group):
    """The ``enclave`` command: runs in its user's language (click's usage errors included)."""

    def main(self, *args, **kwargs):
        # Click makes each command's --help option once and keeps it, its text in the language of
        # the run that made it: made again in this run's (a process that runs the command more
        # than once, as the tests do, may change language between runs).
        for command in _commands(self):
            command._help_option = None
        with click_speaking(command_locale()):
            return super().main(*args, **kwargs)


def _commands(command: click.Command) -> Iterator[click.Command]:
    yield command
    for sub in getattr(command, "commands", {}).values():
        yield from _commands(sub)


def usage_error(code: str, text: str, /, **params) -> click.UsageError:
    """A usage error (shown with the command's usage, exit status 2) with a code, as :func:`refusal`."""
    return click.UsageError(render(Message(code, text, params)))


def bad_parameter(code: str, text: str, param_hint: str, /, **params) -> click.BadParameter:
    """An option's or argument's value refused (``Invalid value for --reason: ...``), with a code."""
    return click.BadParameter(render(Message(code, text, params)), param_hint=param_hint)


def translated(text: str) -> str:
    """A text marked with :func:`N_` (a phrase put into a message, as "the account's expiry"), in
    the user's locale."""
    locale = command_locale()
    return text if locale == "en" else translations(locale).gettext(text)


def pgettext(context: str, text: str) -> str:
    """A short text whose meaning its ``context`` tells (``pgettext("doctor", "OK")``: a check that
    passed, not a button), in the user's locale; Babel extracts it with its context."""
    locale = command_locale()
    return text if locale == "en" else translations(locale).pgettext(context, text)
