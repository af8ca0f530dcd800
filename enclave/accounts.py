"""Local accounts: created only by admins, passwords hashed with Argon2id (argon2-cffi),
locked after repeated failures, roles handed to JupyterHub as groups at every login.

NativeAuthenticator 1.3.0 (the latest) was tried first: its login handler fails on JupyterHub
6.1.1 (it reads ``self.statsd``, which JupyterHub 6 removed, and calls ``_render(sync=...)``), so
every login is a 500. This authenticator is the small part of it Enclave needs, on JupyterHub's
own login page: no sign-up, hashed passwords, a persistent lock-out.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from jupyterhub.auth import Authenticator
from traitlets import Any, Integer, Unicode

from . import db
from .audit.client import AuditError
from .audit.hub import hub_records
from .settings import Settings

_hasher = PasswordHasher()
# Verified against when the account does not exist, so both cases take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class AccountError(Exception):
    pass


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def _check_password(settings: Settings, password: str) -> None:
    if len(password) < settings.accounts.min_password_length:
        raise AccountError(f"password too short: at least {settings.accounts.min_password_length} characters")


def add_user(settings: Settings, username: str, roles: list[str], password: str, record=None) -> None:
    """Create an account with ``roles`` in one transaction. ``record``: the audit log's, called
    before the transaction commits (see enclave.workspaces.Recorder)."""
    if not db.USERNAME.match(username):
        raise AccountError(
            f"user name '{username}' is not allowed: 1-32 lower-case letters, digits, '_' or '-',"
            " starting with a letter"
        )
    unknown = set(roles) - set(db.ROLES)
    if not roles or unknown:
        raise AccountError(f"role must be one of {', '.join(db.ROLES)} (got {', '.join(roles) or 'none'})")
    _check_password(settings, password)
    with db.transaction(settings.enclave_db_url) as s:
        if s.get(db.Account, username) is not None:
            raise AccountError(f"an account named '{username}' already exists")
        s.add(db.Account(
            username=username,
            password_hash=_hasher.hash(password),
            roles=[db.AccountRole(role=r) for r in sorted(set(roles))],
        ))
        if record is not None:
            record("account.create", detail={"user": username, "roles": sorted(set(roles))})


def set_password(settings: Settings, username: str, password: str, record=None) -> None:
    """Set a new password and lift any lock-out. ``record``: as for :func:`add_user`."""
    _check_password(settings, password)
    with db.transaction(settings.enclave_db_url) as s:
        account = s.get(db.Account, username)
        if account is None:
            raise AccountError(f"no account named '{username}'")
        account.password_hash = _hasher.hash(password)
        account.failed_logins = 0
        account.locked_until = None
        if record is not None:
            record("account.password_set", detail={"user": username})


class RecordedLogins(Authenticator):
    """Every login attempt into the audit log (``auth.login``, ``ok`` or ``denied``), for either
    authenticator (a base of both). A login whose record the audit service does not take is refused
    (fail closed)."""

    enclave_settings = Any(help="enclave.settings.Settings of this hub").tag(config=True)
    login_method = "native"

    async def get_authenticated_user(self, handler, data):
        refusal = {}
        handler._enclave_login_refusal = refusal  # authenticate() may say why it refused
        authenticated = await super().get_authenticated_user(handler, data)
        records = hub_records(self.enclave_settings)
        detail = {"method": self.login_method, "remote_ip": handler.request.remote_ip}
        if authenticated is None:
            typed = data.get("username") if isinstance(data, dict) else None
            try:
                await records.append(refusal.get("account", "anonymous"), "auth.login", "denied", detail={
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
    """Enclave's accounts on JupyterHub's login page. Groups = the account's roles."""

    enclave_db_url = Unicode(help="Enclave's database (accounts, roles, lock-out state).").tag(config=True)
    allowed_failed_logins = Integer(5, help="Failed logins in a row before the account locks.").tag(config=True)
    lockout_seconds = Integer(600, help="How long a locked account stays locked.").tag(config=True)

    async def authenticate(self, handler, data):
        username = self.normalize_username(data.get("username", ""))
        password = data.get("password", "")
        refusal = getattr(handler, "_enclave_login_refusal", {})
        with db.transaction(self.enclave_db_url) as s:
            account = s.get(db.Account, username)
            if account is None:
                _verify(_DUMMY_HASH, password)
                refusal["reason"] = "unknown account"
                return None
            refusal["account"] = username
            now = datetime.now(UTC)
            locked_until = account.locked_until
            if locked_until is not None and locked_until.tzinfo is None:
                locked_until = locked_until.replace(tzinfo=UTC)
            if locked_until is not None and locked_until > now:
                self.log.warning("login refused for %s: account locked until %s", username, locked_until)
                refusal["reason"] = f"account locked until {locked_until.isoformat()}"
                return None
            if not _verify(account.password_hash, password):
                account.failed_logins += 1
                refusal.update(reason="wrong password", failures=account.failed_logins)
                if account.failed_logins >= self.allowed_failed_logins:
                    locked_until = now + timedelta(seconds=self.lockout_seconds)
                    try:
                        await hub_records(self.enclave_settings).append(
                            username, "auth.throttle", "denied", detail={
                                "user": username, "failures": account.failed_logins,
                                "locked_until": locked_until.isoformat(), "remote_ip": handler.request.remote_ip})
                    except AuditError as exc:  # the lock-out protects: it holds, recorded or not
                        self.log.error("lock-out of %s not recorded: %s", username, exc)
                    account.locked_until = locked_until
                    account.failed_logins = 0
                    self.log.warning("account %s locked after repeated failed logins", username)
                return None
            account.failed_logins = 0
            account.locked_until = None
            if _hasher.check_needs_rehash(account.password_hash):
                account.password_hash = _hasher.hash(password)
            roles = sorted(account.role_names)
        # manage_groups: these groups replace the user's groups at every login.
        return {"name": username, "groups": roles}


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
