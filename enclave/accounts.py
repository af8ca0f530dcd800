"""Local accounts: created only by admins, passwords hashed with Argon2id (argon2-cffi), repeated
failed logins slowed down per client (:mod:`enclave.logins`), roles handed to JupyterHub as groups
at every login.

NativeAuthenticator 1.3.0 (the latest) was tried first: its login handler fails on JupyterHub
6.1.1 (it reads ``self.statsd``, which JupyterHub 6 removed, and calls ``_render(sync=...)``), so
every login is a 500. This authenticator is the small part of it Enclave needs, on JupyterHub's
own login page: no sign-up, hashed passwords, throttled failures.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from . import db, logins
from .exports import workflow
from .i18n import N_
from .refusals import Refusal
from .settings import Settings

_hasher = PasswordHasher()

# The authenticators subclass JupyterHub's Authenticator, whose import takes about a second: they
# are defined when the hub first asks for them (``enclave.accounts.EnclaveAuthenticator``), so that
# the account commands of ``enclave`` do without JupyterHub.
AUTHENTICATORS = ("RecordedLogins", "EnclaveAuthenticator")

# The audit log's actor for a refused login that names no account.
ANONYMOUS = "anonymous"


def __getattr__(name: str):
    if name not in AUTHENTICATORS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals().update(_define_authenticators())
    return globals()[name]


@cache
def _dummy_hash() -> str:
    """Verified against when the account does not exist, so both cases take the same time."""
    return _hasher.hash(secrets.token_urlsafe(16))


class AccountError(Refusal):
    """An account operation that cannot be done, with the reason (a stable code and its text)."""


class UnknownAccount(AccountError):
    pass


# Names Enclave gives itself where a person's name would stand: no account may take one, or that
# person's steps would pass for Enclave's own.
RESERVED_NAMES = {
    workflow.SYSTEM: "it names what Enclave does by itself: the steps the votes take in an export request's"
                     " history, the approver in a release's signed manifest, and the hub's lifecycle actions"
                     " (freezing an expired workspace, stopping sandboxes, ending an expired account's sessions,"
                     " deleting archived homes) in the audit log",
    ANONYMOUS: "it names, in the audit log, the actor of a refused login that gave no account",
}


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def _check_password(settings: Settings, password: str) -> None:
    if len(password) < settings.accounts.min_password_length:
        raise AccountError("account.password_too_short", N_("password too short: at least %(length)s characters"),
                           length=settings.accounts.min_password_length)


def _check_roles(roles: list[str]) -> list[str]:
    if not roles:
        raise AccountError("account.no_role", N_("role must be one of %(roles)s (got none)"), roles=", ".join(db.ROLES))
    if set(roles) - set(db.ROLES):
        raise AccountError("account.unknown_role", N_("role must be one of %(roles)s (got %(given)s)"),
                           roles=", ".join(db.ROLES), given=", ".join(roles))
    return sorted(set(roles))


def add_user(settings: Settings, username: str, roles: list[str], password: str, record=None, *,
             expires_at: datetime | None = None, session=None, password_hash: str | None = None) -> None:
    """Create an account with ``roles`` in one transaction. ``record``: the audit log's, called
    before the transaction commits (see enclave.workspaces.Recorder). ``session``: a transaction to
    join (``enclave apply``'s). ``password_hash``: an Argon2id hash made beforehand, instead of
    ``password``."""
    if not db.USERNAME.match(username):
        raise AccountError("account.bad_name", N_(
            "user name '%(account)s' is not allowed: 1-32 lower-case letters, digits, '_' or '-', starting with a"
            " letter"), account=username)
    if username in RESERVED_NAMES:
        raise AccountError("account.reserved_name", N_("user name '%(account)s' is reserved: %(reason)s"), account=username,
                           reason=RESERVED_NAMES[username])
    roles = _check_roles(roles)
    if password_hash is None:
        _check_password(settings, password)
        password_hash = _hasher.hash(password)
    with db.transaction(settings.enclave_db_url, session) as s:
        if s.get(db.Account, username) is not None:
            raise AccountError("account.exists", N_("an account named '%(account)s' already exists"), account=username)
        s.add(db.Account(
            username=username,
            password_hash=password_hash,
            roles=[db.AccountRole(role=r) for r in roles],
            expires_at=db.as_utc(expires_at),
        ))
        s.flush()
        if record is not None:
            record("account.create", detail={"user": username, "roles": roles,
                                             **({"expires_at": db.iso(expires_at)} if expires_at else {})})


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def set_password(settings: Settings, username: str, password: str, record=None) -> None:
    """Set a new password and clear the account's login throttles: the failures were guesses at
    the old one. ``record``: as for :func:`add_user`."""
    _check_password(settings, password)
    with db.transaction(settings.enclave_db_url) as s:
        account = s.get(db.Account, username)
        if account is None:
            raise AccountError("account.unknown", N_("no account named '%(account)s'"), account=username)
        account.password_hash = _hasher.hash(password)
        logins.clear(s, username)
        if record is not None:
            record("account.password_set", detail={"user": username})


def clear_throttle(settings: Settings, username: str, client: str | None = None, record=None) -> int:
    """Forget the account's failed logins (of one client address only, given ``client``), so that
    their throttles end; how many were forgotten. Nothing to forget changes nothing and leaves no
    record. ``record``: as for :func:`add_user`."""
    with db.transaction(settings.enclave_db_url) as s:
        if s.get(db.Account, username) is None:
            raise AccountError("account.unknown", N_("no account named '%(account)s'"), account=username)
        forgotten = logins.clear(s, username, client)
        if forgotten and record is not None:
            record("account.throttle_cleared", detail={
                "user": username, "failures": forgotten, **({"client": client} if client else {})})
        return forgotten


def usable(account: db.Account, now: datetime | None = None) -> bool:
    """Whether the account may log in and run sandboxes: active, and not past its expiry."""
    now = now or db.utcnow()
    return account.state == "active" and (account.expires_at is None or db.as_utc(account.expires_at) > now)


@dataclass(frozen=True)
class AccountView:
    """An account as the CLI, the API and the pages show it (never its password hash)."""

    name: str
    roles: tuple[str, ...]
    created_at: datetime
    state: str = "active"
    state_reason: str = ""
    expires_at: datetime | None = None
    usable: bool = True

    def describe(self) -> dict:
        """The account's declared state, JSON-able: the same however it was provisioned."""
        return {"name": self.name, "roles": list(self.roles), "state": self.state,
                "state_reason": self.state_reason, "expires_at": db.iso(self.expires_at)}


def _account_view(a: db.Account, now: datetime) -> AccountView:
    return AccountView(a.username, tuple(sorted(a.role_names)), db.as_utc(a.created_at), a.state, a.state_reason,
                       db.as_utc(a.expires_at), usable(a, now))


def all_accounts(settings: Settings, session=None) -> list[AccountView]:
    """Every account, by name."""
    now = db.utcnow()
    with db.snapshot(settings.enclave_db_url, session) as s:
        return [_account_view(a, now) for a in s.scalars(select(db.Account).order_by(db.Account.username))]


def get_account(settings: Settings, username: str, session=None) -> AccountView:
    with db.snapshot(settings.enclave_db_url, session) as s:
        return _account_view(_get(s, username, lock=False), db.utcnow())


def _get(s, username: str, lock: bool = True) -> db.Account:
    """The account, locked for the change at hand (``lock``; a read takes no lock). A change locks
    the admin accounts first, in one order, whatever account it changes: the last-admin rule reads
    them all, and two changes of two admins must not each see the other still standing."""
    if lock:
        s.scalars(select(db.Account).join(db.AccountRole).where(db.AccountRole.role == "admin")
                  .order_by(db.Account.username).with_for_update()).all()
    account = s.get(db.Account, username, with_for_update=lock)
    if account is None:
        raise UnknownAccount("account.unknown", N_("no account named '%(account)s'"), account=username)
    return account


# What the last usable admin account may not have done to it, in words: the refusal's text.
_LAST_ADMIN = {
    "take the admin role": N_("cannot take the admin role from '%(account)s': it is the last active admin account;"
                              " make another account an admin first"),
    "disable": N_("cannot disable '%(account)s': it is the last active admin account; make another account an admin"
                  " first"),
    "let expire": N_("cannot let expire '%(account)s': it is the last active admin account; make another account an"
                     " admin first"),
    "remove": N_("cannot remove '%(account)s': it is the last active admin account; make another account an admin"
                 " first"),
}


def _check_not_last_admin(s, account: db.Account, doing: str, now: datetime) -> None:
    """The last usable admin stays: without one, nobody could provision anything (or undo this).
    ``doing``: what would be done to it, a key of :data:`_LAST_ADMIN`."""
    if "admin" not in account.role_names or not usable(account, now):
        return
    admins = s.scalars(select(db.Account).join(db.AccountRole).where(db.AccountRole.role == "admin")).all()
    if not any(usable(a, now) for a in admins if a.username != account.username):
        raise AccountError("account.last_admin", _LAST_ADMIN[doing], account=account.username)


def set_roles(settings: Settings, username: str, roles: list[str], record=None, *, session=None) -> AccountView:
    """Replace the account's roles (they reach JupyterHub at its next login). Roles a workspace
    membership needs are refused while the membership lasts."""
    roles = _check_roles(roles)
    now = db.utcnow()
    with db.transaction(settings.enclave_db_url, session) as s:
        account = _get(s, username)
        before = sorted(account.role_names)
        if before == roles:
            return _account_view(account, now)
        if "admin" not in roles:
            _check_not_last_admin(s, account, "take the admin role", now)
        needed = {m.role for m in s.scalars(select(db.Membership).where(db.Membership.username == username))}
        lost = (needed & {"operator", "reviewer"}) - set(roles)
        if lost:
            where = sorted({m.workspace_name for m in s.scalars(select(db.Membership).where(
                db.Membership.username == username, db.Membership.role.in_(lost)))})
            raise AccountError("account.roles_in_use", N_(
                "'%(account)s' is a workspace %(roles)s (in %(workspaces)s): remove those memberships first"),
                account=username, roles=" and ".join(sorted(lost)), workspaces=", ".join(where))
        if "holder" not in roles and (s.scalars(select(db.Source).where(db.Source.holder == username)).first()
                                      or s.scalars(select(db.Workspace).where(db.Workspace.holder == username)).first()):
            raise AccountError("account.holder_role_in_use", N_(
                "'%(account)s' holds sources or is a workspace's data holder: hand them to another holder first"),
                account=username)
        account.roles = [db.AccountRole(role=r) for r in roles]
        s.flush()
        if record is not None:
            record("account.roles_set", detail={"user": username, "roles": roles, "before": before})
        return _account_view(account, now)


def disable(settings: Settings, username: str, reason: str, record=None, *, session=None) -> AccountView:
    """Disable the account: its logins are refused; the provisioning service stops its sandboxes,
    ends its sessions and revokes its tokens (enclave.provisioning.lifecycle)."""
    if not reason.strip():
        raise AccountError("account.disable_reason_missing", N_("say why the account is disabled (a reason is recorded)"))
    now = db.utcnow()
    with db.transaction(settings.enclave_db_url, session) as s:
        account = _get(s, username)
        if account.state == "disabled":
            raise AccountError("account.already_disabled", N_("'%(account)s' is already disabled (%(reason)s)"),
                               account=username, reason=account.state_reason)
        _check_not_last_admin(s, account, "disable", now)
        account.state, account.state_reason = "disabled", reason.strip()
        s.flush()
        if record is not None:
            record("account.disable", detail={"user": username, "reason": reason.strip()})
        return _account_view(account, now)


def enable(settings: Settings, username: str, record=None, *, session=None) -> AccountView:
    now = db.utcnow()
    with db.transaction(settings.enclave_db_url, session) as s:
        account = _get(s, username)
        if account.state == "active":
            raise AccountError("account.not_disabled", N_("'%(account)s' is not disabled"), account=username)
        account.state, account.state_reason = "active", ""
        s.flush()
        if record is not None:
            record("account.enable", detail={"user": username})
        return _account_view(account, now)


def set_expiry(settings: Settings, username: str, expires_at: datetime | None, record=None, *,
               session=None) -> AccountView:
    """From ``expires_at`` on, the account is treated as disabled; None: it never expires."""
    now = db.utcnow()
    expires_at = db.as_utc(expires_at)
    with db.transaction(settings.enclave_db_url, session) as s:
        account = _get(s, username)
        before = db.iso(account.expires_at)
        if expires_at is not None and expires_at <= now:
            _check_not_last_admin(s, account, "let expire", now)
        account.expires_at = expires_at
        s.flush()
        if record is not None:
            record("account.expiry_set", detail={"user": username, "expires_at": db.iso(expires_at), "before": before})
        return _account_view(account, now)


def remove_user(settings: Settings, username: str, record=None, *, session=None) -> None:
    """Delete the account and its memberships. Its audit records stay, under its name."""
    now = db.utcnow()
    with db.transaction(settings.enclave_db_url, session) as s:
        account = _get(s, username)
        _check_not_last_admin(s, account, "remove", now)
        held = [src.name for src in s.scalars(select(db.Source).where(db.Source.holder == username))]
        held += [f"workspace {w.name}" for w in s.scalars(select(db.Workspace).where(db.Workspace.holder == username))]
        if held:
            raise AccountError("account.holds_data", N_(
                "cannot remove '%(account)s': it is the data holder of %(held)s; hand them to another holder first"),
                account=username, held=", ".join(held))
        memberships = sorted(f"{m.workspace_name}:{m.role}" for m in
                             s.scalars(select(db.Membership).where(db.Membership.username == username)))
        s.delete(account)
        # A later account of the same name chooses its own language.
        preference = s.get(db.LanguagePreference, username)
        if preference is not None:
            s.delete(preference)
        s.flush()
        if record is not None:
            record("account.remove", detail={"user": username, "roles": sorted(account.role_names),
                                             **({"memberships": memberships} if memberships else {})})


def _define_authenticators() -> dict[str, type]:
    from jupyterhub.auth import Authenticator
    from traitlets import Any, Integer, Unicode

    from .audit.client import AuditError
    from .audit.hub import hub_records

    class RecordedLogins(Authenticator):
        """Every login attempt into the audit log (``auth.login``, ``ok`` or ``denied``), for either
        authenticator (a base of both), with the client address the proxy saw. A login whose record the
        audit service does not take is refused (fail closed)."""

        enclave_settings = Any(help="enclave.settings.Settings of this hub").tag(config=True)
        login_method = "native"

        async def get_authenticated_user(self, handler, data):
            refusal = {}
            handler._enclave_login_refusal = refusal  # authenticate() may say why it refused
            authenticated = await super().get_authenticated_user(handler, data)
            records = hub_records(self.enclave_settings)
            detail = {"method": self.login_method, "remote_ip": logins.client_address(handler.request)}
            if authenticated is None:
                typed = data.get("username") if isinstance(data, dict) else None
                try:
                    await records.append(refusal.get("account", ANONYMOUS), "auth.login", "denied", detail={
                        **detail, "reason": refusal.get("reason", "not allowed"),
                        **({"user": str(typed)[:256]} if typed else {}),
                        **({"failures": refusal["failures"]} if "failures" in refusal else {})})
                except AuditError as exc:
                    self.log.error("refused login not recorded: %s", exc)
                return None
            try:
                await records.append(authenticated["name"], "auth.login", "ok", detail=detail)
            except AuditError as exc:
                self.log.error("login of %s refused: the audit log did not take its record (%s)", authenticated["name"], exc)
                return None
            return authenticated


    class EnclaveAuthenticator(RecordedLogins):
        """Enclave's accounts on JupyterHub's login page. Groups = the account's roles.

        Repeated failures slow down the client that makes them, for that account, and an account's
        failures from all clients together have an hourly ceiling (:mod:`enclave.logins`); no stranger
        can keep an account's owner out."""

        enclave_db_url = Unicode(help="Enclave's database (accounts, roles, failed logins).").tag(config=True)
        allowed_failed_logins = Integer(
            5, help="Failed logins in a row from one client for one account before that client is slowed down.",
        ).tag(config=True)
        throttle_first_seconds = Integer(
            logins.FIRST_DELAY_SECONDS, help="A slowed-down client's first wait; it doubles with each further failure.",
        ).tag(config=True)
        throttle_max_seconds = Integer(600, help="The longest wait of a slowed-down client.").tag(config=True)
        failures_per_hour = Integer(
            logins.FAILURES_PER_HOUR,
            help="Failed logins for one account in the past hour, from all clients together, at which every"
                 " client that has failed for it is refused (clients that have not failed are not).",
        ).tag(config=True)

        @property
        def throttling(self) -> logins.Throttling:
            return logins.Throttling(self.allowed_failed_logins, timedelta(seconds=self.throttle_first_seconds),
                                     timedelta(seconds=self.throttle_max_seconds), self.failures_per_hour)

        async def authenticate(self, handler, data):
            username = self.normalize_username(data.get("username", ""))
            password = data.get("password", "")
            refusal = getattr(handler, "_enclave_login_refusal", {})
            client = logins.client_address(handler.request)
            rule = self.throttling
            throttled = []  # auth.throttle records, handed over once the failure is stored
            with db.transaction(self.enclave_db_url) as s:
                account = s.get(db.Account, username)
                if account is None:
                    _verify(_dummy_hash(), password)
                    refusal["reason"] = "unknown account"
                    return None
                refusal["account"] = username
                now = db.utcnow()
                failures = logins.AccountFailures.load(s, rule, username, now)
                throttled_reason = failures.refusal(client)
                if throttled_reason is not None:  # the password is not even checked
                    self.log.warning("login refused for %s from %s: %s", username, client, throttled_reason)
                    refusal.update(reason=throttled_reason, failures=failures.failures_of(client))
                    return None
                wrong_password = not _verify(account.password_hash, password)
                if wrong_password:
                    logins.record_failure(s, username, client, now)
                    failures = logins.AccountFailures.load(s, rule, username, now)
                    in_a_row = failures.failures_of(client)
                    refusal.update(reason="wrong password", failures=in_a_row)
                    delay = rule.delay_after(in_a_row)
                    if delay is not None:
                        throttled.append({"user": username, "scope": "client", "remote_ip": client,
                                          "failures": in_a_row, "throttled_until": (now + delay).isoformat(),
                                          "delay_seconds": int(delay.total_seconds())})
                    past_hour = len(failures.past_hour)
                    if past_hour == rule.failures_per_hour:  # this failure reached the ceiling
                        throttled.append({"user": username, "scope": "account", "remote_ip": client,
                                          "failures": past_hour, "throttled_until": failures.ceiling_until().isoformat()})
                elif not usable(account, now):  # the right password: say why, not "wrong password"
                    refusal.update(reason="account expired" if account.state == "active" else "account disabled")
                    return None
                else:
                    logins.forget_client(s, username, client)
                    if _hasher.check_needs_rehash(account.password_hash):
                        account.password_hash = _hasher.hash(password)
                    roles = sorted(account.role_names)
            for detail in throttled:
                self.log.warning("logins for %s throttled (%s) after repeated failures", username, detail["scope"])
                try:
                    await hub_records(self.enclave_settings).append(username, "auth.throttle", "denied", detail=detail)
                except AuditError as exc:  # the throttle protects: it holds, recorded or not
                    self.log.error("throttle of %s not recorded: %s", username, exc)
            if wrong_password:
                return None
            # manage_groups: these groups replace the user's groups at every login.
            return {"name": username, "groups": roles}

    defined = {"RecordedLogins": RecordedLogins, "EnclaveAuthenticator": EnclaveAuthenticator}
    for name, cls in defined.items():
        cls.__qualname__ = name  # as if defined at the top of the module, in logs and config help
    return defined


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
