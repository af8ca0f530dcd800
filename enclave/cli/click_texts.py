"""The texts of click (8.5) that the ``enclave`` command shows in Chinese: its usage errors, help
headings and the ``Error:`` line (:func:`enclave.cli.language.click_speaking`).

They are click's own msgids, exactly as click writes them (``{name!r}`` included), marked here so
that ``make catalogues`` extracts them with Enclave's texts and the catalogue test keeps their
translations; each form of a plural is a text of its own. ``tests/test_cli_chinese.py`` checks that
click still writes each of them, so that an upgrade of click that changes one is noticed.
"""

from __future__ import annotations

from ..i18n import N_

CLICK_TEXTS = (
    N_("Error: {message}"),
    N_("Usage:"),
    N_("Options"),
    N_("Commands"),
    N_("Show this message and exit."),
    N_("Try '{command} {option}' for help."),
    N_("Missing argument"),
    N_("Missing option"),
    N_("Missing parameter"),
    N_("Missing command."),
    N_("No such command {name!r}."),
    N_("No such option {name!r}."),
    N_("Did you mean {possibility}?"),
    N_("(Did you mean one of: {possibilities}?)"),
    N_("Invalid value: {message}"),
    N_("Invalid value for {param_hint}: {message}"),
    N_("{value!r} is not {choice}."),
    N_("{value!r} is not one of {choices}."),
    N_("{value!r} is not a valid {number_type}."),
    N_("{value} is not in the range {range}."),
    N_("Option {name!r} requires an argument."),
    N_("Option {name!r} requires {nargs} arguments."),
    N_("Option {name!r} does not take a value."),
    N_("Got unexpected extra argument ({args})"),
    N_("Got unexpected extra arguments ({args})"),
    N_("{name} {filename!r} does not exist."),
    N_("{name} {filename!r} is a directory."),
    N_("{name} {filename!r} is a file."),
    N_("file"),
    N_("directory"),
    N_("path"),
    N_("Aborted!"),
    N_("Do you want to continue?"),
    N_("default: {default}"),
    N_("required"),
)
