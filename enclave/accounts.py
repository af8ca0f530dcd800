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
from traitlets import Integer, Unicode

from . import db
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


def add_user(settings: Settings, username: str, roles: list[str], password: str) -> None:
    """Create an account with ``roles`` in one transaction."""
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


def set_password(settings: Settings, username: str, password: str) -> None:
    """Set a new password and lift any lock-out."""
    _check_password(settings, password)
    with db.transaction(settings.enclave_db_url) as s:
        account = s.get(db.Account, username)
        if account is None:
            raise AccountError(f"no account named '{username}'")
        account.password_hash = _hasher.hash(password)
        account.failed_logins = 0
        account.locked_until = None


class EnclaveAuthenticator(Authenticator):
    """Enclave's accounts on JupyterHub's login page. Groups = the account's roles."""

    enclave_db_url = Unicode(help="Enclave's database (accounts, roles, lock-out state).").tag(config=True)
    allowed_failed_logins = Integer(5, help="Failed logins in a row before the account locks.").tag(config=True)
    lockout_seconds = Integer(600, help="How long a locked account stays locked.").tag(config=True)

    async def authenticate(self, handler, data):
        username = self.normalize_username(data.get("username", ""))
        password = data.get("password", "")
        with db.transaction(self.enclave_db_url) as s:
            account = s.get(db.Account, username)
            if account is None:
                _verify(_DUMMY_HASH, password)
                return None
            now = datetime.now(UTC)
            locked_until = account.locked_until
            if locked_until is not None and locked_until.tzinfo is None:
                locked_until = locked_until.replace(tzinfo=UTC)
            if locked_until is not None and locked_until > now:
                self.log.warning("login refused for %s: account locked until %s", username, locked_until)
                return None
            if not _verify(account.password_hash, password):
                account.failed_logins += 1
                if account.failed_logins >= self.allowed_failed_logins:
                    account.locked_until = now + timedelta(seconds=self.lockout_seconds)
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
