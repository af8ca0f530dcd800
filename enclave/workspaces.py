"""Workspaces: their purpose and data holder, who works in them in which role, which releases
their sandboxes see (once the holder consents), their limits, and their state (active, frozen,
archived).

This module is the one service layer for workspaces: the CLI, ``enclave apply``, the provisioning
service's REST API and its admin pages all change workspaces only through it. It changes state
only; the provisioning service enforces the state on running sandboxes
(:mod:`enclave.provisioning.lifecycle`).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import select

from . import db, supply
from .audit.records import without_floats
from .i18n import N_
from .refusals import Refusal
from .releases import release_dir
from .sandbox.home_image import MIB, DiskUsage, usage
from .settings import ExportSettings, LimitSettings, Settings
from .sources import source_of


class WorkspaceError(Refusal):
    """A workspace operation that cannot be done, with the reason (a stable code and its text)."""


class UnknownWorkspace(WorkspaceError):
    pass


@dataclass(frozen=True)
class WorkspaceView:
    """What the hub needs to know about a workspace, detached from the database session."""

    name: str
    operators: frozenset[str]
    reviewers: frozenset[str]
    # Releases mounted under /data: attached, with the holder's consent.
    releases: tuple[str, ...]
    limits: dict = field(default_factory=dict)
    # Guard settings for the workspace's servers (enclave_guard.policy.GuardSettings keys).
    guard: dict = field(default_factory=dict)
    # Releases attached as column views: release -> {table: [columns]}.
    views: dict = field(default_factory=dict)
    owners: frozenset[str] = frozenset()
    purpose: str = ""
    holder: str | None = None
    state: str = "active"
    state_reason: str = ""
    expires_at: datetime | None = None
    operators_may_review: bool = False
    # Releases asked for, awaiting the holder's consent: release -> {columns, reason, requested_by}.
    awaiting: dict = field(default_factory=dict)
    # Reasons given for each attached release: release -> reason.
    reasons: dict = field(default_factory=dict)
    # Overrides of [exports] (EXPORT_POLICY_KEYS) and their version.
    export_policy: dict = field(default_factory=dict)
    export_policy_version: int = 0

    def effective_limits(self, defaults: LimitSettings) -> LimitSettings:
        return defaults.model_copy(update=self.limits)

    def effective_export_policy(self, defaults: ExportSettings) -> ExportSettings:
        """[exports] with this workspace's overrides: its approvals, thresholds and caps."""
        return defaults.model_copy(update=self.export_policy)

    def export_policy_label(self) -> str:
        """The policy's name as export requests record it: ``<workspace>/v<version>``
        (``default`` while it has never been changed)."""
        return f"{self.name}/v{self.export_policy_version}" if self.export_policy_version else f"{self.name}/default"

    @property
    def active(self) -> bool:
        return self.state == "active"

    def describe(self) -> dict:
        """The workspace's declared state, JSON-able, with no history (no times, no actors): the
        same whoever built it, by CLI, ``enclave apply`` or the admin pages. This is ``enclave
        workspace show --format json``."""
        return {
            "name": self.name,
            "purpose": self.purpose,
            "holder": self.holder,
            "state": self.state,
            "state_reason": self.state_reason,
            "expires_at": db.iso(self.expires_at),
            "operators_may_review": self.operators_may_review,
            "members": {"owner": sorted(self.owners), "operator": sorted(self.operators),
                        "reviewer": sorted(self.reviewers)},
            "releases": {r: {"columns": self.views.get(r), "reason": self.reasons.get(r, ""), "status": "attached"}
                         for r in self.releases}
                        | {r: {"columns": a["columns"], "reason": a["reason"], "status": "awaiting_consent"}
                           for r, a in self.awaiting.items()},
            "limits": dict(sorted(self.limits.items())),
            "guard": dict(sorted(self.guard.items())),
            "export_policy": dict(sorted(self.export_policy.items())),
        }


def _problems(exc: ValidationError) -> str:
    """Pydantic's findings in one line: ``key: what is wrong (got value)`` for each."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'][0].lower()}{e['msg'][1:]} (got {e['input']!r})"
                     for e in exc.errors())


def _get(session, name: str, lock: bool = True) -> db.Workspace:
    """The workspace, locked for the change at hand (``lock``; a read takes no lock)."""
    ws = session.get(db.Workspace, name, with_for_update=lock)
    if ws is None:
        raise UnknownWorkspace("workspace.unknown", N_("no workspace named '%(workspace)s'"), workspace=name)
    return ws


def _changeable(ws: db.Workspace) -> db.Workspace:
    if ws.state == "archived":
        raise WorkspaceError("workspace.archived", N_("workspace '%(workspace)s' is archived: it can no longer change"),
                             workspace=ws.name)
    return ws


def _view(ws: db.Workspace) -> WorkspaceView:
    attached = [a for a in ws.attachments if a.status == "attached"]
    return WorkspaceView(
        name=ws.name,
        operators=frozenset(ws.members_with("operator")),
        reviewers=frozenset(ws.members_with("reviewer")),
        releases=tuple(sorted(a.release for a in attached)),
        limits=dict(ws.limits or {}),
        guard=dict(ws.guard or {}),
        views={a.release: a.columns for a in attached if a.columns},
        owners=frozenset(ws.members_with("owner")),
        purpose=ws.purpose or "",
        holder=ws.holder,
        state=ws.state,
        state_reason=ws.state_reason or "",
        expires_at=db.as_utc(ws.expires_at),
        operators_may_review=bool(ws.operators_may_review),
        awaiting={a.release: {"columns": a.columns, "reason": a.reason, "requested_by": a.attached_by}
                  for a in sorted(ws.attachments, key=lambda a: a.release) if a.status == "awaiting_consent"},
        reasons={a.release: a.reason for a in attached},
        export_policy=dict(ws.export_policy or {}),
        export_policy_version=ws.export_policy_version or 0,
    )


def data_mounts(settings: Settings, view: WorkspaceView) -> list[tuple[Path, str]]:
    """What a workspace's sandboxes see under /data: (host folder, name under /data) per release.

    Only a release's ``data/`` folder is mounted; its manifest and report stay with the hub. A
    release attached with ``--columns`` is mounted from its column view instead.
    """
    return [
        (supply.view_dir(settings, view.name, r) if r in view.views else release_dir(settings, r) / "data", r)
        for r in view.releases
    ]


# Every change below takes ``record``: called inside the change's transaction, before it commits,
# with the audit action and its detail (enclave.audit.actions). It hands the record to the audit
# log and raises if the log does not take it, and then nothing changes (the CLI's, see enclave.cli).
Recorder = Callable[..., None] | None


def _record(record: Recorder, action: str, workspace: str, **detail) -> None:
    if record is not None:
        record(action, workspace=workspace, detail=without_floats(detail))


def create(settings: Settings, name: str, record: Recorder = None, *, purpose: str = "",
           holder: str | None = None, expires_at: datetime | None = None, session=None) -> WorkspaceView:
    if not db.WORKSPACE_NAME.match(name):
        raise WorkspaceError("workspace.bad_name", N_(
            "workspace name '%(workspace)s' is not allowed: use 1-40 lower-case letters, digits and '-',"
            " starting and ending with a letter or digit"), workspace=name)
    with db.transaction(settings.enclave_db_url, session) as s:
        if s.get(db.Workspace, name) is not None:
            raise WorkspaceError("workspace.exists", N_("workspace '%(workspace)s' already exists"), workspace=name)
        if holder is not None:
            _check_holder(s, holder)
        ws = db.Workspace(name=name, limits={}, guard={}, purpose=purpose.strip(), holder=holder,
                          expires_at=db.as_utc(expires_at), state="active", state_reason="", operators_may_review=False)
        s.add(ws)
        s.flush()
        _record(record, "workspace.create", name, **({"purpose": ws.purpose} if ws.purpose else {}),
                **({"user": holder} if holder else {}), **({"expires_at": db.iso(expires_at)} if expires_at else {}))
        return _view(ws)


def _check_holder(s, holder: str) -> None:
    account = s.get(db.Account, holder)
    if account is None:
        raise WorkspaceError("account.unknown", N_("no account named '%(account)s'"), account=holder)
    if "holder" not in account.role_names:
        raise WorkspaceError("workspace.holder_lacks_role", N_(
            "'%(account)s' cannot be a workspace's data holder: the account does not hold the holder role"),
            account=holder)


def set_purpose(settings: Settings, name: str, purpose: str, record: Recorder = None, *, session=None) -> WorkspaceView:
    """Change the approved scenario of use. Releases awaiting consent are then answered by their
    holder against the new purpose."""
    if not purpose.strip():
        raise WorkspaceError("workspace.empty_purpose", N_("a workspace's purpose cannot be empty"))
    with db.transaction(settings.enclave_db_url, session) as s:
        ws = _changeable(_get(s, name))
        before = ws.purpose
        ws.purpose = purpose.strip()
        s.flush()
        _record(record, "workspace.purpose_set", name, purpose=ws.purpose, before=before)
        return _view(ws)


def set_holder(settings: Settings, name: str, holder: str, record: Recorder = None, *, session=None) -> WorkspaceView:
    """Name the data holder whose sources the workspace uses. Refused while releases of another
    holder's sources are attached or asked for."""
    with db.transaction(settings.enclave_db_url, session) as s:
        ws = _changeable(_get(s, name))
        _check_holder(s, holder)
        if ws.holder == holder:
            return _view(ws)
        others = [a.release for a in ws.attachments if _source_holder(s, a.release) != holder]
        if others:
            raise WorkspaceError("workspace.other_holders_releases", N_(
                "cannot make '%(account)s' the data holder of '%(workspace)s': releases of other holders' sources are"
                " attached or asked for (%(releases)s); detach them first"),
                account=holder, workspace=name, releases=", ".join(sorted(others)))
        before = ws.holder
        ws.holder = holder
        s.flush()
        _record(record, "workspace.holder_set", name, user=holder, **({"before": before} if before else {}))
        return _view(ws)


def set_expiry(settings: Settings, name: str, expires_at: datetime | None, record: Recorder = None, *,
               session=None) -> WorkspaceView:
    """At ``expires_at`` the workspace is frozen (by the provisioning service); None: never."""
    with db.transaction(settings.enclave_db_url, session) as s:
        ws = _changeable(_get(s, name))
        before = db.iso(ws.expires_at)
        ws.expires_at = db.as_utc(expires_at)
        s.flush()
        _record(record, "workspace.expiry_set", name, expires_at=db.iso(expires_at), before=before)
        return _view(ws)


def set_operators_may_review(settings: Settings, name: str, allowed: bool, record: Recorder = None, *,
                             session=None) -> WorkspaceView:
    """Whether one account may be both an operator and a reviewer of the workspace (the review
    service refuses a vote on one's own request either way). Forbidding it is refused while a
    member holds both roles."""
    with db.transaction(settings.enclave_db_url, session) as s:
        ws = _changeable(_get(s, name))
        both = ws.members_with("operator") & ws.members_with("reviewer")
        if not allowed and both:
            raise WorkspaceError("workspace.members_in_both_roles", N_(
                "'%(workspace)s' has members who are both operator and reviewer (%(members)s): remove one of their"
                " roles first"), workspace=name, members=", ".join(sorted(both)))
        if bool(ws.operators_may_review) == allowed:
            return _view(ws)
        ws.operators_may_review = allowed
        s.flush()
        _record(record, "workspace.separation_set", name, allowed=allowed)
        return _view(ws)


def _set_state(settings: Settings, name: str, state: str, reason: str, record: Recorder, session,
               allowed_from: tuple[str, ...], action: str) -> WorkspaceView:
    with db.transaction(settings.enclave_db_url, session) as s:
        ws = _get(s, name)
        if ws.state not in allowed_from:
            code, text = _STATE_REFUSALS[state]
            raise WorkspaceError(code, text, workspace=name, state=ws.state)
        before = ws.state
        ws.state, ws.state_reason, ws.state_changed_at = state, reason.strip(), db.utcnow()
        s.flush()
        _record(record, action, name, before=before, **({"reason": reason.strip()} if reason.strip() else {}))
        return _view(ws)


# A change of state the workspace's present state does not allow, by the state asked for.
_STATE_REFUSALS = {
    "frozen": ("workspace.cannot_freeze", N_("workspace '%(workspace)s' is %(state)s: it cannot be frozen")),
    "active": ("workspace.cannot_unfreeze", N_("workspace '%(workspace)s' is %(state)s: it cannot be unfrozen")),
    "archived": ("workspace.cannot_archive", N_("workspace '%(workspace)s' is %(state)s: it cannot be archived")),
}


def freeze(settings: Settings, name: str, reason: str, record: Recorder = None, *, session=None) -> WorkspaceView:
    """Freeze the workspace: its sandboxes are stopped and none start, and no export request is
    made, until it is unfrozen. Members, releases and limits may still be changed."""
    if not reason.strip():
        raise WorkspaceError("workspace.freeze_reason_missing", N_("say why the workspace is frozen (a reason is recorded)"))
    return _set_state(settings, name, "frozen", reason, record, session, ("active",), "workspace.freeze")


def unfreeze(settings: Settings, name: str, record: Recorder = None, *, session=None) -> WorkspaceView:
    with db.transaction(settings.enclave_db_url, session) as s:
        ws = _get(s, name)
        if ws.state == "frozen" and ws.expires_at is not None and db.as_utc(ws.expires_at) <= db.utcnow():
            raise WorkspaceError("workspace.expired", N_(
                "workspace '%(workspace)s' expired on %(expired_at)s: set a later expiry (or none) before unfreezing it"),
                workspace=name, expired_at=db.iso(ws.expires_at))
        return _set_state(settings, name, "active", "", record, s, ("frozen",), "workspace.unfreeze")


def archive(settings: Settings, name: str, reason: str, record: Recorder = None, *, session=None) -> WorkspaceView:
    """Archive the workspace, for good: nothing starts or changes; its operators' homes are kept,
    read-only, for the retention period ([workspaces] archive_retention_days), then deleted."""
    if not reason.strip():
        raise WorkspaceError("workspace.archive_reason_missing",
                             N_("say why the workspace is archived (a reason is recorded)"))
    return _set_state(settings, name, "archived", reason, record, session, ("active", "frozen"), "workspace.archive")


def home_usages(settings: Settings, name: str) -> dict[str, DiskUsage]:
    """operator -> the use of their home in workspace ``name``, for each home that has its image
    (a home gets one at its first start)."""
    usages = {}
    for image in sorted(settings.home_images_dir.glob(f"*/{name}.ext4")):
        home, _ = settings.operator_home(image.parent.name, name)
        if (found := usage(image, home)) is not None:
            usages[image.parent.name] = found
    return usages


def set_limits(settings: Settings, name: str, limits: dict, record: Recorder = None, *, session=None) -> WorkspaceView:
    """Override [sandbox.limits] for this workspace's sandboxes (from their next start). A disk
    quota below what a home of the workspace already uses is refused: its files would not fit."""
    try:
        checked = LimitSettings(**limits).model_dump(include=set(limits))
    except ValidationError as exc:
        raise WorkspaceError("limits.invalid", N_("invalid limits for '%(workspace)s': %(problems)s"), workspace=name,
                             problems=_problems(exc)) from None
    if "disk_mb" in checked:
        too_full = [f"{user}'s home uses {u.used_mb} MiB" for user, u in home_usages(settings, name).items()
                    if u.used > checked["disk_mb"] * MIB]
        if too_full:
            raise WorkspaceError("limits.disk_quota_too_low", N_(
                "cannot lower the disk quota of '%(workspace)s' to %(disk_mb)s MiB: %(usages)s; files must be deleted"
                " there first"), workspace=name, disk_mb=checked["disk_mb"], usages=", ".join(too_full))
    with db.transaction(settings.enclave_db_url, session) as s:
        ws = _changeable(_get(s, name))
        before = dict(ws.limits or {})
        if {**before, **checked} == before:
            return _view(ws)
        ws.limits = {**before, **checked}
        s.flush()
        _record(record, "workspace.limits_set", name, limits=ws.limits, before=before)
        return _view(ws)


# The guard in the operator's environment is the authority on its own settings: the hub asks it
# to validate them, so what an admin sets is exactly what the guard will accept at start-up.
_CHECK_GUARD_SETTINGS = """
import json, sys
from enclave_guard.policy import GuardSettingsError, parse_guard_settings
try:
    parse_guard_settings(json.load(sys.stdin))
except GuardSettingsError as exc:
    sys.exit(str(exc))
"""


def set_guard(settings: Settings, name: str, guard: dict, record: Recorder = None, *, session=None) -> WorkspaceView:
    """Change guard settings for this workspace's servers (from their next start).

    ACRO's thresholds are not among them: they come from [exports] for every workspace, because the
    review service checks outputs with the same thresholds.
    """
    if "acro" in guard:
        raise WorkspaceError("guard.acro_per_workspace", N_(
            "ACRO thresholds are set in [exports] for all workspaces, not per workspace"))
    with db.transaction(settings.enclave_db_url, session) as s:
        ws = _changeable(_get(s, name))
        merged = {**(ws.guard or {}), **guard}
        if merged == (ws.guard or {}):
            return _view(ws)
        python = settings.sandbox.python_env / "bin" / "python"
        check = subprocess.run([str(python), "-I", "-c", _CHECK_GUARD_SETTINGS], input=json.dumps(merged),
                               capture_output=True, text=True, timeout=120)
        if check.returncode != 0:
            reason = check.stderr.strip().splitlines()[-1] if check.stderr.strip() else f"exit {check.returncode}"
            raise WorkspaceError("guard.invalid", N_("invalid guard settings for '%(workspace)s': %(problems)s"),
                                 workspace=name, problems=reason)
        before = dict(ws.guard or {})
        ws.guard = merged
        s.flush()
        _record(record, "workspace.guard_set", name, guard=merged, before=before)
        return _view(ws)


# What a workspace's export policy may set, over [exports]: approvals per file, the automated
# checks' thresholds, and the caps of a request. The rest of [exports] is the service's own.
EXPORT_POLICY_KEYS = ("approvals_required", "max_file_mb", "max_files_per_request", "max_csv_rows",
                      "min_cell_count", "round_base", "nk_n", "nk_k", "p_ratio")


def set_export_policy(settings: Settings, name: str, policy: dict, record: Recorder = None, *,
                      session=None) -> WorkspaceView:
    """Override [exports] for this workspace's export requests: requests made from now on are
    checked and decided under the new policy (and record its version); requests already made keep
    theirs. The thresholds reach the guard in the workspace's servers at their next start."""
    unknown = sorted(set(policy) - set(EXPORT_POLICY_KEYS))
    if unknown:
        raise WorkspaceError("export_policy.unknown_keys", N_("unknown export policy key(s) %(keys)s (known: %(known)s)"),
                             keys=", ".join(unknown), known=", ".join(EXPORT_POLICY_KEYS))
    try:
        merged = ExportSettings.model_validate({**settings.exports.model_dump(), **policy})
    except ValidationError as exc:
        raise WorkspaceError("export_policy.invalid", N_("invalid export policy for '%(workspace)s': %(problems)s"),
                             workspace=name, problems=_problems(exc)) from None
    checked = merged.model_dump(include=set(policy))
    with db.transaction(settings.enclave_db_url, session) as s:
        ws = _changeable(_get(s, name))
        before = dict(ws.export_policy or {})
        after = {**before, **checked}
        if after == before:
            return _view(ws)
        ws.export_policy = after
        ws.export_policy_version = (ws.export_policy_version or 0) + 1
        s.flush()
        _record(record, "workspace.export_policy_set", name, policy=after, before=before,
                version=ws.export_policy_version)
        return _view(ws)


def get(settings: Settings, name: str, session=None) -> WorkspaceView:
    with db.snapshot(settings.enclave_db_url, session) as s:
        return _view(_get(s, name, lock=False))


def all_workspaces(settings: Settings, session=None) -> list[WorkspaceView]:
    with db.snapshot(settings.enclave_db_url, session) as s:
        return [_view(ws) for ws in s.scalars(select(db.Workspace).order_by(db.Workspace.name))]


def for_user(settings: Settings, username: str) -> list[tuple[WorkspaceView, set[str]]]:
    """The workspaces a user belongs to, each with the user's roles in it."""
    return [
        (ws, {r for r in ("operator", "reviewer", "owner") if username in getattr(ws, r + "s")})
        for ws in all_workspaces(settings)
        if username in ws.operators | ws.reviewers | ws.owners
    ]


def add_member(settings: Settings, workspace: str, username: str, role: str, record: Recorder = None, *,
               session=None) -> WorkspaceView:
    if role not in db.WORKSPACE_ROLES:
        raise WorkspaceError("workspace.unknown_role", N_("role '%(role)s' is not a workspace role (%(roles)s)"), role=role,
                             roles=", ".join(db.WORKSPACE_ROLES))
    with db.transaction(settings.enclave_db_url, session) as s:
        ws = _changeable(_get(s, workspace))
        account = s.get(db.Account, username)
        if account is None:
            raise WorkspaceError("account.unknown", N_("no account named '%(account)s'"), account=username)
        if account.state != "active":
            raise WorkspaceError("account.disabled", N_("'%(account)s' is disabled: enable the account first"),
                                 account=username)
        if role in ("operator", "reviewer") and role not in account.role_names:
            raise WorkspaceError("workspace.member_lacks_role", _LACKS_ROLE[role], account=username)
        if username in ws.members_with(role):
            raise WorkspaceError("workspace.already_member", N_("'%(account)s' is already a %(role)s of '%(workspace)s'"),
                                 account=username, role=role, workspace=workspace)
        other = {"operator": "reviewer", "reviewer": "operator"}.get(role)
        if other and username in ws.members_with(other) and not ws.operators_may_review:
            raise WorkspaceError("workspace.operators_and_reviewers_apart", _KEPT_APART[role], account=username,
                                 workspace=workspace)
        ws.members.append(db.Membership(username=username, role=role))
        s.flush()
        _record(record, "workspace.member_add", workspace, user=username, role=role)
        return _view(ws)


# A member added in a role their account does not hold, by the role.
_LACKS_ROLE = {
    "operator": N_("'%(account)s' cannot be a workspace operator: the account does not hold the operator role"),
    "reviewer": N_("'%(account)s' cannot be a workspace reviewer: the account does not hold the reviewer role"),
}
# A member added in the role that the workspace's separation of duties keeps from their other role.
_KEPT_APART = {
    "reviewer": N_("'%(account)s' is an operator of '%(workspace)s' and cannot also be its reviewer: the workspace's"
                   " policy keeps operators and reviewers apart (allow it with operators_may_review)"),
    "operator": N_("'%(account)s' is a reviewer of '%(workspace)s' and cannot also be its operator: the workspace's"
                   " policy keeps operators and reviewers apart (allow it with operators_may_review)"),
}


def remove_member(settings: Settings, workspace: str, username: str, role: str, record: Recorder = None, *,
                  session=None) -> WorkspaceView:
    """Take ``role`` in the workspace from ``username``; an operator's running sandbox of it is
    stopped by the provisioning service."""
    with db.transaction(settings.enclave_db_url, session) as s:
        ws = _changeable(_get(s, workspace))
        kept = [m for m in ws.members if not (m.username == username and m.role == role)]
        if len(kept) == len(ws.members):
            raise WorkspaceError("workspace.not_member", N_("'%(account)s' is not a %(role)s of '%(workspace)s'"),
                                 account=username, role=role, workspace=workspace)
        ws.members = kept
        s.flush()
        _record(record, "workspace.member_remove", workspace, user=username, role=role)
        return _view(ws)


def _source_holder(s, release: str) -> str | None:
    row = s.get(db.Source, source_of(release))
    return row.holder if row is not None else None


def attach(
    settings: Settings,
    workspace: str,
    release: str,
    by: str,
    columns: list[str] | None = None,
    reason: str = "",
    record: Recorder = None,
    *,
    session=None,
) -> WorkspaceView:
    """Ask for a release, or only ``columns`` of it (a view), for the workspace: the request awaits
    the consent of the data holder of the release's source (:func:`consent`), who sees the
    workspace's purpose and this reason. Nothing is mounted before."""
    path = release_dir(settings, release) / "data"  # validates the name
    if not path.is_dir():
        raise WorkspaceError("release.unknown", N_("release '%(release)s' is not in the release store (%(store)s)"),
                             release=release, store=str(settings.release_store))
    try:
        selection = (supply.select_columns(supply.release_tables(settings, release), release, columns)
                     if columns else None)
    except supply.SupplyError as exc:
        raise WorkspaceError.from_refusal(exc) from None
    with db.transaction(settings.enclave_db_url, session) as s:
        ws = _changeable(_get(s, workspace))
        if release in {a.release for a in ws.attachments}:
            status = next(a.status for a in ws.attachments if a.release == release)
            if status == "attached":
                raise WorkspaceError("workspace.release_attached", N_(
                    "release '%(release)s' is already attached to '%(workspace)s'"), release=release, workspace=workspace)
            raise WorkspaceError("workspace.release_asked_for", N_(
                "release '%(release)s' is already asked for '%(workspace)s'"), release=release, workspace=workspace)
        holder = _source_holder(s, release)
        if holder is None:
            raise WorkspaceError("release.no_holder", N_(
                "release '%(release)s' has no data holder: register its source '%(source)s' with its holder first"
                " (enclave data set-holder)"), release=release, source=source_of(release))
        if ws.holder is None:
            raise WorkspaceError("workspace.no_holder", N_(
                "workspace '%(workspace)s' has no data holder: set it first (enclave workspace set-holder)"),
                workspace=workspace)
        if holder != ws.holder:
            raise WorkspaceError("release.other_holder", N_(
                "release '%(release)s' is held by '%(holder)s', not by '%(workspace_holder)s', the data holder of"
                " '%(workspace)s'"), release=release, holder=holder, workspace_holder=ws.holder, workspace=workspace)
        if not ws.purpose:
            raise WorkspaceError("workspace.no_purpose", N_(
                "workspace '%(workspace)s' has no purpose: the data holder consents to a use, so set its purpose first"
                " (enclave workspace set-purpose)"), workspace=workspace)
        ws.attachments.append(db.Attachment(release=release, attached_by=by, columns=selection, reason=reason,
                                            status="awaiting_consent"))
        s.flush()
        _record(record, "workspace.attach_request", workspace, release=release, user=holder,
                **({"reason": reason} if reason else {}), **({"columns": selection} if selection else {}))
        return _view(ws)


def _awaiting(ws: db.Workspace, release: str, holder: str) -> db.Attachment:
    found = next((a for a in ws.attachments if a.release == release), None)
    if found is None or found.status != "awaiting_consent":
        raise WorkspaceError("consent.not_awaiting", N_("release '%(release)s' is not awaiting consent in '%(workspace)s'"),
                             release=release, workspace=ws.name)
    if ws.holder != holder:
        raise WorkspaceError("consent.not_the_holder", N_(
            "'%(account)s' is not the data holder of '%(workspace)s': only '%(holder)s' may answer"),
            account=holder, workspace=ws.name, holder=ws.holder)
    return found


def consent(settings: Settings, workspace: str, release: str, holder: str, record: Recorder = None, *,
            session=None) -> WorkspaceView:
    """The data holder's consent to an attachment asked for: the release (or its column view) is
    built and mounted from the workspace's sandboxes' next start, and the data supply manifest
    records it."""
    with db.transaction(settings.enclave_db_url, session) as s:
        ws = _changeable(_get(s, workspace))
        found = _awaiting(ws, release, holder)
        if _source_holder(s, release) != holder:
            raise WorkspaceError("consent.not_the_source_holder", N_("'%(account)s' does not hold the source of '%(release)s'"),
                                 account=holder, release=release)
        selection, view_hash = found.columns, None
        if session is not None:  # joined: the files written here are undone if that transaction rolls back
            restore = supply.keep_manifest(settings, workspace)

            def undo() -> None:
                restore()
                if selection:
                    supply.remove_view(settings, workspace, release)

            db.after_rollback(s, undo)
        try:
            if selection:
                view_hash = supply.build_view(settings, workspace, release, selection)
            found.status, found.consented_by, found.consented_at = "attached", holder, db.utcnow()
            s.flush()
            _record(record, "workspace.attach", workspace, release=release, reason=found.reason, user=holder,
                    **({"columns": selection, "content_hash": view_hash} if selection else {}))
            # Last step inside the transaction: if the manifest cannot be written, nothing is attached.
            supply.record(settings, workspace, action="attach", release=release, by=found.attached_by,
                          reason=found.reason, columns=selection, view_hash=view_hash, consented_by=holder)
        except supply.SupplyError as exc:
            raise WorkspaceError.from_refusal(exc) from None
        except BaseException:
            if selection:
                supply.remove_view(settings, workspace, release)
            raise
        return _view(ws)


def refuse(settings: Settings, workspace: str, release: str, holder: str, reason: str, record: Recorder = None,
           *, session=None) -> WorkspaceView:
    """The data holder's refusal of an attachment asked for: the request goes, with the reason."""
    if not reason.strip():
        raise WorkspaceError("consent.refusal_reason_missing", N_(
            "say why the release is refused (the reason is recorded and shown to the admins)"))
    with db.transaction(settings.enclave_db_url, session) as s:
        ws = _changeable(_get(s, workspace))
        found = _awaiting(ws, release, holder)
        ws.attachments = [a for a in ws.attachments if a is not found]
        s.flush()
        _record(record, "workspace.attach_refuse", workspace, release=release, user=holder, reason=reason.strip())
        return _view(ws)


def awaiting_consent(settings: Settings, holder: str, session=None) -> list[tuple[WorkspaceView, str]]:
    """(workspace, release) for each attachment awaiting ``holder``'s consent."""
    return [(ws, release) for ws in all_workspaces(settings, session)
            if ws.holder == holder and ws.state != "archived" for release in ws.awaiting]


def detach(settings: Settings, workspace: str, release: str, by: str = "", record: Recorder = None, *,
           session=None) -> WorkspaceView:
    """Take a release (attached or asked for) from the workspace, from its sandboxes' next start."""
    with db.transaction(settings.enclave_db_url, session) as s:
        ws = _changeable(_get(s, workspace))
        found = next((a for a in ws.attachments if a.release == release), None)
        if found is None:
            raise WorkspaceError("workspace.release_not_attached", N_("release '%(release)s' is not attached to '%(workspace)s'"),
                                 release=release, workspace=workspace)
        ws.attachments = [a for a in ws.attachments if a is not found]
        s.flush()
        _record(record, "workspace.detach", workspace, release=release)
        if found.status == "attached":
            if session is not None:  # joined: undone if that transaction is rolled back
                db.after_rollback(s, supply.keep_manifest(settings, workspace))
            supply.record(settings, workspace, action="detach", release=release, by=by)
            # The view's folder goes once the change is committed: until then the attachment may
            # still need it.
            db.after_commit(s, lambda: supply.remove_view(settings, workspace, release))
        return _view(ws)
