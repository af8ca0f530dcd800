"""The OpenAPI 3.1 document of the provisioning API, served at ``api/openapi.json``.

As for the review service (:mod:`enclave.exports.openapi`, whose validation this API shares), the
document is the one statement of what each operation takes: the handlers look up their operation
here, and path parameters and JSON bodies are validated against its schemas before the service
layer is asked, so a value of the wrong type is a 400 naming the field. The rules a schema cannot
state (the last admin, operator and reviewer of one workspace, a release's holder) are the service
layer's (:mod:`enclave.accounts`, :mod:`enclave.workspaces`, :mod:`enclave.sources`): a 409 with
its message.
"""

from __future__ import annotations

from functools import cache

from .. import db, releases, sources
from ..i18n import N_
from ..rbac import ACCOUNT_ROLES, WORKSPACE_ROLES
from ..services import json_api_document
from ..settings import LimitSettings
from .client import APPLY_BODY_LIMIT

# Free text: reasons and purposes (应用场景), Chinese welcome.
MAX_REASON_CHARS = 500
MAX_PURPOSE_CHARS = 4000
MAX_PASSWORD_CHARS = 1024
# A declaration's file name, as ``POST /apply`` names it in its problems (FILE:LINE: key: problem).
MAX_FILE_NAME_CHARS = 1000
# Columns asked for in one attachment, and guard settings in one change, at most.
MAX_COLUMNS = 1000
MAX_GUARD_KEYS = 100

_ERROR = {"description": "Refused, with the reason",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _error(text: str) -> dict:
    return {**_ERROR, "description": text}


# Answers any operation may give.
_ERRORS = {
    "400": _error("Bad input: the error names the field and the problem. A body over 64 KiB is refused by the"
                  " HTTP server before any handler runs: a bare 400 without a JSON body."),
    "403": _error("Not authenticated, or not allowed: admins provision (custom:workspaces:admin), data holders"
                  " answer the attachment requests of their own sources (custom:sources:consent); operators'"
                  " and reviewers' tokens are refused"),
    "415": _error("A compressed body (Content-Encoding other than identity)"),
}
_NOT_FOUND = {"404": _error("No such account, workspace or request")}
# Changes are recorded in the audit log, and refused by the service layer's rules.
_CHANGE = {
    "409": _error("Refused by a rule of the service layer (the last admin, operator and reviewer of one"
                  " workspace, a name taken, an archived workspace, ...): the error says which; nothing changed"),
    "503": _error("The audit log cannot record the change; nothing was changed"),
}

_USERNAME = {"type": "string", "pattern": db.USERNAME.pattern}
_WORKSPACE = {"type": "string", "pattern": db.WORKSPACE_NAME.pattern}
_RELEASE = {"type": "string", "pattern": releases.RELEASE_NAME.pattern}
_SOURCE = {"type": "string", "pattern": sources.SOURCE_NAME.pattern}
# A name in a request body that does not match its pattern is refused in the service layer's words
# (the same message whether the name came through the API, the CLI or ``enclave apply``), not with
# the bare pattern, with the service layer's code: {pattern: (code, text, the parameter naming it)}.
NAME_RULES = {
    db.USERNAME.pattern: ("account.bad_name", N_(
        "user name '%(account)s' is not allowed: 1-32 lower-case letters, digits, '_' or '-', starting with a letter"),
        "account"),
    db.WORKSPACE_NAME.pattern: ("workspace.bad_name", N_(
        "workspace name '%(workspace)s' is not allowed: use 1-40 lower-case letters, digits and '-', starting and"
        " ending with a letter or digit"), "workspace"),
    releases.RELEASE_NAME.pattern: ("release.bad_name", N_(
        "'%(release)s' is not a release name (lower-case letters, digits, '_', '.', '-', optionally '@version')"),
        "release"),
    sources.SOURCE_NAME.pattern: ("source.bad_name", N_(
        "'%(source)s' is not a source name (lower-case letters, digits, '_', '.', '-')"), "source"),
}
_WRITTEN = r"\S"
_REASON = {"type": "string", "minLength": 1, "maxLength": MAX_REASON_CHARS, "pattern": _WRITTEN}
_MOMENT = {"type": ["string", "null"], "format": "date-time",
           "description": "RFC 3339 date and time with its offset (2027-06-30T00:00:00Z, 2027-06-30T08:00:00+08:00);"
                          " null: never"}
_ROLES = {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "string", "enum": list(ACCOUNT_ROLES)}}


def _path_param(name: str, schema: dict) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": schema}


_P_USER = _path_param("username", _USERNAME)
_P_WORKSPACE = _path_param("workspace", _WORKSPACE)
_P_RELEASE = _path_param("release", _RELEASE)
_P_SOURCE = _path_param("source", _SOURCE)
_P_ROLE = _path_param("role", {"type": "string", "enum": list(WORKSPACE_ROLES)})


def _json(ref: str, many: bool = False) -> dict:
    schema = {"$ref": f"#/components/schemas/{ref}"}
    return {"application/json": {"schema": {"type": "array", "items": schema} if many else schema}}


def _body(props: dict, required: list[str]) -> dict:
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "properties": props, "required": required, "additionalProperties": False}}}}


def _op(summary: str, responses: dict, **extra) -> dict:
    return {"summary": summary, "responses": {**responses, **_ERRORS}, **extra}


def _limits_schema() -> dict:
    """The per-workspace overrides of [sandbox.limits]: the service layer checks their ranges."""
    kinds = {int: "integer", float: "number"}
    return {"type": "object", "minProperties": 1, "additionalProperties": False,
            "properties": {name: {"type": kinds[f.annotation]} for name, f in LimitSettings.model_fields.items()}}


# A refusal's stable code and what makes its message, beside its English ``error``: a client shows the
# refusal in its reader's language by translating ``text`` (the catalogue's msgid) and filling it with
# ``params``, and decides on ``code``, never on the English.
_CODED = {
    "code": {"type": "string", "pattern": r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$",
             "description": "The refusal's stable code (workspace.unknown, account.disabled, limits.invalid, ...);"
                            " absent when the refusal has none (authentication, an unknown route, a body the"
                            " schema refuses): then `error` is all there is"},
    "text": {"type": "string", "description": "The refusal's English text with its %(name)s placeholders, as"
                                              " Enclave's catalogues translate it"},
    "params": {"type": "object", "description": "The values that fill the placeholders of `text`"},
}
_SCHEMAS = {
    "Error": {"type": "object", "required": ["status", "error"], "properties": {
        "status": {"type": "integer"}, "error": {"type": "string", "description": "The refusal in English"},
        **_CODED}},
    "Account": {"type": "object", "description": "An account (never its password hash)", "properties": {
        "name": {"type": "string"}, "roles": {"type": "array", "items": {"type": "string"}},
        "state": {"type": "string", "enum": list(db.ACCOUNT_STATES)}, "state_reason": {"type": "string"},
        "expires_at": {"type": ["string", "null"]}, "created_at": {"type": "string"},
        "usable": {"type": "boolean", "description": "active and not past its expiry: it may log in"},
        "password": {"type": "string", "description": "Only when the service generated it, once: give it to"
                                                      " the account's owner"}}},
    "Workspace": {"type": "object", "description": "The workspace's declared state, as"
                                                   " `enclave workspace show --format json` prints it",
                  "properties": {
                      "name": {"type": "string"}, "purpose": {"type": "string"},
                      "holder": {"type": ["string", "null"]},
                      "state": {"type": "string", "enum": list(db.WORKSPACE_STATES)},
                      "state_reason": {"type": "string"}, "expires_at": {"type": ["string", "null"]},
                      "operators_may_review": {"type": "boolean"},
                      "members": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
                      "releases": {"type": "object", "additionalProperties": {"type": "object"}},
                      "limits": {"type": "object"}, "guard": {"type": "object"}}},
    "Source": {"type": "object", "properties": {"name": {"type": "string"}, "holder": {"type": "string"}}},
    "Release": {"type": "object", "description": "A release in the store", "properties": {
        "name": {"type": "string"}, "source": {"type": "string"},
        "holder": {"type": ["string", "null"], "description": "The source's data holder; null: none yet"}}},
    "WorkspaceStatus": {
        "type": "object",
        "description": "What a workspace's declared state does not say: its homes' disk use, the effective"
                       " disk quota, who asked for each release awaiting consent, the export policy's version",
        "properties": {
            "name": {"type": "string"},
            "disk_mb": {"type": "integer", "description": "Each home's quota: [sandbox.limits] with the"
                                                          " workspace's overrides"},
            "homes": {"type": "object", "description": "operator -> their home's use (homes started at least once)",
                      "additionalProperties": {"type": "object", "properties": {
                          "used_mb": {"type": "integer"}, "quota_mb": {"type": "integer"}}}},
            "requested_by": {"type": "object", "additionalProperties": {"type": "string"},
                             "description": "release awaiting consent -> who asked for it"},
            "export_policy_version": {"type": "integer", "description": "0: never changed"},
            "export_policy_label": {"type": "string",
                                    "description": "As export requests record it: <workspace>/v<version>,"
                                                   " or <workspace>/default"}}},
    "ConsentRequest": {"type": "object", "description": "A release asked for a workspace, awaiting its holder",
                       "properties": {
                           "workspace": {"type": "string"}, "purpose": {"type": "string"},
                           "release": {"type": "string"}, "columns": {"type": ["object", "null"]},
                           "reason": {"type": "string"}, "requested_by": {"type": "string"}}},
    "Throttle": {"type": "object", "description": "A client's failed logins for an account", "properties": {
        "username": {"type": "string"}, "client": {"type": "string"}, "failures": {"type": "integer"},
        "until": {"type": ["string", "null"], "description": "Until when the client's logins for the account are"
                                                             " refused; null: they are not"}}},
    "ThrottlesCleared": {"type": "object", "properties": {"name": {"type": "string"},
                                                          "forgotten": {"type": "integer"}}},
    "Removed": {"type": "object", "properties": {"name": {"type": "string"}, "removed": {"type": "boolean"}}},
    "ApplyChange": {"type": "object", "description": "One change of the declaration's plan, as `enclave apply` prints"
                                                     " it: `<sign> <subject>: <what>`", "properties": {
        "sign": {"type": "string", "enum": ["+", "~", "-"], "description": "+ creates, ~ changes, - removes"},
        "subject": {"type": "string", "description": "account alice, workspace census, source people"},
        "what": {"type": "string"},
        "line": {"type": "integer", "description": "The line of the file that asks for it"},
        "key": {"type": "string", "description": "The key that asks for it (workspaces.census.members.operator)"}}},
    "ApplyResult": {"type": "object", "properties": {
        "file": {"type": "string"}, "dry_run": {"type": "boolean"},
        "applied": {"type": "boolean", "description": "Whether changes were made (false: a dry run, or nothing to"
                                                      " change)"},
        "changes": {"type": "array", "items": {"$ref": "#/components/schemas/ApplyChange"},
                    "description": "In the order they are made; empty: Enclave already is as the file declares"},
        "passwords": {"type": "object", "additionalProperties": {"type": "string"},
                      "description": "New account -> its generated password, given this once (never on a dry run)"}}},
    "ApplyRefused": {"type": "object", "description": "The file is refused and nothing of it was applied: every"
                                                      " problem found, each at its line and key", "properties": {
        "status": {"type": "integer"},
        "error": {"type": "string", "description": "The problems as `FILE:LINE: key: problem` lines, after a"
                                                   " heading"},
        **_CODED,
        "file": {"type": "string"},
        "problems": {"type": "array", "items": {"type": "object", "properties": {
            "line": {"type": "integer"}, "key": {"type": "string"}, "problem": {"type": "string"}}}}}},
}


def openapi_document(prefix: str) -> dict:
    account, workspace = _json("Account"), _json("Workspace")
    changed = {"200": {"description": "The account after the change", "content": account}, **_NOT_FOUND, **_CHANGE}
    ws_changed = {"200": {"description": "The workspace after the change", "content": workspace},
                  **_NOT_FOUND, **_CHANGE}
    paths = {
        "/openapi.json": {
            "get": {"summary": "This document (no token needed)", "security": [],
                    "responses": {"200": {"description": "The OpenAPI 3.1 document",
                                          "content": {"application/json": {"schema": {"type": "object"}}}},
                                  "403": _ERRORS["403"]}},
        },
        "/accounts": {
            "get": _op("Every account, by name (admins)", {"200": {"description": "Accounts",
                                                                    "content": _json("Account", many=True)}}),
            "post": _op("Create an account (admins). Without a password one is generated and returned, once",
                        {"201": {"description": "Created", "content": account}, **_CHANGE},
                        requestBody=_body({"name": _USERNAME, "roles": _ROLES,
                                           "password": {"type": "string", "maxLength": MAX_PASSWORD_CHARS},
                                           "expires_at": _MOMENT}, ["name", "roles"])),
        },
        "/accounts/{username}": {
            "get": _op("One account (admins)", {"200": {"description": "The account", "content": account},
                                                **_NOT_FOUND}, parameters=[_P_USER]),
            "delete": _op("Remove an account (admins): not the last admin, nor a data holder of sources or"
                          " workspaces. Its audit records stay", {"200": {"description": "Removed",
                                                                          "content": _json("Removed")},
                                                                  **_NOT_FOUND, **_CHANGE}, parameters=[_P_USER]),
        },
        "/accounts/{username}/roles": {
            "put": _op("Replace the account's roles (admins; from its next login)", changed, parameters=[_P_USER],
                       requestBody=_body({"roles": _ROLES}, ["roles"])),
        },
        "/accounts/{username}/disable": {
            "post": _op("Disable the account, saying why (admins)", changed, parameters=[_P_USER],
                        requestBody=_body({"reason": _REASON}, ["reason"])),
        },
        "/accounts/{username}/enable": {
            "post": _op("Enable a disabled account (admins)", changed, parameters=[_P_USER]),
        },
        "/accounts/{username}/expiry": {
            "put": _op("Set when the account expires, or that it never does (admins)", changed,
                       parameters=[_P_USER], requestBody=_body({"expires_at": _MOMENT}, ["expires_at"])),
        },
        "/accounts/{username}/throttles": {
            "delete": _op("Forget the account's failed logins, from every client or one, so that their throttles end"
                          " (admins)", {"200": {"description": "How many failures were forgotten",
                                                "content": _json("ThrottlesCleared")}, **_NOT_FOUND, **_CHANGE},
                          parameters=[_P_USER, {"name": "client", "in": "query", "required": False,
                                                "description": "Only this client address's failures (as"
                                                               " GET /throttles names it)",
                                                "schema": {"type": "string", "minLength": 1, "maxLength": 200}}]),
        },
        "/languages/{username}": {
            "put": _op("Set the language the person reads Enclave in, as they would on the hub's home page (admins)",
                       {"204": {"description": "Stored"}, **_NOT_FOUND, **_CHANGE}, parameters=[_P_USER],
                       requestBody=_body({"language": {"type": "string", "enum": list(db.LANGUAGES)}}, ["language"])),
        },
        "/throttles": {
            "get": _op("The clients whose failed logins are on record, by account and client, and until when"
                       " each client's logins for the account are refused (admins)",
                       {"200": {"description": "Throttles", "content": _json("Throttle", many=True)}}),
        },
        "/workspaces": {
            "get": _op("Every workspace, by name (admins)", {"200": {"description": "Workspaces",
                                                                      "content": _json("Workspace", many=True)}}),
            "post": _op("Create a workspace (admins)", {"201": {"description": "Created", "content": workspace},
                                                        **_CHANGE},
                        requestBody=_body({"name": _WORKSPACE,
                                           "purpose": {"type": "string", "maxLength": MAX_PURPOSE_CHARS},
                                           "holder": {"type": ["string", "null"], "pattern": db.USERNAME.pattern},
                                           "expires_at": _MOMENT}, ["name"])),
        },
        "/workspaces/{workspace}": {
            "get": _op("One workspace (admins; a data holder, while it asks for a release of theirs)",
                       {"200": {"description": "The workspace", "content": workspace}, **_NOT_FOUND},
                       parameters=[_P_WORKSPACE]),
        },
        "/workspaces/{workspace}/purpose": {
            "put": _op("Set the approved scenario of use (应用场景) (admins)", ws_changed, parameters=[_P_WORKSPACE],
                       requestBody=_body({"purpose": {"type": "string", "minLength": 1, "maxLength": MAX_PURPOSE_CHARS,
                                                      "pattern": _WRITTEN}}, ["purpose"])),
        },
        "/workspaces/{workspace}/holder": {
            "put": _op("Name the data holder whose sources the workspace uses (admins)", ws_changed,
                       parameters=[_P_WORKSPACE], requestBody=_body({"holder": _USERNAME}, ["holder"])),
        },
        "/workspaces/{workspace}/expiry": {
            "put": _op("Set when the workspace is frozen by itself, or that it never is (admins)", ws_changed,
                       parameters=[_P_WORKSPACE], requestBody=_body({"expires_at": _MOMENT}, ["expires_at"])),
        },
        "/workspaces/{workspace}/operators-may-review": {
            "put": _op("Whether one account may be both operator and reviewer here (admins; self-review stays"
                       " refused by the review service)", ws_changed, parameters=[_P_WORKSPACE],
                       requestBody=_body({"allowed": {"type": "boolean"}}, ["allowed"])),
        },
        "/workspaces/{workspace}/limits": {
            "put": _op("Override [sandbox.limits] for the workspace's sandboxes, from their next start (admins);"
                       " the keys given are merged into the overrides", ws_changed, parameters=[_P_WORKSPACE],
                       requestBody={"required": True, "content": {"application/json": {"schema": _limits_schema()}}}),
        },
        "/workspaces/{workspace}/guard": {
            "put": _op("Change guard settings of the workspace's servers, from their next start (admins); the"
                       " keys given are merged, and the guard checks the result", ws_changed,
                       parameters=[_P_WORKSPACE], requestBody={"required": True, "content": {"application/json": {
                           "schema": {"type": "object", "minProperties": 1, "maxProperties": MAX_GUARD_KEYS}}}}),
        },
        "/workspaces/{workspace}/export-policy": {
            "put": _op("Override [exports] for the workspace's export requests from now on (admins): the keys given"
                       " (approvals_required, max_file_mb, max_files_per_request, max_csv_rows, min_cell_count,"
                       " round_base, nk_n, nk_k, p_ratio) are merged into the overrides, and the policy's version goes"
                       " up; requests already made keep theirs", ws_changed, parameters=[_P_WORKSPACE],
                       requestBody={"required": True, "content": {"application/json": {
                           "schema": {"type": "object", "minProperties": 1, "maxProperties": MAX_GUARD_KEYS}}}}),
        },
        "/workspaces/{workspace}/status": {
            "get": _op("What the workspace's declared state does not say: its homes' disk use and quota, who asked"
                       " for each release awaiting consent, the export policy's version (admins)",
                       {"200": {"description": "The workspace's status", "content": _json("WorkspaceStatus")},
                        **_NOT_FOUND}, parameters=[_P_WORKSPACE]),
        },
        "/workspaces/{workspace}/members": {
            "post": _op("Add a member in a role (admins)",
                        {"201": {"description": "The workspace with the member", "content": workspace},
                         **_NOT_FOUND, **_CHANGE},
                        parameters=[_P_WORKSPACE], requestBody=_body(
                            {"user": _USERNAME, "role": {"type": "string", "enum": list(WORKSPACE_ROLES)}},
                            ["user", "role"])),
        },
        "/workspaces/{workspace}/members/{username}/{role}": {
            "delete": _op("Take a role in the workspace from a member (admins)", ws_changed,
                          parameters=[_P_WORKSPACE, _P_USER, _P_ROLE]),
        },
        "/workspaces/{workspace}/releases": {
            "post": _op("Ask for a release, or some of its columns, for the workspace (admins): it is attached once"
                        " the data holder of its source consents",
                        {"201": {"description": "The workspace, the release awaiting consent", "content": workspace},
                         **_NOT_FOUND, **_CHANGE}, parameters=[_P_WORKSPACE], requestBody=_body({
                            "release": _RELEASE,
                            "columns": {"type": "array", "minItems": 1, "maxItems": MAX_COLUMNS, "items": {
                                "type": "string", "minLength": 1, "maxLength": 300, "pattern": _WRITTEN},
                                "description": "`column` (in every table that has it) or `table.column`;"
                                               " absent: the whole release"},
                            "reason": {"type": "string", "maxLength": MAX_REASON_CHARS}}, ["release"])),
        },
        "/workspaces/{workspace}/releases/{release}": {
            "delete": _op("Detach a release, or withdraw the request for it (admins)", ws_changed,
                          parameters=[_P_WORKSPACE, _P_RELEASE]),
        },
        "/workspaces/{workspace}/freeze": {
            "post": _op("Freeze the workspace, saying why (admins): no sandbox starts, no export request is made",
                        ws_changed, parameters=[_P_WORKSPACE], requestBody=_body({"reason": _REASON}, ["reason"])),
        },
        "/workspaces/{workspace}/unfreeze": {
            "post": _op("Unfreeze a frozen workspace (admins)", ws_changed, parameters=[_P_WORKSPACE]),
        },
        "/workspaces/{workspace}/archive": {
            "post": _op("Archive the workspace for good, saying why (admins)", ws_changed,
                        parameters=[_P_WORKSPACE], requestBody=_body({"reason": _REASON}, ["reason"])),
        },
        "/sources": {
            "get": _op("Every source and its data holder (admins)",
                       {"200": {"description": "Sources", "content": _json("Source", many=True)}}),
        },
        "/releases": {
            "get": _op("Every release in the store, with its source and that source's data holder (admins)",
                       {"200": {"description": "Releases, by name", "content": _json("Release", many=True)}}),
        },
        "/sources/{source}/holder": {
            "put": _op("Register a source as a data holder's, or hand it to another (admins)",
                       {"200": {"description": "The source", "content": _json("Source")}, **_NOT_FOUND, **_CHANGE},
                       parameters=[_P_SOURCE], requestBody=_body({"holder": _USERNAME}, ["holder"])),
        },
        "/consents": {
            "get": _op("The attachment requests awaiting the caller's consent, as a data holder, each with the"
                       " workspace's purpose", {"200": {"description": "Requests",
                                                        "content": _json("ConsentRequest", many=True)}}),
        },
        "/consents/{workspace}/{release}/consent": {
            "post": _op("Consent, as the data holder, to the release's attachment: it is mounted from the"
                        " workspace's sandboxes' next start", ws_changed, parameters=[_P_WORKSPACE, _P_RELEASE]),
        },
        "/apply": {
            "post": _op("Make accounts, sources and workspaces what a declarative file says (admins), as"
                        " `enclave apply FILE` does (docs/provisioning.md lists its keys): the whole file in one"
                        " transaction, its changes recorded together as the caller's, all of it or none; removals"
                        " only where the file says `prune:`. `dry_run`: answer the changes, make none. Body: at"
                        f" most {APPLY_BODY_LIMIT // 2**20} MiB",
                        {"200": {"description": "The changes made (or, on a dry run, that would be made), and the"
                                                " new accounts' generated passwords, once",
                                 "content": _json("ApplyResult")},
                         "422": {"description": "The file is refused, with every problem; nothing was applied",
                                 "content": _json("ApplyRefused")},
                         "503": _CHANGE["503"]},
                        requestBody=_body({
                            "file": {"type": "string", "minLength": 1, "maxLength": MAX_FILE_NAME_CHARS,
                                     "pattern": _WRITTEN, "description": "The file's name, as the problems name it"},
                            "text": {"type": "string", "description": "The file's text (YAML)"},
                            "dry_run": {"type": "boolean", "default": False}}, ["file", "text"])),
        },
        "/consents/{workspace}/{release}/refuse": {
            "post": _op("Refuse, as the data holder, the release's attachment, saying why", ws_changed,
                        parameters=[_P_WORKSPACE, _P_RELEASE], requestBody=_body({"reason": _REASON}, ["reason"])),
        },
    }
    return json_api_document(
        "Enclave provisioning API",
        "Accounts, workspaces, sources and the data holders' consents, changed only through Enclave's one service"
        " layer; every change is an audit record of the caller's. Request bodies: at most 64 KiB (POST /apply:"
        f" {APPLY_BODY_LIMIT // 2**20} MiB).",
        prefix, _SCHEMAS, paths,
    )


@cache
def operation(path: str, method: str) -> dict:
    """The document's operation ``method`` of ``path``."""
    return openapi_document("/")["paths"][path][method]


# -- the CLI's socket alone --
#
# ``PUT /accounts/{username}/password`` sets an account's password. It is served on the CLI's
# socket (root on the hub host, who can do anything there anyway) and deliberately not on the HTTP
# API: an admin's token must not be able to take over another account and act under its name. So
# it is not in the document above, which states the HTTP API; its operation is here, for the
# socket's handler to validate against.
CLI_ONLY_PATHS = {
    "/accounts/{username}/password": {
        "put": _op("Set the account's password and clear its login throttles (the CLI's socket only). Without a"
                   " password one is generated and returned, once",
                   {"200": {"description": "Set", "content": {"application/json": {"schema": {
                       "type": "object", "properties": {
                           "name": {"type": "string"},
                           "password": {"type": "string", "description": "Only when the service generated it"}}}}}},
                    **_NOT_FOUND, **_CHANGE},
                   parameters=[_P_USER],
                   requestBody=_body({"password": {"type": "string", "maxLength": MAX_PASSWORD_CHARS}}, [])),
    },
}

