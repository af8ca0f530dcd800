"""Local accounts: created only by admins, passwords hashed by NativeAuthenticator (bcrypt),
roles kept by Enclave and handed to JupyterHub as groups at every login.

NativeAuthenticator 1.3.0 works with JupyterHub 6.1.1. Two things are changed here:
sign-up is off (accounts come from ``enclave user add``), and the lock-out after repeated
failures is kept in Enclave's database instead of the authenticator's memory, so it survives a
hub restart and holds across hub processes.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import bcrypt
from jupyterhub import orm as hub_orm
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.orm import UserInfo
from traitlets import Unicode

from . import db
from .settings import Settings


class AccountError(Exception):
    pass


def generate_password() -> str:
    return secrets.token_urlsafe(15)


def _hub_session(settings: Settings):
    settings.hub_dir.mkdir(parents=True, exist_ok=True)
    # new_session_factory creates (and stamps) JupyterHub's schema, users_info included.
    return hub_orm.new_session_factory(settings.hub_db_url)()


def add_user(settings: Settings, username: str, roles: list[str], password: str) -> None:
    """Create an account with ``roles``; both databases get it, or neither does."""
    if not db.USERNAME.match(username):
        raise AccountError(
            f"user name '{username}' is not allowed: 1-32 lower-case letters, digits, '_' or '-',"
            " starting with a letter"
        )
    unknown = set(roles) - set(db.ROLES)
    if not roles or unknown:
        raise AccountError(f"role must be one of {', '.join(db.ROLES)} (got {', '.join(roles) or 'none'})")
    if len(password) < settings.accounts.min_password_length:
        raise AccountError(
            f"password too short: at least {settings.accounts.min_password_length} characters"
        )
    hub = _hub_session(settings)
    try:
        if UserInfo.find(hub, username) is not None:
            raise AccountError(f"an account named '{username}' already exists")
        with db.transaction(settings.enclave_db_url) as s:
            if s.get(db.Account, username) is not None:
                raise AccountError(f"an account named '{username}' already exists")
            s.add(db.Account(username=username, roles=[db.AccountRole(role=r) for r in sorted(set(roles))]))
            s.flush()
            hub.add(
                UserInfo(
                    username=username,
                    password=bcrypt.hashpw(password.encode(), bcrypt.gensalt()),
                    is_authorized=True,
                )
            )
            # Committed inside the Enclave transaction: if this fails, the account is rolled back.
            hub.commit()
    except Exception:
        hub.rollback()
        raise
    finally:
        hub.close()


def get_roles(settings: Settings, username: str) -> set[str]:
    with db.transaction(settings.enclave_db_url) as s:
        account = s.get(db.Account, username)
        return account.role_names if account else set()


class EnclaveAuthenticator(NativeAuthenticator):
    """NativeAuthenticator without sign-up, with persistent lock-out and roles as groups."""

    enclave_db_url = Unicode(help="Enclave's database, for roles and lock-out state.").tag(config=True)

    def _account(self, session, username):
        return session.get(db.Account, username)

    # -- lock-out (replaces NativeAuthenticator's in-memory dict) --

    def is_blocked(self, username):
        with db.transaction(self.enclave_db_url) as s:
            account = self._account(s, username)
            until = account.locked_until if account else None
            if until is not None and until.tzinfo is None:
                until = until.replace(tzinfo=UTC)
            return until is not None and until > datetime.now(UTC)

    def add_login_attempt(self, username):
        with db.transaction(self.enclave_db_url) as s:
            account = self._account(s, username)
            if account is None:
                return
            account.failed_logins += 1
            if account.failed_logins >= self.allowed_failed_logins:
                account.locked_until = datetime.now(UTC) + timedelta(seconds=self.seconds_before_next_try)
                account.failed_logins = 0
                self.log.warning("account %s locked after repeated failed logins", username)

    def successful_login(self, username):
        with db.transaction(self.enclave_db_url) as s:
            account = self._account(s, username)
            if account is not None:
                account.failed_logins = 0
                account.locked_until = None

    async def authenticate(self, handler, data):
        name = await super().authenticate(handler, data)
        if name is None:
            return None
        with db.transaction(self.enclave_db_url) as s:
            account = self._account(s, name)
            roles = sorted(account.role_names) if account else []
        if not roles:
            self.log.warning("refusing %s: no Enclave account roles", name)
            return None
        # manage_groups: these groups replace the user's groups at every login.
        return {"name": name, "groups": roles}

    def get_handlers(self, app):
        # Keep only login and change-password; sign-up and self-authorisation are not offered.
        allowed = ("/login", "/change-password")
        return [h for h in super().get_handlers(app) if h[0].startswith(allowed)]
