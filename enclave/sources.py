"""Sources and their data holders: a release ``<source>@<version>`` belongs to its source's holder,
who alone consents to its attachment to a workspace (:func:`enclave.workspaces.consent`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from . import db
from .i18n import N_
from .refusals import Refusal
from .settings import Settings

SOURCE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")


class SourceError(Refusal):
    """A source that cannot be registered or handed over, with the reason (a stable code and its text)."""


@dataclass(frozen=True)
class SourceView:
    name: str
    holder: str
    registered_at: datetime

    def describe(self) -> dict:
        return {"name": self.name, "holder": self.holder}


def source_of(release: str) -> str:
    """The source a release was made from: its name before ``@``."""
    return release.partition("@")[0]


def set_holder(settings: Settings, source: str, holder: str, record=None, *, session=None) -> SourceView:
    """Register ``source`` as ``holder``'s, or hand it to ``holder``. Workspaces that use the source's
    releases keep them; new attachments are the new holder's to consent to."""
    if not SOURCE_NAME.match(source):
        raise SourceError("source.bad_name", N_("'%(source)s' is not a source name (lower-case letters, digits, '_', '.', '-')"),
                          source=source)
    with db.transaction(settings.enclave_db_url, session) as s:
        account = s.get(db.Account, holder)
        if account is None:
            raise SourceError("account.unknown", N_("no account named '%(account)s'"), account=holder)
        if "holder" not in account.role_names:
            raise SourceError("source.holder_lacks_role", N_(
                "'%(account)s' cannot hold sources: the account does not hold the holder role"), account=holder)
        row = s.get(db.Source, source, with_for_update=True)
        before = row.holder if row is not None else None
        if before == holder:
            return SourceView(row.name, row.holder, row.registered_at)
        if row is None:
            row = db.Source(name=source, holder=holder)
            s.add(row)
        else:
            row.holder = holder
        s.flush()
        if record is not None:
            record("source.holder_set", detail={"source": source, "user": holder,
                                                **({"before": before} if before else {})})
        return SourceView(row.name, row.holder, row.registered_at)


def holder_of(settings: Settings, release: str, session=None) -> str | None:
    with db.snapshot(settings.enclave_db_url, session) as s:
        row = s.get(db.Source, source_of(release))
        return row.holder if row is not None else None


def all_sources(settings: Settings, session=None) -> list[SourceView]:
    with db.snapshot(settings.enclave_db_url, session) as s:
        return [SourceView(r.name, r.holder, r.registered_at)
                for r in s.scalars(select(db.Source).order_by(db.Source.name))]
