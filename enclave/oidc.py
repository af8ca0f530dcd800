"""Logins through an OpenID Connect provider (GenericOAuthenticator), recorded as native ones are."""

from __future__ import annotations

from oauthenticator.generic import GenericOAuthenticator

from .accounts import RecordedLogins


class EnclaveOAuthenticator(RecordedLogins, GenericOAuthenticator):
    login_method = "oidc"
