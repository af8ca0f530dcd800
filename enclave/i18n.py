"""Enclave in the reader's language: Simplified Chinese (``zh_CN``) or English (``en``, the source).

Texts are marked for translation with gettext: ``_("...")`` in Python, ``{{ _("...") }}`` and
``{% trans %}`` in Jinja2 templates (with ``jinja2.ext.i18n``, new-style gettext: placeholders are
``%(name)s``, filled and escaped by the call). ``babel.cfg`` says which files are extracted; the
catalogues are ``enclave/locale/<locale>/LC_MESSAGES/enclave.po``. ``make catalogues`` extracts the
texts into ``enclave/locale/enclave.pot`` and merges them into each ``.po`` (``pybabel extract`` and
``pybabel update``); ``tests/test_catalogues.py`` fails while a text has no Chinese translation or a
translation's placeholders differ from its source's.

Catalogues are compiled when first loaded, in memory, by Babel's own compiler (the code behind
``pybabel compile``: :func:`babel.messages.pofile.read_po` and :func:`babel.messages.mofile.write_mo`),
not to ``.mo`` files by a build step. What runs is then always the ``.po`` in the tree: an edited
translation shows on the next start of a service without a build to forget, no generated file can
go stale or be committed by mistake, and the tests check exactly what the services serve. The cost
is reading a few hundred messages once per process and locale (milliseconds). Fuzzy entries are
left out, as ``pybabel compile`` leaves them out.

Which language a person reads: :func:`negotiate` takes their stored preference first (the account's
choice, once the hub stores one), then the browser's ``Accept-Language``, then English. Every
Chinese tag (``zh``, ``zh-CN``, ``zh-Hans``, ``zh-TW``, …) gets Simplified Chinese, the one Chinese
Enclave has, which a reader of Traditional Chinese reads far more easily than English.

Messages that reach people from code (a check's reason, a refusal, a command's error) are
:class:`Message` values: a stable ``code`` that logs, APIs and tests rely on, and an English text
with ``%(name)s`` placeholders, marked with :func:`N_` where it is written and translated when
shown, in the reader's locale: a page's or an API caller's, or for a command
:func:`locale_from_environment` (``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES``, ``LANG``, as gettext
reads them).

Dates, numbers, sizes and lists follow the locale (:func:`format_datetime`, :func:`format_decimal`,
:func:`format_size`, :func:`format_list`); :func:`install` makes them Jinja2 filters
(``datetime``, ``decimal``, ``size``, ``format_list``) next to the gettext functions.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from gettext import GNUTranslations
from pathlib import Path
from typing import TYPE_CHECKING

from markupsafe import Markup, escape

# Babel and Jinja2 are imported where they are used: a command that shows nothing translated (the
# CLI in English) does not pay for them at start-up.
if TYPE_CHECKING:
    from jinja2 import Environment

DOMAIN = "enclave"
LOCALE_DIR = Path(__file__).parent / "locale"
# The language texts are written in, and the one shown when nothing else is asked for.
SOURCE_LOCALE = "en"
LOCALES = (SOURCE_LOCALE, "zh_CN")
# <html lang="..."> for each locale (BCP 47).
HTML_LANG = {"en": "en", "zh_CN": "zh-CN"}

# One language range of an Accept-Language header (RFC 9110, section 12.5.4): a tag and its weight.
_RANGE = re.compile(r"^\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([0-9.]+))?\s*$")


class UnknownLocale(ValueError):
    """A locale Enclave has no catalogue for."""


def N_(text: str) -> str:
    """Marks ``text`` for translation where it is written (``make catalogues`` extracts it); it is
    translated where it is shown, in the reader's locale."""
    return text


@dataclass(frozen=True)
class Message:
    """A message to a person: a stable ``code`` (``contract.unknown_role``), an English ``text``
    marked with :func:`N_` (``%(name)s`` placeholders) and the ``params`` that fill it.
    ``str()`` is the English text; :meth:`render` is the text in a locale."""

    code: str
    text: str
    params: Mapping = field(default_factory=dict)

    def render(self, locale: str = "en") -> str:
        # The texts are written in English: no catalogue is read for it.
        translated = self.text if _checked(locale) == SOURCE_LOCALE else translations(locale).gettext(self.text)
        return translated % dict(self.params) if self.params else translated

    def __str__(self) -> str:
        return self.render(SOURCE_LOCALE)


def supported(tag: str | None) -> str | None:
    """The locale of ours a language tag (``zh-CN``, ``zh_Hans``, ``en-GB``, …) asks for, or None."""
    if not tag:
        return None
    language = tag.replace("_", "-").split("-")[0].lower()
    if language == "zh":
        return "zh_CN"
    if language == "en":
        return "en"
    return None


def parse_accept_language(header: str | None) -> list[str]:
    """The language tags of an ``Accept-Language`` header, most wanted first (ranges with q=0 and
    ranges that do not parse are left out; equal weights keep the header's order)."""
    ranges = []
    for position, item in enumerate((header or "").split(",")):
        m = _RANGE.match(item)
        if not m:
            continue
        try:
            weight = float(m.group(2)) if m.group(2) is not None else 1.0
        except ValueError:
            continue
        if weight > 0:
            ranges.append((-weight, position, m.group(1)))
    return [tag for _, _, tag in sorted(ranges)]


def negotiate(accept_language: str | None, preference: str | None = None) -> str:
    """The locale to show a person: their stored ``preference`` when it is one of :data:`LOCALES`
    (the account's choice: it wins over the browser), else the first language of the browser's
    ``Accept-Language`` Enclave has, else English."""
    chosen = supported(preference)
    if chosen:
        return chosen
    for tag in parse_accept_language(accept_language):
        chosen = supported(tag)
        if chosen:
            return chosen
    return SOURCE_LOCALE


def locale_from_environment(environ: Mapping[str, str] | None = None) -> str:
    """The locale of a command's user, as gettext finds it: the first of ``LANGUAGE`` (a
    colon-separated list), ``LC_ALL``, ``LC_MESSAGES`` and ``LANG`` that is set; the first language
    of it Enclave has (``zh_CN.UTF-8``, ``zh``: Simplified Chinese), else English. The C and POSIX
    locales are English, and make gettext ignore ``LANGUAGE``, as GNU gettext does."""
    environ = os.environ if environ is None else environ
    chosen = next((environ[name] for name in ("LC_ALL", "LC_MESSAGES", "LANG") if environ.get(name)), "")
    if chosen.split(".")[0] in ("C", "POSIX"):
        return SOURCE_LOCALE
    for tag in [*environ.get("LANGUAGE", "").split(":"), chosen]:
        found = supported(tag.split(".")[0].split("@")[0])
        if found:
            return found
    return SOURCE_LOCALE


def _checked(locale: str) -> str:
    if locale not in LOCALES:
        raise UnknownLocale(f"no catalogue for the locale {locale!r}: Enclave has {', '.join(LOCALES)}")
    return locale


def catalogue_path(locale: str) -> Path:
    """The ``.po`` file of a locale."""
    return LOCALE_DIR / _checked(locale) / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def translations(locale: str) -> GNUTranslations:
    """The translations of a locale, its ``.po`` compiled in memory (see the module's docstring).
    English is the source language: its catalogue maps texts to themselves where it has them."""
    from babel.messages import mofile, pofile

    path = catalogue_path(locale)
    with path.open("rb") as f:
        catalog = pofile.read_po(f, locale=locale, domain=DOMAIN)
    compiled = io.BytesIO()
    mofile.write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return GNUTranslations(compiled)


def install(env: Environment, locale: str) -> Environment:
    """Give a Jinja2 environment (made with the ``jinja2.ext.i18n`` extension) the translations of
    ``locale``, new-style (``_("%(n)s files", n=3)``: placeholders are filled, and escaped, by the
    call), and the locale's formatters as filters: ``datetime``, ``decimal``, ``size`` and
    ``format_list``. The globals ``locale`` and ``html_lang`` name the language for the page.
    ``{% trans %}`` blocks are trimmed (whitespace collapsed), as ``babel.cfg`` extracts them."""
    env.install_gettext_translations(translations(_checked(locale)), newstyle=True)
    env.policies["ext.i18n.trimmed"] = True  # as babel.cfg extracts {% trans %} blocks
    env.filters["datetime"] = lambda value, format="medium": _datetime_or_text(value, locale, format)
    env.filters["decimal"] = lambda value: format_decimal(value, locale)
    env.filters["size"] = lambda value: format_size(value, locale)
    env.filters["format_list"] = lambda items: format_list(items, locale)
    env.globals.update(locale=locale, html_lang=HTML_LANG[locale])
    return env


def environment(locale: str, **options) -> Environment:
    """A Jinja2 environment in ``locale``: ``options`` as :class:`jinja2.Environment` takes them,
    with the i18n extension added and :func:`install` done."""
    from jinja2 import Environment

    extensions = [*options.pop("extensions", []), "jinja2.ext.i18n"]
    return install(Environment(extensions=extensions, **options), locale)


def _as_datetime(value: datetime | str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date and time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # Enclave stores UTC


def format_datetime(value: datetime | str | None, locale: str, format: str = "medium") -> str:
    """A date and time (a :class:`~datetime.datetime`, or ISO 8601 text as the APIs give it) as the
    locale writes it, in UTC and saying so: ``Nov 30, 2026, 7:59:00 PM UTC``,
    ``2026年11月30日 19:59:00 UTC``. A time without a zone is taken as UTC; None is ``""``."""
    if value is None or value == "":
        return ""
    from babel import dates

    return f"{dates.format_datetime(_as_datetime(value), format, tzinfo=UTC, locale=_checked(locale))} UTC"


def _datetime_or_text(value, locale: str, format: str) -> str:
    """The ``datetime`` filter: a time as :func:`format_datetime` writes it; a value that is no ISO
    8601 time (as a requester may declare in a file's provenance) as it is, not an error page."""
    try:
        return format_datetime(value, locale, format)
    except (TypeError, ValueError):
        return str(value)


def format_list(items, locale: str) -> Markup:
    """Items as the locale enumerates them, escaped for HTML (markup among them, as links, kept):
    ``a, b, and c``, ``a、b和c``."""
    from babel import lists

    return Markup(lists.format_list([str(escape(item)) for item in items], locale=_checked(locale)))


def format_decimal(value: int | float, locale: str) -> str:
    """A number as the locale writes it (grouping and decimal separators): ``12,345.6``."""
    from babel import numbers

    return numbers.format_decimal(value, locale=_checked(locale))


_SIZE_UNITS = ("digital-kilobyte", "digital-megabyte", "digital-gigabyte", "digital-terabyte")


def format_size(num_bytes: int, locale: str) -> str:
    """A size in bytes as the locale writes it, in decimal units with one decimal: ``812 bytes`` /
    ``812字节``, ``1.2 kB``, ``1.2 MB`` (CLDR's own unit names, which in Chinese are these symbols)."""
    from babel import units

    if num_bytes < 0:
        raise ValueError(f"a size cannot be negative: {num_bytes}")
    _checked(locale)
    if num_bytes < 1000:
        return units.format_unit(num_bytes, "digital-byte", length="long", locale=locale)
    value = float(num_bytes)
    for unit in _SIZE_UNITS:
        value /= 1000
        if round(value, 1) < 1000:
            break
    return units.format_unit(value, unit, length="short", format="#,##0.#", locale=locale)

