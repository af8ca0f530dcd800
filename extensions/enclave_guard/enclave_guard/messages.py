"""The guard's refusals and notices, with stable codes, in the operator's language.

Each is a :class:`Message`: a stable ``code`` (``guard.upload_too_large``) that logs, audit records
and tests rely on, an English text marked with :func:`N_` (``%(name)s`` placeholders, ``%%`` for a
percent sign) and the ``params`` that fill it. A refusal is a :class:`.refusals.Refusal`, an HTTP
error whose JSON body is ``{"message": <text in the operator's language>, "code": ..., "params": ...}``.
(This module imports no web framework: the terminal relay, a small program of its own, uses it too.)

The text is translated here, on the server, not in the lab extension: JupyterLab's own dialogs
(opening and saving a file, the file browser's uploads, starting a kernel) show the server's
``message`` as they receive it, and kernel and terminal output carry the notices as text. The
translations are the guard's one catalogue, ``locale/<locale>/LC_MESSAGES/enclave_guard.json``, the
one the lab extension loads too (``tests/guard/test_lab_chinese.py`` keeps it complete for both).

The operator's language is the display language the hub gave JupyterLab in its application
settings (``overrides.json`` in ``LabApp.app_settings_dir``, a read-only file outside the home:
``enclave.spawner``), read once when the guard loads (:func:`set_locale_from_lab`): JupyterLab and
the guard then speak the same language, chosen from the person's stored choice, until the next start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

DOMAIN = "enclave_guard"
LOCALE_DIR = Path(__file__).parent / "locale"
SOURCE_LOCALE = "en"
# The locales the guard has a catalogue for (English is the source), as JupyterLab names them.
LOCALES = (SOURCE_LOCALE, "zh_CN")
# JupyterLab's setting of the display language, in its overrides.json.
LAB_TRANSLATION_PLUGIN = "@jupyterlab/translation-extension:plugin"

_current = {"locale": SOURCE_LOCALE}


def N_(text: str) -> str:
    """Marks ``text`` for translation where it is written; it is translated where it is shown."""
    return text


@cache
def catalogue(locale: str) -> dict[str, str]:
    """msgid → translation of a locale's catalogue (JupyterLab's JSON: a list of forms per msgid)."""
    if locale == SOURCE_LOCALE:
        return {}
    path = LOCALE_DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {msgid: forms[0] for msgid, forms in doc.items() if msgid and isinstance(forms, list) and forms and forms[0]}


def current_locale() -> str:
    return _current["locale"]


def set_locale(locale: str) -> None:
    if locale not in LOCALES:
        raise ValueError(f"the guard has no catalogue for {locale!r}: it has {', '.join(LOCALES)}")
    _current["locale"] = locale


def lab_locale(app_settings_dir: str) -> str:
    """The display language in JupyterLab's ``overrides.json`` under ``app_settings_dir``, when it is
    one the guard has (``zh_CN``, ``zh-CN``); else English."""
    try:
        with open(os.path.join(app_settings_dir, "overrides.json"), encoding="utf-8") as f:
            overrides = json.load(f)
        chosen = overrides[LAB_TRANSLATION_PLUGIN]["locale"]
    except (OSError, ValueError, KeyError, TypeError):
        return SOURCE_LOCALE
    chosen = str(chosen).replace("-", "_")
    return chosen if chosen in LOCALES else ("zh_CN" if chosen.lower().startswith("zh") else SOURCE_LOCALE)


def set_locale_from_lab(serverapp) -> str:
    """Take the operator's language from JupyterLab's application settings (see the module's docstring)."""
    labs = serverapp.extension_manager.extension_apps.get("jupyterlab", set())
    locale = next((lab_locale(app.app_settings_dir) for app in labs), SOURCE_LOCALE)
    set_locale(locale)
    return locale


@dataclass(frozen=True)
class Message:
    """A message to the operator: a stable ``code``, an English ``text`` and the ``params`` that fill
    it (a param may be a message itself, shown in the same language). ``str()`` is the English text;
    :meth:`render` is the text in a locale (the operator's)."""

    code: str
    text: str
    params: Mapping = field(default_factory=dict)

    def render(self, locale: str | None = None) -> str:
        locale = locale or current_locale()
        values = {k: v.render(locale) if isinstance(v, Message) else v for k, v in self.params.items()}
        text = catalogue(locale).get(self.text, self.text)
        try:
            return text % values
        except (KeyError, TypeError, ValueError):  # a translation whose placeholders differ: the English
            return self.text % values

    def __str__(self) -> str:
        return self.render(SOURCE_LOCALE)

    def params_json(self) -> dict:
        """The params as JSON: a message among them as its own ``{"message", "code", "params"}``."""
        return {k: v.as_json() if isinstance(v, Message) else v for k, v in self.params.items()}

    def as_json(self) -> dict:
        """The message as the guard's JSON answers carry it."""
        return {"message": self.render(), "code": self.code, "params": self.params_json()}
