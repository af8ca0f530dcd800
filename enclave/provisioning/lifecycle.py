"""The lifecycle of workspaces and accounts, enforced on running sandboxes by the hub.

The service layer (:mod:`enclave.workspaces`, :mod:`enclave.accounts`) only changes state in
Enclave's database, from the ``enclave`` command, ``enclave apply``, the provisioning service or
its pages: none of them holds the hub's users, spawners, sessions and tokens. The hub does, so it
reconciles them with that state itself, at start-up and then every ``[workspaces]
lifecycle_interval_seconds`` (:class:`Lifecycle`, started by ``enclave.hub.EnclaveHub``):

* a workspace past its ``expires_at`` is frozen (``workspace.freeze``, reason "expired on …");
* every running sandbox of a frozen or archived workspace, of a workspace its user is no longer an
  operator of, and of a disabled, expired or removed account is stopped, each with a
  ``sandbox.stop`` record saying why;
* a disabled, expired or removed account's sessions end (its hub cookie is made worthless by a new
  cookie id, and its API and OAuth tokens are deleted: every server's and service's cookie holds
  one), and an expired account gets one ``account.expire`` record;
* an archived workspace's homes are deleted once ``[workspaces] archive_retention_days`` have
  passed since it was archived (``workspace.homes_delete``, recorded before anything is deleted).

What the hub does by itself is recorded with the actor ``system``: the name Enclave's own steps
carry (an export request's automatic steps too), which no account may take
(:data:`enclave.accounts.RESERVED_NAMES`), so nobody's action can pass for it, nor it for a person's.

At the door, :func:`start_refusal` refuses a sandbox in a workspace that is not active, and to an
account that is not usable, without waiting for the next run (the spawner and the spawn page ask it).

How an archived workspace's homes are kept read-only: nothing starts in an archived workspace
(:func:`start_refusal`; archiving is final), and a home's disk image is mounted only by the
supervisor of a starting sandbox (:mod:`enclave.sandbox.home_image`), so once its sandboxes are
stopped nothing mounts or writes a home of it again. Its images are root's, 0600, outside every
sandbox; a file mode would not hold root back, so none is set.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from .. import accounts, db, i18n, workspaces
from ..audit.client import AuditClient, AuditError
from ..exports.workflow import SYSTEM
from ..files import atomic_write
from ..i18n import N_
from ..sandbox.home_image import is_mounted, unmount_home
from ..settings import Settings

# The spawner's ``stop_requested_by`` kind of a stop the lifecycle asks for: its ``sandbox.stop``
# record names the actor ``system`` and gives the lifecycle's reason (enclave.spawner).
STOP_KIND = SYSTEM


# -- the state, read once per run --

@dataclass
class WorkspaceState:
    state: str
    reason: str
    expires_at: datetime | None
    state_changed_at: datetime | None
    operators: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class AccountState:
    state: str
    state_reason: str
    expires_at: datetime | None


@dataclass
class State:
    workspaces: dict[str, WorkspaceState]
    accounts: dict[str, AccountState]


def read_state(settings: Settings) -> State:
    """Workspaces' and accounts' states and the workspaces' operators, in one read transaction
    (three small selects of a few columns: this runs every few seconds; it takes no write lock)."""
    with db.snapshot(settings.enclave_db_url) as s:
        found = {row.name: WorkspaceState(row.state, row.state_reason or "", db.as_utc(row.expires_at),
                                          db.as_utc(row.state_changed_at))
                 for row in s.execute(select(db.Workspace.name, db.Workspace.state, db.Workspace.state_reason,
                                             db.Workspace.expires_at, db.Workspace.state_changed_at))}
        for ws, user in s.execute(select(db.Membership.workspace_name, db.Membership.username)
                                  .where(db.Membership.role == "operator")):
            found[ws].operators.add(user)
        people = {row.username: AccountState(row.state, row.state_reason or "", db.as_utc(row.expires_at))
                  for row in s.execute(select(db.Account.username, db.Account.state, db.Account.state_reason,
                                              db.Account.expires_at))}
    return State(found, people)


def account_unusable(name: str, account: AccountState | None, now: datetime, native: bool) -> str | None:
    """Why the account may no longer work (log in, keep sessions, run sandboxes), or None.
    ``account`` None: no such account, which with Enclave's own accounts (``native``) means it was
    removed; with an identity provider the hub's users have no account here, and the IdP decides."""
    if account is None:
        return f"account '{name}' was removed" if native else None
    if account.state != "active":
        return f"account '{name}' is disabled: {account.state_reason}"
    if not accounts.usable(account, now):
        return f"account '{name}' expired on {db.iso(account.expires_at)}"
    return None


def _workspace_closed(name: str, ws: WorkspaceState, now: datetime) -> str | None:
    if ws.state != "active":
        return f"workspace '{name}' is {ws.state}: {ws.reason}"
    if ws.expires_at is not None and ws.expires_at <= now:  # frozen at this run, or the next
        return f"workspace '{name}' expired on {db.iso(ws.expires_at)}"
    return None


def stop_reason(state: State, user: str, workspace: str, now: datetime, native: bool) -> str | None:
    """Why ``user``'s running sandbox of ``workspace`` must stop, or None."""
    why = account_unusable(user, state.accounts.get(user), now, native)
    if why:
        return why
    ws = state.workspaces.get(workspace)
    if ws is None:
        return f"workspace '{workspace}' no longer exists"
    why = _workspace_closed(workspace, ws, now)
    if why:
        return why
    if user not in ws.operators:
        return f"'{user}' is no longer an operator of workspace '{workspace}'"
    return None


# -- at the door --

def start_refusal(settings: Settings, username: str, ws: workspaces.WorkspaceView) -> i18n.Message | None:
    """Why ``username`` may not start a sandbox in ``ws`` now (a frozen, archived or expired
    workspace, a disabled or expired account), said to them as a message with a stable code, or
    None. (Whether they are an operator of it is checked by the caller.)"""
    now = db.utcnow()
    try:
        account = accounts.get_account(settings, username)
    except accounts.AccountError:  # an identity provider's user: the IdP let them in
        account = None
    params = {"user": username, "workspace": ws.name}
    if account is not None and account.state != "active":
        return i18n.Message("start.account_disabled", N_(
            "Your account '%(user)s' is disabled (%(reason)s): it cannot start sandboxes."),
            {**params, "reason": account.state_reason})
    if account is not None and not account.usable:
        return i18n.Message("start.account_expired", N_(
            "Your account '%(user)s' expired on %(date)s: it cannot start sandboxes."),
            {**params, "date": db.iso(account.expires_at)})
    if ws.state == "frozen":
        return i18n.Message("start.workspace_frozen", N_(
            "Workspace '%(workspace)s' is frozen (%(reason)s): no sandbox starts in it until an"
            " administrator unfreezes it."), {**params, "reason": ws.state_reason})
    if ws.state == "archived":
        return i18n.Message("start.workspace_archived", N_(
            "Workspace '%(workspace)s' is archived (%(reason)s): no sandbox starts in it again."),
            {**params, "reason": ws.state_reason})
    if ws.expires_at is not None and ws.expires_at <= now:
        return i18n.Message("start.workspace_expired", N_(
            "Workspace '%(workspace)s' expired on %(date)s: no sandbox starts in it."),
            {**params, "date": db.iso(ws.expires_at)})
    return None


# -- the hub's periodic run --

class Lifecycle:
    """The lifecycle's enforcement in the hub process: :meth:`run` once at start-up, then every
    ``[workspaces] lifecycle_interval_seconds``. Each run reads the state once and does only what
    is still to do, so a run that fails half-way (the audit service away, say) is finished by the
    next one."""

    def __init__(self, hub, settings: Settings) -> None:
        self.hub = hub
        self.settings = settings
        self.native = settings.hub.authenticator == "native"
        self.log = hub.log  # into the hub's log, with its own lines
        # Blocking appends, from the threads that run the service layer and delete homes.
        self.audit = AuditClient(settings)
        # Accounts whose sessions this hub has ended, while they stay unusable (no login gives them
        # a new one); an account usable again is forgotten, so that a later disable ends them again.
        self._ended: set[str] = set()

    @property
    def _state_file(self) -> Path:
        """Expired accounts whose ``account.expire`` is recorded, with the expiry recorded: one
        record per expiry, across hub restarts."""
        return self.settings.hub_dir / "lifecycle.json"

    def _read_state_file(self) -> dict:
        try:
            return json.loads(self._state_file.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            self.log.error("lifecycle: %s is not JSON; it is written anew", self._state_file)
            return {}

    def _record(self, action: str, workspace: str | None = None, detail: dict | None = None) -> None:
        self.audit.append("hub", SYSTEM, action, workspace=workspace, detail=detail)

    async def run(self) -> None:
        """One run; whatever goes wrong is logged, never raised into the hub's periodic callback."""
        try:
            await self.enforce()
        except Exception:
            self.log.exception("lifecycle: this run did not finish; the next one takes it up")

    async def enforce(self) -> None:
        now = db.utcnow()
        state = await asyncio.to_thread(read_state, self.settings)
        await self._freeze_expired(state, now)
        # Sessions first: a stop takes seconds, and meanwhile the person is already out.
        await self._end_sessions(state, now)
        await self._stop_sandboxes(state, now)
        await self._delete_archived_homes(state, now)

    async def _freeze_expired(self, state: State, now: datetime) -> None:
        for name, ws in state.workspaces.items():
            if ws.state != "active" or ws.expires_at is None or ws.expires_at > now:
                continue
            reason = f"expired on {db.iso(ws.expires_at)}"
            try:
                await asyncio.to_thread(workspaces.freeze, self.settings, name, reason, self._record)
            except workspaces.WorkspaceError as exc:  # changed meanwhile (frozen, or its expiry moved)
                self.log.info("lifecycle: workspace %s not frozen at its expiry: %s", name, exc)
                continue
            except AuditError as exc:  # not recorded, so not frozen: the next run tries again
                self.log.error("lifecycle: workspace %s expired, but its freeze is not recorded: %s", name, exc)
                continue
            self.log.info("lifecycle: workspace %s frozen: %s", name, reason)
            ws.state, ws.reason = "frozen", reason

    async def _stop_sandboxes(self, state: State, now: datetime) -> None:
        stops = []
        for user in list(self.hub.users.values()):
            for server_name, spawner in list(user.spawners.items()):
                # A start or stop under way is left to finish: the next run sees where it ended.
                if not server_name or not spawner.active or spawner.pending:
                    continue
                reason = stop_reason(state, user.name, server_name, now, self.native)
                if reason:
                    stops.append(self._stop(user, server_name, reason))
        await asyncio.gather(*stops)

    async def _stop(self, user, server_name: str, reason: str) -> None:
        spawner = user.spawners[server_name]
        self.log.info("lifecycle: stopping %s/%s: %s", user.name, server_name, reason)
        spawner.stop_requested_by = (STOP_KIND, reason)
        spawner._stop_pending = True  # as JupyterHub's own stops: nothing else starts a stop meanwhile
        try:
            await self.hub.proxy.delete_user(user, server_name)
            await user.stop(server_name)
        except Exception:
            self.log.exception("lifecycle: stopping %s/%s failed", user.name, server_name)
        finally:
            spawner._stop_pending = False

    async def _end_sessions(self, state: State, now: datetime) -> None:
        from jupyterhub import orm

        hub_db = self.hub.db
        known = {name for (name,) in hub_db.query(orm.User.name)}
        unusable = {}
        for name in known | state.accounts.keys():
            why = account_unusable(name, state.accounts.get(name), now, self.native)
            if why:
                unusable[name] = why
        self._ended &= unusable.keys()
        await self._record_expiries(state, unusable)
        ended = []
        for name, why in sorted(unusable.items()):
            if name in self._ended:
                continue
            orm_user = orm.User.find(hub_db, name)
            if orm_user is not None:
                _end_sessions_of(hub_db, orm_user)
                ended.append(name)
                self.log.info("lifecycle: sessions and tokens of %s ended: %s", name, why)
            self._ended.add(name)
        if ended:
            hub_db.commit()

    async def _record_expiries(self, state: State, unusable: dict[str, str]) -> None:
        """One ``account.expire`` per expiry of an account (kept in :attr:`_state_file`)."""
        recorded = self._read_state_file().get("expired_accounts", {})
        expired = {name: db.iso(state.accounts[name].expires_at) for name, why in unusable.items()
                   if name in state.accounts and state.accounts[name].state == "active"}
        kept = {name: at for name, at in recorded.items() if expired.get(name) == at}
        for name, at in sorted(expired.items()):
            if kept.get(name) == at:
                continue
            try:
                await asyncio.to_thread(self._record, "account.expire", None, {"user": name, "expires_at": at})
            except AuditError as exc:
                self.log.error("lifecycle: expiry of account %s not recorded (the next run tries again): %s", name, exc)
                continue
            kept[name] = at
        if kept != recorded:
            atomic_write(self._state_file, json.dumps({"expired_accounts": kept}, indent=2), mode=0o600)

    async def _delete_archived_homes(self, state: State, now: datetime) -> None:
        retention = timedelta(days=self.settings.workspaces.archive_retention_days)
        running = {name for user in self.hub.users.values() for name, sp in user.spawners.items() if sp.active}
        for name, ws in state.workspaces.items():
            if ws.state != "archived" or ws.state_changed_at is None or ws.state_changed_at + retention > now:
                continue
            if name in running:  # asked to stop above; its homes go once it has
                continue
            try:
                await asyncio.to_thread(self._delete_homes, name, ws.state_changed_at)
            except AuditError as exc:
                self.log.error("lifecycle: homes of archived workspace %s kept: their deletion is not recorded (%s)",
                          name, exc)
            except OSError:
                self.log.exception("lifecycle: deleting the homes of archived workspace %s failed", name)

    def _delete_homes(self, workspace: str, archived_at: datetime) -> None:
        """Delete every operator's home of ``workspace``: its disk image, its mount point and its
        JupyterLab state. Recorded first: without its record, nothing is deleted."""
        s = self.settings
        images = sorted(s.home_images_dir.glob(f"*/{workspace}.ext4*"))  # with a .partial left by a crash
        homes = sorted(p for p in s.homes_dir.glob(f"*/{workspace}") if p.is_dir())
        lab_states = sorted(p for p in (s.home / "lab-state").glob(f"*/{workspace}") if p.is_dir())
        owners = sorted({p.parent.name for p in images + homes + lab_states})
        if not owners:
            return
        self._record("workspace.homes_delete", workspace, {"homes": owners, "archived_at": db.iso(archived_at)})
        for home in homes:
            unmount_home(home)  # none should be mounted: their sandboxes are stopped
            if is_mounted(home):
                raise OSError(f"{home} is still mounted: not deleted")
            shutil.rmtree(home)
        for image in images:
            image.unlink(missing_ok=True)
        for lab_state in lab_states:
            shutil.rmtree(lab_state)
        self.log.info("lifecycle: homes of archived workspace %s deleted: %s", workspace, ", ".join(owners))


def _end_sessions_of(hub_db, orm_user) -> None:
    """End every session of a hub user, as a logout of all their browsers at once: a new cookie id
    (the hub's login cookie holds the old one, which then finds nobody), and every API and OAuth
    token deleted (the cookies of their servers and of the services hold OAuth tokens)."""
    from jupyterhub import orm
    from jupyterhub.utils import new_token

    orm_user.cookie_id = new_token()
    # Queried, not ``orm_user.api_tokens``: the hub's session keeps loaded collections (it does not
    # expire them at commit), and a token may have been made by another process (``jupyterhub token``).
    for token in hub_db.query(orm.APIToken).filter_by(user_id=orm_user.id):
        hub_db.delete(token)
    for code in hub_db.query(orm.OAuthCode).filter_by(user_id=orm_user.id):
        hub_db.delete(code)
