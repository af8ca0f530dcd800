"""The audit service's JSON query API, for administrators (the admin audit page reads it).

Behind the proxy at ``/services/audit/api/``; who the caller is comes from JupyterHub (HubOAuth
cookie or ``Authorization: token``), and every call needs the custom scope ``custom:audit:read``.
Reads go to the database read-only, off the event loop, so they never hold up appends.
"""

from __future__ import annotations

import json
import os
from functools import partial

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from tornado import web
from tornado.ioloop import IOLoop

from .checkpoints import key_id, public_pem
from .openapi import openapi_document
from .reader import AuditReader, BadQuery

SCOPE_READ = "custom:audit:read"


class BaseHandler(HubOAuthenticated, web.RequestHandler):
    @property
    def reader(self) -> AuditReader:
        return self.settings["reader"]

    def set_default_headers(self):
        self.set_header("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")

    def prepare(self):
        user = self.current_user
        if not user:
            raise web.HTTPError(403, "not authenticated: log in, or send 'Authorization: token ...'")
        if SCOPE_READ not in (user.get("scopes") or []):
            raise web.HTTPError(403, f"reading the audit log needs the {SCOPE_READ} scope (administrators)")

    async def call(self, fn, *args, **kwargs):
        return await IOLoop.current().run_in_executor(None, partial(fn, *args, **kwargs))

    def write_json(self, value) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(value, ensure_ascii=False))

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "error": message}))


class RecordsAPI(BaseHandler):
    async def get(self):
        args = {name: self.get_argument(name, "") or None for name in ("user", "workspace", "action", "since", "until")}
        try:
            after = int(self.get_argument("after", "")) if self.get_argument("after", "") else None
            limit = int(self.get_argument("limit", "100"))
        except ValueError:
            raise web.HTTPError(400, "after and limit must be whole numbers") from None
        order = self.get_argument("order", "asc")
        if order not in ("asc", "desc"):
            raise web.HTTPError(400, "order must be asc or desc")
        try:
            page = await self.call(self.reader.query, **args, after=after, limit=limit, newest_first=order == "desc")
        except BadQuery as exc:
            raise web.HTTPError(400, str(exc)) from None
        self.write_json(page)


class CheckpointAPI(BaseHandler):
    async def get(self):
        cps = await self.call(self.reader.checkpoints)
        public: Ed25519PublicKey = self.settings["public_key"]
        self.write_json({"checkpoint": cps[-1].to_json() if cps else None, "key_id": key_id(public),
                         "public_key": public_pem(public).decode()})


class OpenAPIHandler(BaseHandler):
    def get(self):
        self.write_json(openapi_document(self.settings["prefix"]))


def make_app(reader: AuditReader, public_key: Ed25519PublicKey, prefix: str) -> web.Application:
    p = prefix.rstrip("/") + "/"
    routes = [
        (p + "oauth_callback", HubOAuthCallbackHandler),
        (p + "api/records", RecordsAPI),
        (p + "api/checkpoints/latest", CheckpointAPI),
        (p + "api/openapi.json", OpenAPIHandler),
    ]
    return web.Application(routes, reader=reader, public_key=public_key, prefix=p, cookie_secret=os.urandom(32))
