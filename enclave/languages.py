"""The language each person reads Enclave in, stored by user name in Enclave's database.

The hub, the services and each user's servers live on different origins and share no cookie, so a
person's choice (made on the hub's home page, or set by an admin with ``enclave user set-language``)
is kept here, where every component reads it: :func:`language_of` gives it to
:func:`enclave.i18n.negotiate` as the ``preference``, which wins over the browser's
``Accept-Language``. With none stored, the browser's language is shown.

Preferences are keyed by user name, not by account: users of an identity provider have no Enclave
account but still choose a language.
"""

from __future__ import annotations

from . import db, i18n
from .i18n import N_
from .refusals import Refusal
from .settings import Settings

# JupyterHub's user names: an identity provider's may be longer than an Enclave account's.
MAX_USERNAME = 255


class LanguageError(Refusal, ValueError):
    """A language Enclave has no catalogue for, or a person who cannot have one; the message says which."""


def set_language(settings: Settings, user: str, language: str, record=None) -> None:
    """Store ``language`` (one of :data:`enclave.i18n.LOCALES`) as ``user``'s. ``record``: the audit
    log's (``account.language_set``), called before the change commits: a record the log does not
    take leaves the old choice. With Enclave's own accounts (the ``native`` authenticator), ``user``
    must have one."""
    if language not in i18n.LOCALES:
        raise LanguageError("language.unknown", N_("language must be one of %(languages)s (got %(language)s)"),
                            languages=", ".join(i18n.LOCALES), language=repr(language))
    if not user or len(user) > MAX_USERNAME:
        raise LanguageError("language.bad_user_name", N_("a user name is 1 to %(most)s characters (got %(length)s)"),
                            most=MAX_USERNAME, length=len(user))
    with db.transaction(settings.enclave_db_url) as s:
        if settings.hub.authenticator == "native" and s.get(db.Account, user) is None:
            raise LanguageError("account.unknown", N_("no account named '%(account)s'"), account=user)
        preference = s.get(db.LanguagePreference, user)
        if preference is None:
            s.add(db.LanguagePreference(username=user, language=language))
        else:
            preference.language = language
        s.flush()
        if record is not None:
            record("account.language_set", detail={"user": user, "language": language})


def language_of(settings: Settings, user: str) -> str | None:
    """The language ``user`` chose, or None when they have not chosen one."""
    with db.snapshot(settings.enclave_db_url) as s:
        preference = s.get(db.LanguagePreference, user)
        return preference.language if preference is not None else None
