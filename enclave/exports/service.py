"""What the export review service does, independent of HTTP: every operation and every
authorisation decision. The web handlers only translate requests and errors.

Who someone is comes from JupyterHub (a user model with the scopes of the token used); what they
may do in a workspace comes from Enclave's database (its operators and reviewers). Requests are
read and written in single transactions; file snapshots go to the blob store first, so a crash
leaves at worst an unreferenced blob, removed at the next start.

Every change of an export request (a vote, a transition, new file versions, its release or
revocation) is one write transaction (:meth:`ExportService._writing`) that reads the request locked
(:meth:`ExportService._get` with ``for_update``) and decides from what it reads there, the
:data:`~enclave.exports.workflow.TRANSITIONS` guard included: changes of one request arriving
together are taken one after the other, each seeing the state the one before left.

Submissions and their checks, votes, decisions, releases, downloads and revocations are also
handed to the audit log (``export.*`` records, :meth:`ExportService._record`) inside their
transaction, before it commits: an operation the audit log does not take is rolled back (fail
closed). The service's own ``events`` table stays the history its pages show; the audit log is the
tamper-evident copy.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Iterator

from sqlalchemy import and_, case, false, func, or_, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from .. import workspaces
from ..audit.client import AuditClient, AuditUnavailable
from ..i18n import N_
from ..refusals import Refusal
from ..releases import release_dir
from ..settings import ExportSettings, Settings
from . import checks, files, release, signing, workflow
from .models import (AppointedReviewer, Database, DownloadLink, Event, ExportRequest, Comment, Release, RequestFile, Vote,
                     db_url, waited_too_long)
from .store import BlobStore, sha256

SCOPE_REQUEST = "custom:exports:request"
SCOPE_REVIEW = "custom:exports:review"
SCOPE_ADMIN = "custom:exports:admin"
# The audit log's name for this service (enclave.audit.actions.SOURCES).
AUDIT_SOURCE = "exports"
# A written reason (of a vote or a decision) is kept whole in the audit log, whose detail is capped
# at 64 KiB: this many characters fit, whatever the script.
MAX_REASON_CHARS = 5000
# Findings of one file's checks kept in its audit record, and the length of their reasons; the
# service keeps them all, whole.
MAX_AUDITED_FINDINGS = 20
MAX_AUDITED_REASON_CHARS = 200

log = logging.getLogger("enclave.exports")


class ExportError(Refusal):
    """A refusal of the export review service: a stable dotted code (``export.self_review``), the
    English text marked where it is raised, its params (``exc.message``), and the HTTP ``status``
    the answer takes. ``str(exc)`` is the English, as logs, audit records and the API's ``error``
    read it; the pages and the API's ``message`` show it in the reader's language."""

    status = 400


class BadInput(ExportError):
    status = 400


class Refused(ExportError):
    status = 403


class NotFound(ExportError):
    status = 404


class Conflict(ExportError):
    status = 409


class TooLarge(ExportError):
    status = 413


class Busy(ExportError):
    """Another change held the lock this one needs for longer than the database waits
    (:data:`~enclave.exports.models.LOCK_WAIT_SECONDS`); nothing was changed."""

    status = 503

    def __init__(self) -> None:
        super().__init__("export.busy", N_(
            "the export review service is busy with other changes; nothing was changed, try again"))


class NotRecorded(ExportError):
    """The audit log did not take the operation's record, so the operation was rolled back."""

    status = 503

    def __init__(self) -> None:
        super().__init__("export.not_recorded", N_("the audit log cannot record this; nothing was changed"))


@dataclass(frozen=True)
class Actor:
    """Someone acting on the service, as JupyterHub identified them for this request."""

    name: str
    scopes: frozenset[str]
    # Set only when the token is a sandbox server's: the one workspace it belongs to.
    workspace: str | None = None

    def _holds(self, scope: str) -> bool:
        return scope in self.scopes or f"{scope}!user={self.name}" in self.scopes

    @property
    def can_request(self) -> bool:
        return self._holds(SCOPE_REQUEST)

    @property
    def can_review(self) -> bool:
        return SCOPE_REVIEW in self.scopes

    @property
    def is_admin(self) -> bool:
        return SCOPE_ADMIN in self.scopes

    @classmethod
    def from_hub(cls, model: dict) -> "Actor":
        """From ``/hub/api/user``: the token's owner and scopes; the workspace from a server scope."""
        if model.get("kind", "user") != "user":
            raise Refused("export.not_a_user", N_("only users act on export requests"))
        name = model["name"]
        scopes = frozenset(model.get("scopes") or [])
        prefix = f"access:servers!server={name}/"
        servers = {s[len(prefix):] for s in scopes if s.startswith(prefix)}
        return cls(name=name, scopes=scopes, workspace=servers.pop() if len(servers) == 1 else None)


@dataclass
class Upload:
    name: str
    data: bytes
    # The SHA-256 the sender computed: a truncated or altered upload does not match it.
    declared_sha256: str | None = None
    provenance: dict = field(default_factory=dict)


def now() -> datetime:
    return datetime.now(UTC)


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat(timespec="seconds") if dt else None


# The refusals of a written text (a vote's or a decision's reason, a comment): (code, English text).
_NOT_TEXT = {"reason": ("export.reason_not_text", N_("a reason must be text")),
             "comment": ("export.comment_not_text", N_("a comment must be text"))}
_TOO_LONG = {"reason": ("export.reason_too_long", N_("a reason may be at most %(most)s characters; this one has %(chars)s")),
             "comment": ("export.comment_too_long", N_("a comment may be at most %(most)s characters; this one has %(chars)s"))}


def _reason(text, required: tuple[str, str] | None = None, what: str = "reason") -> str:
    """A written reason (or comment: ``what``), stripped; BadInput with ``required`` (its code and
    text) when it is missing and must be given. The web edge checks the same from the OpenAPI
    document; this holds for any other caller."""
    if text is not None and not isinstance(text, str):
        raise BadInput(*_NOT_TEXT[what])
    text = (text or "").strip()
    if required and not text:
        raise BadInput(*required)
    if len(text) > MAX_REASON_CHARS:
        raise BadInput(*_TOO_LONG[what], most=MAX_REASON_CHARS, chars=len(text))
    return text


def _audited_checks(findings: list[dict]) -> list[dict]:
    """A file's check findings as its audit record keeps them: which check, its status and reason,
    the worst first, a bounded number of them (a notebook can have hundreds) with their reasons cut
    short, so that the record stays well within the audit log's cap whatever the file holds. The
    full findings, with cells and locations, stay in the service's database and the manifest."""
    order = (checks.FAIL, checks.REVIEW, checks.PASS)
    worst_first = sorted(findings, key=lambda f: order.index(f["status"]))
    return [{"check": f["check"], "status": f["status"], **({"code": f["code"]} if f.get("code") else {}),
             "reason": f["reason"][:MAX_AUDITED_REASON_CHARS]}
            for f in worst_first[:MAX_AUDITED_FINDINGS]]


# Why a workspace that is not active (frozen or archived) takes no new request: (code, English text).
_NOT_TAKING = {
    "frozen": ("export.workspace_frozen", N_(
        "workspace %(workspace)s is frozen (%(reason)s): it takes no new export requests, file versions or"
        " resubmissions")),
    "archived": ("export.workspace_archived", N_(
        "workspace %(workspace)s is archived (%(reason)s): it takes no new export requests, file versions or"
        " resubmissions")),
}


class ExportService:
    def __init__(self, settings: Settings, database: Database | None = None) -> None:
        self.settings = settings
        self.cfg = settings.exports
        self.db = database or Database(db_url(settings))
        self.store = BlobStore(settings.home / "exports" / "store")
        self.key = signing.load_or_create_key(settings)
        self.key_id = signing.key_id(self.key.public_key())
        self.audit = AuditClient(settings)
        self._released: dict[tuple, checks.ReleasedIndex] = {}

    def close(self) -> None:
        self.audit.close()
        self.db.engine.dispose()

    # -- transactions --

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        """A write transaction (:meth:`Database.transaction`) whose database refusals are the service's errors.

        Changes of a request are serialised, so a unique constraint (one vote per reviewer per file
        version, one release per file) is only the last line of defence: should it still refuse a
        row, the caller gets a 409 and nothing was done. A lock not granted in time is a 503.
        """
        try:
            with self.db.transaction() as s:
                yield s
        except IntegrityError as exc:
            log.warning("a change refused by the database: %s", exc.orig)
            raise Conflict("export.concurrent_change", N_(
                "this conflicts with a change made at the same time; reload and try again")) from None
        except OperationalError as exc:
            if not waited_too_long(exc):
                raise
            log.warning("a change gave up waiting for a lock: %s", exc.orig)
            raise Busy() from None

    # -- the audit log --

    def _record(self, s, actor: str, action: str, workspace: str, **detail) -> None:
        """Hand one record of the operation in transaction ``s`` to the audit log, before ``s`` commits.

        The operation's rows are flushed first, so that what the database refuses (a second vote
        racing the first) fails before anything is recorded. If the audit service does not take the
        record, :class:`NotRecorded` rolls the whole operation back: nothing happens unrecorded. A
        crash between this append and the commit can leave a record of an operation that then did
        not happen, never the other way round.
        """
        s.flush()
        try:
            self.audit.append(AUDIT_SOURCE, actor, action, workspace=workspace, detail=detail)
        except AuditUnavailable as exc:
            log.error("%s by %s refused: %s", action, actor, exc)
            raise NotRecorded() from None

    def _record_check(self, s, actor: str, req: ExportRequest, f: RequestFile) -> None:
        self._record(s, actor, "export.check", req.workspace, request_id=req.id, file=f.name,
                     status=f.check_status, sha256=f.sha256, checks=_audited_checks(f.checks))

    # -- start-up --

    def recover(self) -> int:
        """Drop what an interrupted upload may have left in the store (never a committed file)."""
        with self.db.snapshot() as s:
            keep = set(s.scalars(select(RequestFile.sha256))) | set(s.scalars(select(Release.sha256)))
        return self.store.collect_garbage(keep)

    def settle(self) -> int:
        """Take the steps the votes already decide on open requests, each in a transaction of its own,
        named after the request's last voter: requests voted on under rules that left the decision to
        a reviewer's request-level step would otherwise wait for a step nobody can take. Run at start;
        returns how many requests moved. A request the audit log does not take stays as it was."""
        with self.db.snapshot() as s:
            open_ids = list(s.scalars(select(ExportRequest.id).where(
                ExportRequest.state.in_((workflow.SUBMITTED, workflow.IN_REVIEW)))))
        moved = 0
        for request_id in open_ids:
            with self._writing() as s:
                req = self._get(s, request_id, for_update=True)
                if workflow.automatic_step(req) is None:
                    continue
                last = max((v for f in req.current_files() for v in f.votes), key=lambda v: v.at)
                self._take_automatic_steps(s, req, Actor(last.reviewer, frozenset()))
                moved += 1
        return moved

    # -- workspaces and roles --

    def workspace(self, name: str) -> workspaces.WorkspaceView:
        try:
            return workspaces.get(self.settings, name)
        except workspaces.UnknownWorkspace:
            raise NotFound("export.unknown_workspace", N_("no workspace named %(workspace)s"), workspace=repr(name)) from None

    def may_review(self, actor: Actor, req: ExportRequest) -> bool:
        """Whether ``actor`` reviews ``req``: a sealed run's request by its appointed reviewers alone,
        any other by the workspace's reviewers."""
        if not actor.can_review:
            return False
        if req.origin == workflow.SEALED_RUN:
            return actor.name in {a.reviewer for a in req.appointed}
        return actor.name in self.workspace(req.workspace).reviewers

    def reviewed_workspaces(self, actor: Actor) -> list[str] | None:
        """Workspaces whose requests ``actor`` reviews (or some of them, as an appointed reviewer of
        sealed runs' requests); None means all (admins)."""
        if actor.is_admin:
            return None
        if not actor.can_review:
            return []
        with self.db.snapshot() as s:
            appointed = set(s.scalars(select(ExportRequest.workspace).join(AppointedReviewer).where(
                AppointedReviewer.reviewer == actor.name)))
        return sorted({w.name for w in workspaces.all_workspaces(self.settings) if actor.name in w.reviewers}
                      | appointed)

    def _reviewable_by(self, actor: Actor):
        """A condition on export requests: ``actor`` reviews it (see :meth:`may_review`)."""
        mine = [w.name for w in workspaces.all_workspaces(self.settings) if actor.name in w.reviewers]
        appointed = select(AppointedReviewer.request_id).where(AppointedReviewer.reviewer == actor.name)
        return or_(and_(ExportRequest.origin != workflow.SEALED_RUN, ExportRequest.workspace.in_(mine)),
                   and_(ExportRequest.origin == workflow.SEALED_RUN, ExportRequest.id.in_(appointed)))

    # -- policies --

    def policy(self, ws: workspaces.WorkspaceView) -> ExportSettings:
        """The workspace's export policy: [exports] with its overrides (set through provisioning,
        enclave.workspaces.set_export_policy). A request records the version it was made under."""
        return ws.effective_export_policy(self.cfg)

    # -- checks --

    def _released_index(self, ws: workspaces.WorkspaceView) -> checks.ReleasedIndex:
        folders = [(r, release_dir(self.settings, r) / "data") for r in ws.releases]
        stamp = tuple(
            (str(p), p.stat().st_mtime_ns, p.stat().st_size)
            for _, folder in folders if folder.is_dir() for p in sorted(folder.rglob("*.csv"))
        )
        if stamp not in self._released:
            self._released = {stamp: checks.ReleasedIndex.load(folders)}
        return self._released[stamp]

    def _thresholds(self, ws: workspaces.WorkspaceView) -> checks.Thresholds:
        c = self.policy(ws)
        return checks.Thresholds(c.max_csv_rows, c.min_cell_count, c.round_base, c.nk_n, c.nk_k, c.p_ratio)

    def _inspect(self, ws: workspaces.WorkspaceView, upload: Upload) -> files.Inspected:
        if upload.declared_sha256 is not None and sha256(upload.data) != upload.declared_sha256.lower():
            raise BadInput("export.upload_corrupted", N_(
                "upload of %(file)s is truncated or corrupted: %(size)s bytes received do not match the declared"
                " SHA-256"), file=repr(upload.name), size=len(upload.data))
        try:
            return files.inspect(upload.name, upload.data, self.policy(ws).max_file_mb * 2**20)
        except files.FileRejected as exc:
            raise (TooLarge if exc.code == files.OVER_CAP else BadInput).from_refusal(exc) from None

    def _check_all(self, ws: workspaces.WorkspaceView, inspected: list[files.Inspected]) -> list[list[dict]]:
        ctx = checks.Context(self._thresholds(ws), self._released_index(ws), checks.acro_outputs(inspected))
        return [checks.run_checks(f, ctx) for f in inspected]

    def sandbox_workspace(self, actor: Actor) -> workspaces.WorkspaceView:
        """The workspace ``actor`` may submit from: a sandbox server's token, an operator of it."""
        if not actor.can_request:
            raise Refused("export.scope_missing", N_("submitting exports needs the %(scope)s scope"), scope=SCOPE_REQUEST)
        if actor.workspace is None:
            raise Refused("export.not_a_sandbox_token", N_(
                "export requests are accepted only with a workspace sandbox's server token"))
        ws = self.workspace(actor.workspace)
        if actor.name not in ws.operators:
            raise Refused("export.not_an_operator", N_("%(user)s is not an operator of workspace %(workspace)s"),
                          user=actor.name, workspace=repr(ws.name))
        self._taking_requests(ws)
        return ws

    # -- the workspace's lifecycle (enclave.provisioning.lifecycle) --
    #
    # A frozen or archived workspace makes no new export request, no new file version and no
    # resubmission. Reviewers still decide what was asked for while a workspace is frozen: their
    # review is the safeguard itself, and the requests made before a workspace's end are reviewed
    # after it. Archiving is final, and nothing changes in an archived workspace but a revocation
    # (which only takes a release away): its open requests stay as they are.

    def _taking_requests(self, ws: workspaces.WorkspaceView) -> None:
        if ws.state != "active":
            raise Refused(*_NOT_TAKING[ws.state], workspace=repr(ws.name), reason=ws.state_reason)
        if ws.expires_at is not None and ws.expires_at <= now():
            raise Refused("export.workspace_expired", N_(
                "workspace %(workspace)s expired on %(expired)s: it takes no new export requests, file versions"
                " or resubmissions"), workspace=repr(ws.name), expired=_iso(ws.expires_at))

    def _not_archived(self, name: str) -> None:
        ws = self.workspace(name)
        if ws.state == "archived":
            raise Refused("export.archived_requests_final", N_(
                "workspace %(workspace)s is archived (%(reason)s): its export requests can no longer change"),
                workspace=repr(name), reason=ws.state_reason)

    def _uploads(self, ws: workspaces.WorkspaceView, uploads: list[Upload]) -> None:
        if not uploads:
            raise BadInput("export.no_files", N_("a request needs at least one file"))
        most = self.policy(ws).max_files_per_request
        if len(uploads) > most:
            raise BadInput("export.too_many_files", N_("at most %(most)s files per request"), most=most)
        names = [u.name for u in uploads]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise BadInput("export.duplicate_names", N_("file names must be unique in a request: %(names)s"),
                           names=", ".join(sorted(dupes)))
        for u in uploads:
            if not isinstance(u.provenance, dict):
                raise BadInput("export.bad_provenance", N_("provenance of %(file)s must be a JSON object"),
                               file=repr(u.name))

    def preflight(self, actor: Actor, uploads: list[Upload]) -> list[dict]:
        """The checks a request would get, without storing anything; bad files are reported, not raised."""
        ws = self.sandbox_workspace(actor)
        self._uploads(ws, uploads)
        results, good = [], []
        for u in uploads:
            try:
                good.append(self._inspect(ws, u))
                results.append(None)
            except ExportError as exc:
                # As a finding: the English reason, its code and params (the API adds it in the caller's language).
                results.append({"name": u.name, "rejected": str(exc), "code": exc.code, "text": exc.message.text,
                                "params": exc.params})
        found = iter(self._check_all(ws, good))
        out = []
        for u, r in zip(uploads, results):
            if r is None:
                findings = next(found)
                r = {"name": u.name, "status": checks.worst(findings), "checks": findings}
            out.append(r)
        return out

    # -- submission --

    def submit(self, actor: Actor, title: str, context: str, uploads: list[Upload]) -> str:
        ws = self.sandbox_workspace(actor)
        title, context = (title or "").strip(), (context or "").strip()
        if not title or len(title) > 200:
            raise BadInput("export.title_required", N_("a title of 1 to %(most)s characters is required"), most=200)
        if not context or len(context) > 20000:
            raise BadInput("export.context_required", N_(
                "context is required: say what the outputs are and how disclosure was controlled"))
        return self._create(ws, actor.name, actor.name, title, context, uploads)

    def _create(self, ws: workspaces.WorkspaceView, requester: str, recorded_by: str, title: str, context: str,
                uploads: list[Upload], origin: str = "sandbox", appointed: tuple[str, ...] = (),
                made_in=None) -> str:
        """A new request of ``requester``'s, its files checked and stored, recorded as ``recorded_by``'s
        act. ``made_in``: a function given the open transaction and the request's id, for a caller's
        own change made in the same transaction."""
        self._uploads(ws, uploads)
        inspected = [self._inspect(ws, u) for u in uploads]
        results = self._check_all(ws, inspected)
        digests = [self.store.put(f.data) for f in inspected]
        request_id = uuid.uuid4().hex
        with self._writing() as s:
            req = ExportRequest(
                id=request_id, workspace=ws.name, requester=requester, title=title, context=context,
                state=workflow.SUBMITTED, approvals_required=self.policy(ws).approvals_required,
                policy_version=ws.export_policy_label(), origin=origin,
                datasets=list(ws.releases), submitted_at=now(), updated_at=now(),
            )
            s.add(req)
            s.flush()  # events refer to the request without a relationship that would order the inserts
            for reviewer in appointed:
                s.add(AppointedReviewer(request_id=request_id, reviewer=reviewer))
            added = []
            for f, u, digest, findings in zip(inspected, uploads, digests, results):
                added.append(RequestFile(
                    request_id=request_id, name=f.name, version=1, sha256=digest, size=len(f.data),
                    kind=f.sniffed, checks=findings, check_status=checks.worst(findings),
                    provenance=u.provenance, submitted_at=now(),
                ))
                s.add(added[-1])
            s.add(Event(request_id=request_id, actor=recorded_by, action="submit", from_state=None,
                        to_state=workflow.SUBMITTED, detail={"files": [u.name for u in uploads]}, at=now()))
            self._record(s, recorded_by, "export.request", ws.name, request_id=request_id, title=title,
                         justification=context,
                         files=[{"name": f.name, "sha256": f.sha256, "size": f.size} for f in added])
            for f in added:
                self._record_check(s, recorded_by, req, f)
            if made_in is not None:
                made_in(s, request_id)
        return request_id

    def update_files(self, actor: Actor, request_id: str, uploads: list[Upload]) -> list[dict]:
        """New versions of files of a returned request; an unchanged file keeps its votes."""
        ws = self.sandbox_workspace(actor)
        with self.db.snapshot() as s:
            req = self._get(s, request_id)
            if req.requester != actor.name or req.workspace != ws.name:
                raise NotFound("export.not_found", N_("no export request %(request)s"), request=request_id)
            if req.state != workflow.RETURNED:
                raise Conflict("export.files_not_changeable", N_(
                    "files can be changed only while the request is returned (it is %(state)s)"), state=req.state)
            existing = {f.name: f for f in req.current_files()}
        self._uploads(ws, uploads)
        inspected = [self._inspect(ws, u) for u in uploads]
        # Checks run over the whole request as it will be, so ACRO results attached earlier still apply.
        unchanged = [f for f in existing.values() if f.name not in {u.name for u in uploads}]
        results = self._check_all(ws, inspected + [self._inspect(ws, Upload(f.name, self.store.get(f.sha256))) for f in unchanged])
        changed = []
        digests = [self.store.put(f.data) for f in inspected]
        with self._writing() as s:
            req = self._get(s, request_id, for_update=True)
            if req.state != workflow.RETURNED:
                raise Conflict("export.files_not_changeable", N_(
                    "files can be changed only while the request is returned (it is %(state)s)"), state=req.state)
            current = {f.name: f for f in req.current_files()}
            # The checks ran over the files as they were before the uploads were inspected.
            if {f.id for f in current.values()} != {f.id for f in existing.values()}:
                raise Conflict("export.files_changed_meanwhile", N_(
                    "the request's files changed while these were checked; send them again"))
            for f, u, digest, findings in zip(inspected, uploads, digests, results):
                old = current.get(f.name)
                if old is not None and old.sha256 == digest:
                    continue
                new = RequestFile(
                    request_id=req.id, name=f.name, version=(old.version + 1) if old else 1, sha256=digest,
                    size=len(f.data), kind=f.sniffed, checks=findings, check_status=checks.worst(findings),
                    provenance=u.provenance, submitted_at=now(),
                )
                s.add(new)
                s.flush()
                if old is not None:
                    old.superseded_by = new.id
                changed.append({"name": f.name, "version": new.version})
                self._record_check(s, actor.name, req, new)
            req.updated_at = now()
            s.add(Event(request_id=req.id, actor=actor.name, action="update files", from_state=req.state,
                        to_state=req.state, detail={"changed": changed}, at=now()))
        return changed

    # -- reading --

    def _get(self, session, request_id: str, for_update: bool = False) -> ExportRequest:
        """The export request ``request_id``. Every change of it reads it ``for_update``: on PostgreSQL
        its row stays locked until the transaction ends (on SQLite the write transaction holds the
        database's write lock already), so that changes of one request are taken one at a time."""
        req = (session.get(ExportRequest, request_id, with_for_update=for_update)
               if re.fullmatch(r"[0-9a-f]{32}", request_id or "") else None)
        if req is None:
            raise NotFound("export.not_found", N_("no export request %(request)s"), request=request_id)
        return req

    def _visible(self, actor: Actor, req: ExportRequest) -> str:
        """The role in which ``actor`` sees ``req``; NotFound (not Refused) so existence does not leak."""
        if actor.is_admin:
            return workflow.ADMIN
        if self.may_review(actor, req) and actor.name != req.requester:
            return workflow.REVIEWER
        if (req.requester == actor.name and actor.can_request
                and (req.origin != workflow.SEALED_RUN or req.state in workflow.SHOWN_TO_SEALED_RUN_REQUESTER)):
            return workflow.REQUESTER
        raise NotFound("export.not_found", N_("no export request %(request)s"), request=req.id)

    def get(self, actor: Actor, request_id: str) -> dict:
        with self.db.snapshot() as s:
            req = self._get(s, request_id)
            return self._view(actor, req, self._visible(actor, req))

    def _view(self, actor: Actor, req: ExportRequest, role: str) -> dict:
        # The requester sees file decisions once the reviewers are done with the request (returned included).
        decided = req.state not in (workflow.SUBMITTED, workflow.IN_REVIEW)
        voting = role == workflow.REVIEWER and req.state in (workflow.SUBMITTED, workflow.IN_REVIEW)
        # A sealed run's results were computed on the raw data, and the operator's code decided their
        # names, sizes and content: its requester sees the files reviewers released and nothing of the
        # others (not a name, a size or a check), nor the run's outcome the request's context states.
        sealed_requester = role == workflow.REQUESTER and req.origin == workflow.SEALED_RUN
        files = [f for f in req.current_files() if f.release is not None] if sealed_requester else req.current_files()
        out_files = []
        for f in files:
            votes = [v.decision for v in f.votes]
            complete = len(f.votes) >= req.approvals_required
            mine = next((v for v in f.votes if v.reviewer == actor.name), None)
            shown = [
                {"reviewer": v.reviewer, "decision": v.decision, "reason": v.reason, "at": _iso(v.at)}
                for v in f.votes
                if role == workflow.ADMIN or (role == workflow.REVIEWER and (complete or v.reviewer == actor.name))
            ]
            entry = {
                "id": f.id, "name": f.name, "version": f.version, "sha256": f.sha256, "size": f.size,
                "kind": f.kind, "check_status": f.check_status, "checks": f.checks, "provenance": f.provenance,
                "submitted_at": _iso(f.submitted_at), "votes_in": len(f.votes),
                "decision": workflow.file_decision(votes, req.approvals_required)
                if role != workflow.REQUESTER or decided else None,
                "votes": shown, "my_vote": mine.decision if mine is not None else None,
                # A reviewer votes on a file until its votes are complete, and may change their vote till then.
                "can_vote": voting and not complete,
                "awaiting_my_vote": voting and not complete and mine is None,
                "release": None,
            }
            if f.release is not None:
                entry["release"] = {"id": f.release.id, "sha256": f.release.sha256,
                                    "released_at": _iso(f.release.released_at),
                                    "revoked": f.release.revoked_at is not None}
            out_files.append(entry)
        comments = [
            {"id": c.id, "author": c.author, "visibility": c.visibility, "text": c.text, "file_id": c.file_id,
             "at": _iso(c.at)}
            for c in req.comments
            if role != workflow.REQUESTER or c.visibility == "public"
        ]
        history = [
            {"actor": self._shown_actor(role, e), "action": e.action, "from": e.from_state, "to": e.to_state,
             "detail": {} if sealed_requester else e.detail, "at": _iso(e.at)}
            for e in req.events
            if self._shows_event(role, actor, req, e)
        ]
        # Only the steps that would succeed now: the caller's to take, their guards holding.
        allowed = [
            {"to": to, "action": t.action, "reason_required": t.reason_required, "description": t.description}
            for to, t in workflow.allowed_from(req.state)
            if t.actor == role and workflow.problem(req, t) is None
            and not (t.actor == workflow.REVIEWER and actor.name == req.requester)
        ]
        all_in = not any(d == workflow.FILE_PENDING for _, d, _ in workflow.decisions(req))
        returns = [e for e in req.events if e.to_state == workflow.RETURNED and e.from_state != e.to_state]
        return {
            "id": req.id, "workspace": req.workspace, "requester": req.requester, "title": req.title,
            "context": "" if sealed_requester else req.context, "state": req.state,
            "approvals_required": req.approvals_required, "origin": req.origin,
            "policy_version": req.policy_version, "datasets": req.datasets,
            "submitted_at": _iso(req.submitted_at), "updated_at": _iso(req.updated_at),
            "role": role, "files": out_files, "comments": comments, "history": history, "allowed": allowed,
            "can_vote": any(f["can_vote"] for f in out_files),
            "awaiting_my_vote": any(f["awaiting_my_vote"] for f in out_files),
            # Files whose complete votes conflict: the request waits for a reviewer's decision. Shown
            # once every file's votes are in (until then, votes are blind).
            "conflicts": workflow.conflicted_files(req) if all_in and role != workflow.REQUESTER
            and req.state == workflow.IN_REVIEW else [],
            "return_reason": (returns[-1].detail or {}).get("reason", "") if req.state == workflow.RETURNED
            and returns else None,
        }

    @staticmethod
    def _shown_actor(role: str, e: Event) -> str:
        """Who took a step, as the history shows it: the first vote's "start review" is the system's
        (requests started before it was recorded so name the first voter: blind reviews hide that)."""
        if e.action == "start review" and role != workflow.ADMIN:
            return workflow.SYSTEM
        return e.actor

    @staticmethod
    def _shows_event(role: str, actor: Actor, req: ExportRequest, e: Event) -> bool:
        if role == workflow.REQUESTER:
            # Reviewers' private comments are theirs alone: their existence included.
            private = e.action == "comment" and (e.detail or {}).get("visibility") != "public"
            return e.action not in ("vote", "view") and not private
        # Reviewers are blind to each other's votes while the request is open: neither who voted nor
        # when, nor who looked at the files (with the count of votes in, that tells who voted), nor
        # the start of the review (the time of the first vote, which may not be theirs).
        blind = role == workflow.REVIEWER and req.state in workflow.OPEN
        return not (blind and ((e.action in ("vote", "view") and e.actor != actor.name)
                               or e.action == "start review"))

    def queue(self, actor: Actor, workspace: str | None = None, state: str | None = None,
              max_age_days: int | None = None, mine: bool = False, page: int = 1, per_page: int = 50,
              at: datetime | None = None, awaiting_my_vote: bool = False) -> dict:
        """Requests ``actor`` may see: their own (``mine``), newest first, or those they review, those
        awaiting their vote first (``awaiting_my_vote``: only those)."""
        q = select(ExportRequest)
        if mine:
            if not actor.can_request:
                raise Refused("export.scope_missing_mine", N_("listing one's requests needs the %(scope)s scope"),
                              scope=SCOPE_REQUEST)
            q = q.where(ExportRequest.requester == actor.name,
                        or_(ExportRequest.origin != workflow.SEALED_RUN,
                            ExportRequest.state.in_(workflow.SHOWN_TO_SEALED_RUN_REQUESTER)))
        else:
            allowed = self.reviewed_workspaces(actor)
            if allowed is not None:
                if not allowed:
                    raise Refused("export.scope_missing_queue", N_(
                        "the review queue needs the %(scope)s scope and a workspace to review"), scope=SCOPE_REVIEW)
                q = q.where(self._reviewable_by(actor), ExportRequest.requester != actor.name)
        if workspace:
            q = q.where(ExportRequest.workspace == workspace)
        if state:
            if state not in workflow.STATES:
                raise BadInput("export.unknown_state", N_("unknown state %(state)s; states: %(states)s"),
                               state=repr(state), states=", ".join(workflow.STATES))
            q = q.where(ExportRequest.state == state)
        if max_age_days is not None:
            q = q.where(ExportRequest.submitted_at >= (at or now()) - timedelta(days=max_age_days))
        # Admins see requests in the role of admin, which does not vote.
        awaits = false() if mine or actor.is_admin else self._awaits_vote_of(actor)
        if awaiting_my_vote:
            q = q.where(awaits)
        page = max(1, page)
        with self.db.snapshot() as s:
            total = s.scalar(select(func.count()).select_from(q.subquery()))
            # The requests awaiting the caller's vote first, then the newest.
            rows = s.execute(
                q.with_only_columns(ExportRequest.id, ExportRequest.workspace, ExportRequest.requester,
                                    ExportRequest.title, ExportRequest.state, ExportRequest.submitted_at,
                                    ExportRequest.updated_at, awaits.label("awaiting_my_vote"))
                .order_by(case((awaits, 0), else_=1), ExportRequest.submitted_at.desc())
                .limit(per_page).offset((page - 1) * per_page)
            ).all()
        return {
            "total": total, "page": page, "per_page": per_page,
            "requests": [
                {"id": r.id, "workspace": r.workspace, "requester": r.requester, "title": r.title,
                 "state": r.state, "submitted_at": _iso(r.submitted_at), "updated_at": _iso(r.updated_at),
                 "awaiting_my_vote": bool(r.awaiting_my_vote)}
                for r in rows
            ],
        }

    @staticmethod
    def _awaits_vote_of(actor: Actor):
        """A condition on export requests: one of its current files awaits ``actor``'s vote (the request
        takes votes, the file has fewer than the policy requires, none of them ``actor``'s). Requests
        ``actor`` may not review are left out of the queue before this is asked."""
        votes_in = select(func.count(Vote.id)).where(Vote.file_id == RequestFile.id).scalar_subquery()
        mine = select(Vote.id).where(Vote.file_id == RequestFile.id, Vote.reviewer == actor.name).exists()
        open_file = select(RequestFile.id).where(
            RequestFile.request_id == ExportRequest.id, RequestFile.superseded_by.is_(None),
            votes_in < ExportRequest.approvals_required, ~mine).exists()
        return and_(ExportRequest.state.in_((workflow.SUBMITTED, workflow.IN_REVIEW)),
                    ExportRequest.requester != actor.name, open_file)

    # -- review --

    def vote(self, actor: Actor, request_id: str, file_id: int, decision: str, reason: str) -> dict:
        if decision not in workflow.VOTES:
            raise BadInput("export.unknown_decision", N_("decision must be one of %(decisions)s"),
                           decisions=", ".join(workflow.VOTES))
        reason = _reason(reason, required=("export.reason_required", N_("every vote needs a written reason")))
        with self._writing() as s:
            req = self._get(s, request_id, for_update=True)
            role = self._visible(actor, req)
            if actor.name == req.requester:
                raise Refused("export.self_review", N_("nobody reviews a request they made"))
            if role != workflow.REVIEWER:
                raise Refused("export.not_a_reviewer", N_("%(user)s is not a reviewer of workspace %(workspace)s"),
                              user=actor.name, workspace=repr(req.workspace))
            self._not_archived(req.workspace)
            if req.origin == workflow.SEALED_RUN and decision == workflow.REQUEST_CHANGES:
                raise BadInput("export.sealed_run_no_changes", N_(
                    "a sealed run's results cannot be changed by its requester: approve or reject them (a new run"
                    " makes a new request)"))
            if req.state not in (workflow.SUBMITTED, workflow.IN_REVIEW):
                raise Conflict("export.not_voting", N_(
                    "votes are taken only while a request is submitted or in review (it is %(state)s)"), state=req.state)
            f = next((f for f in req.current_files() if f.id == file_id), None)
            if f is None:
                raise NotFound("export.no_current_file", N_("request %(request)s has no current file %(file_id)s"),
                               request=req.id, file_id=file_id)
            mine = next((v for v in f.votes if v.reviewer == actor.name), None)
            if mine is None and len(f.votes) >= req.approvals_required:
                raise Conflict("export.votes_complete", N_(
                    "file %(file)s already has the %(required)s votes the policy requires"),
                    file=repr(f.name), required=req.approvals_required)
            if mine is not None and len(f.votes) >= req.approvals_required:
                raise Conflict("export.votes_final", N_(
                    "votes on %(file)s are complete and visible to all reviewers; they cannot change"), file=repr(f.name))
            if mine is None:
                mine = Vote(file_id=f.id, reviewer=actor.name)
                s.add(mine)
                f.votes.append(mine)
            mine.decision, mine.reason, mine.at = decision, reason, now()
            s.add(Event(request_id=req.id, actor=actor.name, action="vote", from_state=req.state,
                        to_state=req.state, detail={"file": f.name, "version": f.version, "decision": decision,
                                                    "reason": reason}, at=now()))
            self._record(s, actor.name, "export.vote", req.workspace, request_id=req.id, file=f.name,
                         sha256=f.sha256, decision=decision, reason=reason)
            self._take_automatic_steps(s, req, actor)
            return {"file": f.name, "decision": decision, "votes_in": len(f.votes), "state": req.state}

    def _take_automatic_steps(self, s, req: ExportRequest, voter: Actor) -> None:
        """Take the steps the system takes (``system`` in :data:`~enclave.exports.workflow.TRANSITIONS`)
        while one's guard holds: after a vote, the start of the review and the request-level decision
        the votes now decide, and the release that follows an approval. They are part of the vote's
        transaction, so two reviewers voting at once make one decision and one release.

        The history names the system as taking them; the audit log's records name the reviewer whose
        vote decided, with the rule that decided as the reason (and, for a return, the reviewers'
        reasons for the changes)."""
        while (step := workflow.automatic_step(req)) is not None:
            to, t = step
            if to == workflow.RELEASED:
                self._release(s, req, voter, t)
                continue
            changes = workflow.changes_requested(req) if to == workflow.RETURNED else ""
            self._move(s, req, workflow.SYSTEM, to, t, changes)
            if t.action != "start review":
                # Cut to what the audit log keeps whole; the history keeps every reason.
                reason = t.description + (f"\n{changes}" if changes else "")
                self._record(s, voter.name, "export.decision", req.workspace, request_id=req.id, decision=to,
                             reason=reason[:MAX_REASON_CHARS])

    def _move(self, s, req: ExportRequest, who: str, to: str, t: workflow.Transition, reason: str) -> None:
        """Move ``req`` to ``to`` by the step ``t``, taken by ``who`` (a person's name, or ``system``)."""
        s.add(Event(request_id=req.id, actor=who, action=t.action, from_state=req.state, to_state=to,
                    detail={"reason": reason} if reason else {}, at=now()))
        req.state = to
        req.updated_at = now()

    def transition(self, actor: Actor, request_id: str, to: str, reason: str = "") -> dict:
        reason = _reason(reason)
        with self._writing() as s:
            req = self._get(s, request_id, for_update=True)
            role = self._visible(actor, req)
            t = workflow.by_hand(req.state, to)
            if t is None and (req.state, to, workflow.SYSTEM) in workflow.TRANSITIONS:
                automatic = workflow.TRANSITIONS[(req.state, to, workflow.SYSTEM)]
                raise Conflict("export.automatic_step", N_("%(state)s -> %(to)s is not taken by hand: %(rule)s"),
                               state=req.state, to=to, rule=automatic.description)
            if t is None:
                raise Conflict("export.no_such_step", N_("a request cannot go from %(state)s to %(to)s"), state=req.state, to=to)
            if t.actor == workflow.REVIEWER and actor.name == req.requester:
                raise Refused("export.self_review", N_("nobody reviews a request they made"))
            if t.actor != role:
                raise Refused("export.not_your_step", N_("only the request's %(role)s may %(action)s it"),
                              role=t.actor, action=t.action)
            if t.reason_required and not reason:
                raise BadInput("export.reason_required", N_("to %(action)s a request, give a written reason"), action=t.action)
            if to == workflow.SUBMITTED:  # a resubmission
                self._taking_requests(self.workspace(req.workspace))
            elif to != workflow.REVOKED:
                self._not_archived(req.workspace)
            problem = workflow.problem(req, t)
            if problem:
                raise Conflict(problem.code, problem.text, **problem.params)
            self._move(s, req, actor.name, to, t, reason)
            if to == workflow.REVOKED:
                self._revoke(s, req, actor, reason)
            else:
                self._record(s, actor.name, "export.decision", req.workspace, request_id=req.id, decision=to,
                             **({"reason": reason} if reason else {}))
            return {"id": req.id, "state": req.state}

    def _revoke(self, s, req: ExportRequest, actor: Actor, reason: str) -> None:
        for f in req.files:
            if f.release is not None:
                f.release.revoked_at = now()
                self._record(s, actor.name, "export.revoke", req.workspace, request_id=req.id,
                             release_id=f.release.id, reason=reason)

    def _release(self, s, req: ExportRequest, voter: Actor, step: workflow.Transition) -> None:
        """Take the release ``step``: release the approved files of ``req``, approved by the vote of
        ``voter`` that decided it."""
        approved_at = now()
        approval = workflow.TRANSITIONS[(workflow.IN_REVIEW, workflow.APPROVED, workflow.SYSTEM)]
        for f in req.current_files():
            if workflow.file_decision([v.decision for v in f.votes], req.approvals_required) != workflow.FILE_APPROVED:
                continue
            release_id = uuid.uuid4().hex
            data, watermarked = release.prepare(self.store.get(f.sha256), f.kind, release_id)
            digest = self.store.put(data)
            manifest = {
                "schema": "enclave-export-manifest/1",
                "release_id": release_id,
                "request_id": req.id,
                "workspace": req.workspace,
                "requester": req.requester,
                "title": req.title,
                "file": {"name": f.name, "version": f.version, "sha256": digest, "size": len(data),
                         "submitted_sha256": f.sha256, "watermarked": watermarked},
                "approvers": [{"reviewer": v.reviewer, "reason": v.reason, "at": _iso(v.at)} for v in f.votes],
                "approved_by": {"reviewer": workflow.SYSTEM, "decided_by_vote_of": voter.name,
                                "reason": approval.description, "at": _iso(approved_at)},
                "checks": [{k: c[k] for k in ("check", "status", "reason", "location")} for c in f.checks],
                "policy": {"version": req.policy_version, "approvals_required": req.approvals_required},
                "datasets": req.datasets,
                "times": {"submitted_at": _iso(f.submitted_at), "approved_at": _iso(approved_at),
                          "released_at": _iso(now())},
                "key_id": self.key_id,
            }
            s.add(Release(id=release_id, file_id=f.id, sha256=digest, manifest=manifest,
                          signature=signing.sign(self.key, manifest), key_id=self.key_id, released_at=now()))
            # The record names the reviewer whose vote decided the release, and the bytes handed out.
            self._record(s, voter.name, "export.release", req.workspace, request_id=req.id, file=f.name,
                         sha256=digest, release_id=release_id)
        self._move(s, req, workflow.SYSTEM, workflow.RELEASED, step, "")

    def comment(self, actor: Actor, request_id: str, text: str, visibility: str, file_id: int | None = None) -> dict:
        text = _reason(text, required=("export.comment_required", N_("a comment needs text")), what="comment")
        if visibility not in ("private", "public"):
            raise BadInput("export.unknown_visibility", N_(
                "visibility must be 'private' (reviewers only) or 'public' (the requester sees it)"))
        with self._writing() as s:
            req = self._get(s, request_id)
            role = self._visible(actor, req)
            if role == workflow.REQUESTER and visibility != "public":
                raise Refused("export.requester_comments_public", N_("a requester's comments are public"))
            if file_id is not None and file_id not in {f.id for f in req.files}:
                raise NotFound("export.no_file", N_("request %(request)s has no file %(file_id)s"), request=req.id,
                               file_id=file_id)
            c = Comment(request_id=req.id, file_id=file_id, author=actor.name, visibility=visibility, text=text, at=now())
            s.add(c)
            s.add(Event(request_id=req.id, actor=actor.name, action="comment", from_state=req.state,
                        to_state=req.state, detail={"visibility": visibility}, at=now()))
            s.flush()
            return {"id": c.id}

    # -- file content for reviewers --

    def file_content(self, actor: Actor, request_id: str, file_id: int) -> tuple[RequestFile, bytes]:
        """A submitted file's bytes for reviewing; requesters get files only once released."""
        with self._writing() as s:
            req = self._get(s, request_id)
            role = self._visible(actor, req)
            if role == workflow.REQUESTER:
                raise Refused("export.not_released_yet", N_("requesters download files only once they are released"))
            f = next((f for f in req.files if f.id == file_id), None)
            if f is None:
                raise NotFound("export.no_file", N_("request %(request)s has no file %(file_id)s"), request=req.id,
                               file_id=file_id)
            s.add(Event(request_id=req.id, actor=actor.name, action="view", from_state=req.state,
                        to_state=req.state, detail={"file": f.name, "version": f.version}, at=now()))
        return f, self.store.get(f.sha256)

    # -- downloads --

    def create_link(self, actor: Actor, request_id: str, file_id: int, at: datetime | None = None) -> dict:
        at = at or now()
        with self._writing() as s:
            req = self._get(s, request_id)
            role = self._visible(actor, req)
            if role not in (workflow.REQUESTER, workflow.ADMIN):
                raise Refused("export.not_the_requester", N_("only the requester (and admins) download released files"))
            f = next((f for f in req.files if f.id == file_id), None)
            if f is None:
                raise NotFound("export.no_file", N_("request %(request)s has no file %(file_id)s"), request=req.id,
                               file_id=file_id)
            if req.state == workflow.REVOKED or (f.release is not None and f.release.revoked_at is not None):
                raise Refused("export.revoked", N_("this release was revoked: it can no longer be downloaded"))
            if req.state != workflow.RELEASED or f.release is None:
                raise Refused("export.not_released", N_("%(file)s is not released (the request is %(state)s)"),
                              file=repr(f.name), state=req.state)
            token = secrets.token_urlsafe(32)
            expires = at + timedelta(seconds=self.cfg.link_ttl_seconds)
            s.add(DownloadLink(token_sha256=hashlib.sha256(token.encode()).hexdigest(), release_id=f.release.id,
                               username=actor.name, created_at=at, expires_at=expires))
            return {"token": token, "expires_at": _iso(expires)}

    def download(self, actor: Actor, token: str, at: datetime | None = None) -> tuple[str, bytes, Release]:
        at = at or now()
        with self._writing() as s:
            link = s.get(DownloadLink, hashlib.sha256((token or "").encode()).hexdigest())
            if link is None or link.username != actor.name:
                raise NotFound("export.no_such_link", N_("no such download link"))
            if link.expires_at <= at:
                raise Refused("export.link_expired", N_("this download link has expired; ask for a new one"))
            rel = s.get(Release, link.release_id)
            f = s.get(RequestFile, rel.file_id)
            # Revocation is read with the request locked: a download and a revocation at the same
            # moment are one before the other, never a download of a release already revoked.
            req = self._get(s, f.request_id, for_update=True)
            s.refresh(rel)
            if rel.revoked_at is not None or req.state != workflow.RELEASED:
                raise Refused("export.revoked", N_("this release was revoked: it can no longer be downloaded"))
            # Access is decided again: a link is useless to anyone who lost the right to it.
            if self._visible(actor, req) not in (workflow.REQUESTER, workflow.ADMIN):
                raise Refused("export.not_the_requester", N_("only the requester (and admins) download released files"))
            s.add(Event(request_id=req.id, actor=actor.name, action="download", from_state=req.state,
                        to_state=req.state, detail={"file": f.name, "release_id": rel.id}, at=at))
            self._record(s, actor.name, "export.download", req.workspace, request_id=req.id, release_id=rel.id,
                         file=f.name, sha256=rel.sha256)
            return f.name, self.store.get(rel.sha256), rel

    def manifest(self, actor: Actor, request_id: str, file_id: int) -> dict:
        with self.db.snapshot() as s:
            req = self._get(s, request_id)
            self._visible(actor, req)
            f = next((f for f in req.files if f.id == file_id), None)
            if f is None or f.release is None:
                raise NotFound("export.no_released_file", N_("request %(request)s has no released file %(file_id)s"),
                               request=req.id, file_id=file_id)
            rel = f.release
            # Checked with this service's key: a manifest signed with another key is not valid here.
            valid = rel.key_id == self.key_id and signing.verify(self.key.public_key(), rel.manifest, rel.signature)
            return {"manifest": rel.manifest, "signature": rel.signature, "key_id": rel.key_id,
                    "revoked": rel.revoked_at is not None, "signature_valid": valid}

