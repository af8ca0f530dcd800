"""Workspaces: who works in them, in which role, and which releases their sandboxes see."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from . import db, supply
from .audit.records import without_floats
from .releases import release_dir
from .sandbox.home_image import MIB, DiskUsage, usage
from .settings import LimitSettings, Settings


class WorkspaceError(Exception):
    """A workspace operation that cannot be done, with the reason."""


class UnknownWorkspace(WorkspaceError):
    pass


@dataclass(frozen=True)
class WorkspaceView:
    """What the hub needs to know about a workspace, detached from the database session."""

    name: str
    operators: frozenset[str]
    reviewers: frozenset[str]
    releases: tuple[str, ...]
    limits: dict = field(default_factory=dict)
    # Guard settings for the workspace's servers (enclave_guard.policy.GuardSettings keys).
    guard: dict = field(default_factory=dict)
    # Releases attached as column views: release -> {table: [columns]}.
    views: dict = field(default_factory=dict)

    def effective_limits(self, defaults: LimitSettings) -> LimitSettings:
        return defaults.model_copy(update=self.limits)


def _get(session, name: str) -> db.Workspace:
    ws = session.get(db.Workspace, name)
    if ws is None:
        raise UnknownWorkspace(f"no workspace named '{name}'")
    return ws


def _view(ws: db.Workspace) -> WorkspaceView:
    return WorkspaceView(
        name=ws.name,
        operators=frozenset(ws.members_with("operator")),
        reviewers=frozenset(ws.members_with("reviewer")),
        releases=tuple(sorted(a.release for a in ws.attachments)),
        limits=dict(ws.limits or {}),
        guard=dict(ws.guard or {}),
        views={a.release: a.columns for a in ws.attachments if a.columns},
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


def create(settings: Settings, name: str, record: Recorder = None) -> WorkspaceView:
    if not db.WORKSPACE_NAME.match(name):
        raise WorkspaceError(
            f"workspace name '{name}' is not allowed: use 1-40 lower-case letters, digits and '-',"
            " starting and ending with a letter or digit"
        )
    with db.transaction(settings.enclave_db_url) as s:
        if s.get(db.Workspace, name) is not None:
            raise WorkspaceError(f"workspace '{name}' already exists")
        ws = db.Workspace(name=name, limits={})
        s.add(ws)
        s.flush()
        _record(record, "workspace.create", name)
        return _view(ws)


def home_usages(settings: Settings, name: str) -> dict[str, DiskUsage]:
    """operator -> the use of their home in workspace ``name``, for each home that has its image
    (a home gets one at its first start)."""
    usages = {}
    for image in sorted(settings.home_images_dir.glob(f"*/{name}.ext4")):
        home, _ = settings.operator_home(image.parent.name, name)
        if (found := usage(image, home)) is not None:
            usages[image.parent.name] = found
    return usages


def set_limits(settings: Settings, name: str, limits: dict, record: Recorder = None) -> WorkspaceView:
    """Override [sandbox.limits] for this workspace's sandboxes (from their next start). A disk
    quota below what a home of the workspace already uses is refused: its files would not fit."""
    try:
        checked = LimitSettings(**limits).model_dump(include=set(limits))
    except ValueError as exc:
        raise WorkspaceError(f"invalid limits for '{name}': {exc}") from None
    if "disk_mb" in checked:
        too_full = [f"{user}'s home uses {u.used_mb} MiB" for user, u in home_usages(settings, name).items()
                    if u.used > checked["disk_mb"] * MIB]
        if too_full:
            raise WorkspaceError(f"cannot lower the disk quota of '{name}' to {checked['disk_mb']} MiB: "
                                 f"{', '.join(too_full)}; files must be deleted there first")
    with db.transaction(settings.enclave_db_url) as s:
        ws = _get(s, name)
        before = dict(ws.limits or {})
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


def set_guard(settings: Settings, name: str, guard: dict, record: Recorder = None) -> WorkspaceView:
    """Change guard settings for this workspace's servers (from their next start).

    ACRO's thresholds are not among them: they come from [exports] for every workspace, because the
    review service checks outputs with the same thresholds.
    """
    if "acro" in guard:
        raise WorkspaceError("ACRO thresholds are set in [exports] for all workspaces, not per workspace")
    with db.transaction(settings.enclave_db_url) as s:
        ws = _get(s, name)
        merged = {**(ws.guard or {}), **guard}
        python = settings.sandbox.python_env / "bin" / "python"
        check = subprocess.run([str(python), "-I", "-c", _CHECK_GUARD_SETTINGS], input=json.dumps(merged),
                               capture_output=True, text=True, timeout=120)
        if check.returncode != 0:
            reason = check.stderr.strip().splitlines()[-1] if check.stderr.strip() else f"exit {check.returncode}"
            raise WorkspaceError(f"invalid guard settings for '{name}': {reason}")
        before = dict(ws.guard or {})
        ws.guard = merged
        s.flush()
        _record(record, "workspace.guard_set", name, guard=merged, before=before)
        return _view(ws)


def get(settings: Settings, name: str) -> WorkspaceView:
    with db.transaction(settings.enclave_db_url) as s:
        return _view(_get(s, name))


def all_workspaces(settings: Settings) -> list[WorkspaceView]:
    with db.transaction(settings.enclave_db_url) as s:
        return [_view(ws) for ws in s.scalars(select(db.Workspace).order_by(db.Workspace.name))]


def for_user(settings: Settings, username: str) -> list[tuple[WorkspaceView, set[str]]]:
    """The workspaces a user belongs to, each with the user's roles in it."""
    return [
        (ws, {r for r in ("operator", "reviewer") if username in getattr(ws, r + "s")})
        for ws in all_workspaces(settings)
        if username in ws.operators | ws.reviewers
    ]


def add_member(settings: Settings, workspace: str, username: str, role: str, record: Recorder = None) -> WorkspaceView:
    if role not in db.WORKSPACE_ROLES:
        raise WorkspaceError(f"role '{role}' is not a workspace role ({', '.join(db.WORKSPACE_ROLES)})")
    with db.transaction(settings.enclave_db_url) as s:
        ws = _get(s, workspace)
        account = s.get(db.Account, username)
        if account is None:
            raise WorkspaceError(f"no account named '{username}'")
        if role not in account.role_names:
            raise WorkspaceError(
                f"'{username}' cannot be a workspace {role}: the account does not hold the {role} role"
            )
        if username in ws.members_with(role):
            raise WorkspaceError(f"'{username}' is already a {role} of '{workspace}'")
        ws.members.append(db.Membership(username=username, role=role))
        s.flush()
        _record(record, "workspace.member_add", workspace, user=username, role=role)
        return _view(ws)


def attach(
    settings: Settings,
    workspace: str,
    release: str,
    by: str,
    columns: list[str] | None = None,
    reason: str = "",
    record: Recorder = None,
) -> WorkspaceView:
    """Attach a release, or only ``columns`` of it (a view), and record it in the supply manifest."""
    path = release_dir(settings, release) / "data"  # validates the name
    if not path.is_dir():
        raise WorkspaceError(f"release '{release}' is not in the release store ({settings.release_store})")
    with db.transaction(settings.enclave_db_url) as s:
        ws = _get(s, workspace)
        if release in {a.release for a in ws.attachments}:
            raise WorkspaceError(f"release '{release}' is already attached to '{workspace}'")
        selection = view_hash = None
        try:
            if columns:
                selection = supply.select_columns(supply.release_tables(settings, release), release, columns)
                view_hash = supply.build_view(settings, workspace, release, selection)
            ws.attachments.append(db.Attachment(release=release, attached_by=by, columns=selection, reason=reason))
            s.flush()
            _record(record, "workspace.attach", workspace, release=release, reason=reason,
                    **({"columns": selection, "content_hash": view_hash} if selection else {}))
            # Last step inside the transaction: if the manifest cannot be written, nothing is attached.
            supply.record(settings, workspace, action="attach", release=release, by=by, reason=reason,
                          columns=selection, view_hash=view_hash)
        except supply.SupplyError as exc:
            raise WorkspaceError(str(exc)) from None
        except BaseException:
            if selection:
                supply.remove_view(settings, workspace, release)
            raise
        return _view(ws)


def detach(settings: Settings, workspace: str, release: str, by: str = "", record: Recorder = None) -> WorkspaceView:
    with db.transaction(settings.enclave_db_url) as s:
        ws = _get(s, workspace)
        kept = [a for a in ws.attachments if a.release != release]
        if len(kept) == len(ws.attachments):
            raise WorkspaceError(f"release '{release}' is not attached to '{workspace}'")
        ws.attachments = kept
        s.flush()
        _record(record, "workspace.detach", workspace, release=release)
        supply.record(settings, workspace, action="detach", release=release, by=by)
        result = _view(ws)
    supply.remove_view(settings, workspace, release)
    return result
