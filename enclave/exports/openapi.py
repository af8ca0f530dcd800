"""The OpenAPI 3.1 document of the JSON API, served at ``api/openapi.json``, and the validation of
requests against it.

The document is the one statement of what each operation takes: the handlers look up their
operation here and validate path and query parameters and JSON bodies against its schemas
(:func:`validate`), so a value out of range is a 400 naming the field, never a crash deeper in.
"""

from __future__ import annotations

import json
import re
from functools import cache

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from ..i18n import N_
from ..sealed import workflow as sealed_workflow
from ..services import json_api_document
from . import workflow
from .service import MAX_REASON_CHARS, BadInput

# Deeper JSON is refused before it is parsed: Python's parser, and the schema validator, recurse.
MAX_JSON_DEPTH = 32
# The largest id a JSON number carries exactly (and far below the database's 64-bit integers).
MAX_ID = 2**53
MAX_PAGE = 100_000
MAX_AGE_DAYS = 36_500
MAX_TITLE_CHARS = 200
MAX_CONTEXT_CHARS = 20_000

_ERROR = {"description": "Refused, with the reason", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _error(text: str) -> dict:
    return {**_ERROR, "description": text}


# Answers any operation may give: input that is not as documented, a caller who may not do it, a
# compressed body.
_ERRORS = {
    "400": _error("Bad input: the error names the field and the problem. A body over the route's limit is"
                  " refused by the HTTP server before any handler runs: a bare 400 without a JSON body."),
    "403": _error("Not authenticated, or not allowed"),
    "415": _error("A compressed body (Content-Encoding other than identity)"),
}
# The operations recorded in the audit log are not done when it cannot take their record.
_AUDITED = {"503": _error("The audit log cannot record the operation; nothing was changed")}
_NOT_FOUND = {"404": _error("No such request, file or workspace (or not visible to the caller)")}
_SANDBOX_GONE = {"404": _error("The token's workspace no longer exists")}
_CONFLICT = {"409": _error("Not possible in the request's state")}
_UPLOAD_ERRORS = {
    "411": _error("No Content-Length"),
    "413": _error("A file over the size cap, or the body over the upload limit (the error says which)"),
}
_REQUEST = {"application/json": {"schema": {"$ref": "#/components/schemas/ExportRequest"}}}
# Text that must say something: not empty, not only white space (the service strips it).
_WRITTEN = r"\S"
_FILES = {
    "manifest": {
        "type": "string", "contentMediaType": "application/json",
        "contentSchema": {"$ref": "#/components/schemas/Manifest"},
        "description": "The files' declared SHA-256 and provenance. A declared SHA-256 that does not match"
                       " the received bytes rejects the upload.",
    },
    "file": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"},
             "description": "One part per file, its file name percent-encoded as UTF-8 (RFC 7578, section 4.2):"
                            " any name without '/', '\\' or control characters, '%' sent as %25."},
}
_SUBMISSION = {
    "title": {"type": "string", "minLength": 1, "maxLength": MAX_TITLE_CHARS, "pattern": _WRITTEN},
    "context": {"type": "string", "minLength": 1, "maxLength": MAX_CONTEXT_CHARS, "pattern": _WRITTEN,
                "description": "What the outputs are and how disclosure was controlled."},
}


def _upload(submission: bool = False) -> dict:
    """The multipart body of an upload route: files and their manifest (and, to submit, what they are)."""
    props = {**_SUBMISSION, **_FILES} if submission else _FILES
    return {"multipart/form-data": {"schema": {"type": "object", "properties": props,
                                               "required": [*_SUBMISSION, "file"] if submission else ["file"]}}}


_UPLOAD_AUTH = (
    "The caller is identified and authorised from the headers, before the body is read: a sandbox"
    " server's token in Authorization (or the HubOAuth cookie with an X-XSRFToken header; an _xsrf"
    " form field is not read in time). A body over 64 KiB that is refused, or over the upload limit,"
    " is not read at all: send 'Expect: 100-continue' to hear the refusal before sending it."
)
_ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
_RID = {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
_FID = {"name": "file_id", "in": "path", "required": True, "schema": _ID}
_WORKSPACE = {"type": "string", "pattern": "^[a-z0-9-]{1,40}$"}
_REASON = {"type": "string", "maxLength": MAX_REASON_CHARS}
_SCHEMAS = {
    "Error": {
        "type": "object", "required": ["status", "error"],
        "description": "A refusal. One with a stable code (every refusal of the service's own; not tornado's,"
                       " such as a 405) carries code, text, params and message too.",
        "properties": {
            "status": {"type": "integer"},
            "error": {"type": "string", "description": "The reason in English"},
            "code": {"type": "string", "pattern": r"^(export|request|sealed_run|sealed)\.[a-z0-9_]+(\.[a-z0-9_]+)*$",
                     "description": "The refusal's stable code (export.self_review, request.field_required,"
                                    " sealed_run.daily_limit, ...)"},
            "text": {"type": "string", "description": "The English text, its %(name)s placeholders unfilled"},
            "params": {"type": "object", "description": "The values that fill the text's placeholders"},
            "message": {"type": "string", "description": "The reason in the caller's language: the one they"
                                                         " chose on the hub, else their Accept-Language"},
        },
        "dependentRequired": {"code": ["text", "params", "message"]},
    },
    "ExportRequest": {"type": "object", "properties": {
        "id": {"type": "string"}, "workspace": {"type": "string"}, "requester": {"type": "string"},
        "title": {"type": "string"}, "state": {"type": "string", "enum": list(workflow.STATES)},
        "files": {"type": "array", "items": {"type": "object", "properties": {
            "checks": {"type": "array", "items": {"$ref": "#/components/schemas/Finding"}}}}},
        "history": {"type": "array"}, "comments": {"type": "array"}}},
    "Finding": {
        "type": "object", "required": ["check", "status", "reason", "message"],
        "description": "One finding of an automated disclosure check on a file.",
        "properties": {
            "check": {"type": "string", "description": "The check's stable name (small_cells, microdata, ...)"},
            "status": {"type": "string", "enum": ["pass", "review", "fail"]},
            "code": {"type": "string", "pattern": r"^check\.[a-z_]+\.[a-z_]+$",
                     "description": "The reason's stable code (check.small_cells.below_threshold); absent on"
                                    " findings stored before findings had codes"},
            "params": {"type": "object", "description": "The values that fill the reason's text"},
            "reason": {"type": "string", "description": "The reason in English, as stored"},
            "message": {"type": "string", "description": "The reason in the caller's language: the one they"
                                                         " chose on the hub, else their Accept-Language"},
            "location": {"type": "string"},
            "cells": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
        }},
    "CheckedFiles": {"type": "object", "properties": {"files": {"type": "array", "items": {
        "type": "object", "properties": {
            "name": {"type": "string"}, "status": {"type": "string"},
            "checks": {"type": "array", "items": {"$ref": "#/components/schemas/Finding"}},
            "rejected": {"type": "string", "description": "Why the file is refused outright, in English (then"
                                                          " it has no checks)"},
            "code": {"type": "string", "description": "The refusal's stable code (export.file.not_utf8, ...)"},
            "text": {"type": "string"}, "params": {"type": "object"},
            "message": {"type": "string", "description": "The refusal in the caller's language"}}}}}},
    "SealedRun": {
        "type": "object", "required": ["id", "release", "notebook", "submitted_at", "state"],
        "description": "A sealed run as its operator sees it: never its outcome, duration, error or sizes (see"
                       " docs/sealed-runs.md); a refusal with its reason.",
        "properties": {
            "id": {"type": "string"}, "release": {"type": "string"}, "notebook": {"type": "string"},
            "submitted_at": {"type": "string"},
            "state": {"type": "string", "enum": list(sealed_workflow.OPERATOR_STATES)},
            "refusal": {"type": "object", "properties": {"code": {"type": "string"}, "text": {"type": "string"},
                                                         "params": {"type": "object"}, "message": {"type": "string"}}},
        }},
    "SealedRunRequest": {
        "type": "object", "required": ["release", "notebook"], "additionalProperties": False,
        "properties": {
            "release": {"type": "string", "maxLength": 160},
            "notebook": {"type": "string", "minLength": 1, "maxLength": 1024,
                         "description": "The notebook's path in the home; its folder is the kernel's working directory"},
            "inputs": {"type": "array", "maxItems": 100, "items": {"type": "string", "minLength": 1, "maxLength": 1024},
                       "description": "Files of the home the notebook needs (code, parameters), by path"},
            "outputs": {"type": "array", "maxItems": 50, "items": {"type": "string", "minLength": 1, "maxLength": 1024},
                        "description": "Paths in the run's home to keep when it ends: its results, for review"},
            "manifest": {"type": "object", "maxProperties": 101, "propertyNames": {"maxLength": 1024},
                         "additionalProperties": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
                         "description": "The SHA-256 of the notebook and of each input, by path"},
        }},
    "SealedRunPolicy": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "approval_required": {"type": "boolean"},
            "runs_per_day": {"type": "integer", "minimum": 0, "maximum": 1000},
            "reviewers": {"type": "array", "maxItems": 50, "items": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$"}},
            "limits": {"type": "object", "additionalProperties": False, "properties": {
                "seconds": {"type": "integer", "minimum": 5, "maximum": 86_400},
                "memory_mb": {"type": "integer", "minimum": 128, "maximum": 1_048_576},
                "disk_mb": {"type": "integer", "minimum": 16, "maximum": 1_048_576},
                "cpus": {"type": "number", "exclusiveMinimum": 0, "maximum": 256}}},
        }},
    "Manifest": {"type": "object", "properties": {"files": {
        "type": "object", "maxProperties": 200, "propertyNames": {"maxLength": 255},
        "additionalProperties": {"type": "object", "properties": {
            "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
            "provenance": {"type": ["object", "null"]}}}}}},
}


def _op(summary: str, responses: dict, **extra) -> dict:
    return {"summary": summary, "responses": {**responses, **_ERRORS}, **extra}


def _upload_op(summary: str, responses: dict, submission: bool = False, **extra) -> dict:
    return _op(summary, {**responses, **_UPLOAD_ERRORS}, description=_UPLOAD_AUTH,
               requestBody={"required": True, "content": _upload(submission)}, **extra)


def _json_body(props: dict, required: list[str]) -> dict:
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "properties": props, "required": required}}}}


def openapi_document(prefix: str, intake: bool = False) -> dict:
    paths = {
        "/requests": {
            "get": _op("List requests: the caller's own (mine=1), newest first, or those the caller reviews,"
                       " those awaiting the caller's vote first (awaiting_my_vote=1: only those)",
                       {"200": {"description": "A page of requests, each with awaiting_my_vote: a file of it"
                                               " takes the caller's vote and does not have it yet"}},
                       parameters=[{"name": n, "in": "query", "schema": s} for n, s in (
                           ("mine", {"type": "boolean"}), ("awaiting_my_vote", {"type": "boolean"}),
                           ("workspace", _WORKSPACE),
                           ("state", {"type": "string", "enum": list(workflow.STATES)}),
                           ("max_age_days", {"type": "integer", "minimum": 0, "maximum": MAX_AGE_DAYS}),
                           ("page", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}))]),
            "post": _upload_op("Submit an export request (sandbox server token; user and workspace come from the token)",
                               {"201": {"description": "Created", "content": _REQUEST}, **_SANDBOX_GONE, **_AUDITED},
                               submission=True),
        },
        "/checks": {
            "post": _upload_op("Run the automated checks on files without submitting them",
                               {"200": {"description": "Findings per file", "content": {"application/json": {
                                   "schema": {"$ref": "#/components/schemas/CheckedFiles"}}}}, **_SANDBOX_GONE}),
        },
        "/requests/{request_id}": {
            "get": _op("One request as the caller may see it (votes blinded, private comments hidden)",
                       {"200": {"description": "The request", "content": _REQUEST}, **_NOT_FOUND}, parameters=[_RID]),
        },
        "/requests/{request_id}/files": {
            "post": _upload_op("New versions of files of a returned request (a changed file's votes start again)",
                               {"200": {"description": "Changed files"}, **_NOT_FOUND, **_CONFLICT, **_AUDITED},
                               parameters=[_RID]),
        },
        "/requests/{request_id}/transitions": {
            "post": _op("Move a request along the transition table: the steps a person takes. The votes"
                        " take the request-level decisions themselves (409 here), except where a file's"
                        " votes conflict",
                        {"200": {"description": "New state"}, **_NOT_FOUND, **_CONFLICT, **_AUDITED},
                        parameters=[_RID], requestBody=_json_body(
                            {"to": {"type": "string", "enum": list(workflow.STATES)}, "reason": _REASON}, ["to"])),
        },
        "/requests/{request_id}/comments": {
            "post": _op("Comment: private (reviewers) or public (the requester sees it)",
                        {"201": {"description": "Added"}, **_NOT_FOUND}, parameters=[_RID], requestBody=_json_body(
                            {"text": {**_REASON, "minLength": 1, "pattern": _WRITTEN},
                             "visibility": {"type": "string", "enum": ["private", "public"]},
                             "file_id": _ID}, ["text"])),
        },
    }
    _RUN = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
    _RUN_ANSWER = {"application/json": {"schema": {"$ref": "#/components/schemas/SealedRun"}}}
    paths.update({
        "/sealed-runs": {
            "get": _op("The caller's sealed runs in their sandbox's workspace, newest first (sandbox server token)",
                       {"200": {"description": "runs: each as its operator sees it"}, **_SANDBOX_GONE}),
            "post": _op("Submit a sealed run of a notebook on the real data (sandbox server token): multipart with"
                        " the 'request' field and one 'file' part per file (the notebook and each input), named by"
                        " its percent-encoded path",
                        {"201": {"description": "Queued, or awaiting the data holder's approval",
                                 "content": _RUN_ANSWER}, **_SANDBOX_GONE, **_UPLOAD_ERRORS, **_AUDITED},
                        description=_UPLOAD_AUTH, requestBody={"required": True, "content": {"multipart/form-data": {
                            "schema": {"type": "object", "required": ["request"], "properties": {
                                "request": {"type": "string", "contentMediaType": "application/json",
                                            "contentSchema": {"$ref": "#/components/schemas/SealedRunRequest"}},
                                "file": _FILES["file"]}}}}}),
        },
        "/sealed-runs/releases": {
            "get": _op("The releases of the caller's workspace a sealed run may use (synthetic, with a sealed view)",
                       {"200": {"description": "releases: their names"}, **_SANDBOX_GONE}),
        },
        "/sealed-runs/{run_id}/withdraw": {
            "post": _op("Take a run back while it is queued or awaiting approval (its operator)",
                        {"200": {"description": "The run", "content": _RUN_ANSWER}, **_NOT_FOUND, **_CONFLICT,
                         **_AUDITED}, parameters=[_RUN]),
        },
    })
    if not intake:
        paths.update({
            "/sealed-runs/awaiting": {
                "get": _op("Sealed runs awaiting the caller's approval, in the workspaces whose data holder they are",
                           {"200": {"description": "runs: who, which release, the notebook's hash, inputs and"
                                                   " outputs"}}),
            },
            "/sealed-runs/{run_id}/decision": {
                "post": _op("The data holder approves a run awaiting approval, or refuses it with a reason the"
                            " operator sees",
                            {"200": {"description": "The run", "content": _RUN_ANSWER}, **_NOT_FOUND, **_CONFLICT,
                             **_AUDITED}, parameters=[_RUN], requestBody=_json_body(
                                {"approve": {"type": "boolean"}, "reason": _REASON}, ["approve"])),
            },
            "/workspaces/{workspace}/sealed-run-policy": {
                "get": _op("A workspace's sealed-run policy (its data holder's, else the defaults)",
                           {"200": {"description": "The policy and its version"}, **_NOT_FOUND},
                           parameters=[{"name": "workspace", "in": "path", "required": True, "schema": _WORKSPACE}]),
                "put": _op("Change a workspace's sealed-run policy (its data holder only); the keys given change",
                           {"200": {"description": "The policy and its version"}, **_NOT_FOUND, **_AUDITED},
                           parameters=[{"name": "workspace", "in": "path", "required": True, "schema": _WORKSPACE}],
                           requestBody={"required": True, "content": {"application/json": {
                               "schema": {"$ref": "#/components/schemas/SealedRunPolicy"}}}}),
            },
        })
        paths.update({
            "/requests/{request_id}/votes": {
                "post": _op("Vote on one file (reviewers of the workspace, never the requester)",
                            {"201": {"description": "Recorded: the file, the vote, the votes in, and the"
                                                    " request's state after it (the vote that decides the"
                                                    " request moves it, and releases it when approved)"},
                             **_NOT_FOUND, **_CONFLICT, **_AUDITED}, parameters=[_RID],
                            requestBody=_json_body(
                                {"file_id": _ID, "decision": {"type": "string", "enum": list(workflow.VOTES)},
                                 "reason": {**_REASON, "minLength": 1, "pattern": _WRITTEN}},
                                ["file_id", "decision", "reason"])),
            },
            "/requests/{request_id}/files/{file_id}/links": {
                "post": _op("An expiring download link for a released file (requester, admins)",
                            {"201": {"description": "url and expires_at"}, **_NOT_FOUND}, parameters=[_RID, _FID]),
            },
            "/requests/{request_id}/files/{file_id}/manifest": {
                "get": _op("The signed release manifest of a file",
                           {"200": {"description": "manifest, signature, key_id, revoked, and signature_valid"
                                                   " (checked with this service's key)"}, **_NOT_FOUND},
                           parameters=[_RID, _FID]),
            },
        })
    return json_api_document(
        "Enclave export review API", "Request bodies: at most 64 KiB, except on the upload routes.", prefix,
        _SCHEMAS, paths,
    )


# -- validation --


@cache
def operation(path: str, method: str) -> dict:
    """The document's operation ``method`` of ``path`` (the full API; the intake's is a part of it)."""
    return openapi_document("/")["paths"][path][method]


def _resolved(schema: dict) -> dict:
    """``schema`` with its one level of ``#/components/schemas`` reference taken in."""
    ref = schema.get("$ref", "")
    return _SCHEMAS[ref.rpartition("/")[2]] if ref.startswith("#/components/schemas/") else schema


def validate(schema: dict, value, where: str) -> None:
    """Check ``value`` (named ``where`` in messages) against ``schema``; :class:`BadInput` if it fails."""
    error = best_match(Draft202012Validator(_resolved(schema)).iter_errors(value))
    if error is not None:
        code, text, params = _problem(error, where)
        raise BadInput(code, text, **params)


# Query parameters JupyterHub's authentication reads from any request, not the operation's.
HUB_QUERY = frozenset({"token", "_xsrf"})


def parameters(op: dict, path_values: list[str], query: dict[str, str], strict: bool) -> dict:
    """The operation's path and query parameters, typed and validated: ``path_values`` in the order of
    the path's placeholders, ``query`` the request's. ``strict``: a query parameter the operation
    does not take is bad input (a misspelt filter would otherwise silently filter nothing); else
    it is ignored, as a page ignores its form's other fields."""
    taken = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
    unknown = sorted(set(query) - taken - HUB_QUERY)
    if strict and unknown:
        raise BadInput("request.unknown_parameter", N_("unknown query parameter %(parameter)s; this operation takes"
                                                       " %(parameters)s"),
                       parameter=_shown(unknown[0]), parameters=", ".join(sorted(taken)) or "none")
    found = {}
    path_params = [p for p in op.get("parameters", []) if p["in"] == "path"]
    for p, raw in zip(path_params, path_values):
        found[p["name"]] = _typed(raw, p["schema"], p["name"])
    for p in op.get("parameters", []):
        if p["in"] == "query" and p["name"] in query:
            found[p["name"]] = _typed(query[p["name"]], p["schema"], p["name"])
    for p in op.get("parameters", []):
        if p["name"] in found:
            validate(p["schema"], found[p["name"]], p["name"])
    return found


def json_body(op: dict, body: bytes) -> dict:
    """The operation's JSON body, parsed once its depth is known to be bounded, and validated."""
    try:
        text = body.decode("utf-8") if body else "{}"
    except UnicodeDecodeError:
        raise BadInput("request.not_utf8", N_("the request body is not UTF-8 text")) from None
    value = parse_json(text, "the request body")
    if not isinstance(value, dict):
        raise BadInput("request.not_an_object", N_("the request body must be a JSON object"))
    validate(op["requestBody"]["content"]["application/json"]["schema"], value, "")
    return value


def form_fields(op: dict, fields: dict[str, str], media: str) -> dict:
    """Form fields of an operation's body in ``media``, typed as its schema says, and validated. A
    field is text: properties of other kinds (an upload's file parts) are not looked at here."""
    schema = op["requestBody"]["content"][media]["schema"]
    props = {name: s for name, s in schema["properties"].items() if s.get("format") != "binary"
             and s.get("type") != "array"}
    typed = {name: _typed(value, props[name], name) for name, value in fields.items() if name in props}
    validate({**schema, "properties": props, "required": [r for r in schema.get("required", []) if r in props]},
             typed, "")
    return typed


def manifest(text: str) -> dict:
    """An upload's ``manifest`` field: JSON of bounded depth, as its ``contentSchema`` says."""
    value = parse_json(text, "the 'manifest' field")
    schema = operation("/requests", "post")["requestBody"]["content"]["multipart/form-data"]["schema"]
    validate(schema["properties"]["manifest"]["contentSchema"], value, "manifest")
    return value


def sealed_run_request(text: str) -> dict:
    """A sealed run's ``request`` field: JSON of bounded depth, as its ``contentSchema`` says."""
    value = parse_json(text, "the 'request' field")
    validate({"$ref": "#/components/schemas/SealedRunRequest"}, value, "request")
    return value


_JSON_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def parse_json(text: str, what: str):
    """JSON ``text`` nested at most :data:`MAX_JSON_DEPTH` deep; :class:`BadInput` naming ``what``."""
    depth = 0
    for token in _JSON_NESTING.finditer(text):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise BadInput("request.json_too_deep", N_("%(what)s nests JSON more than %(most)s levels deep"),
                               what=what, most=MAX_JSON_DEPTH)
        elif bracket in "]}":
            depth -= 1
    try:
        return json.loads(text, parse_float=_number)
    except ValueError:
        raise BadInput("request.bad_json", N_("%(what)s is not valid JSON"), what=what) from None


def _number(literal: str) -> float | int:
    """A JSON number with a fraction or exponent: a whole one (``255.0``, ``1e3``) is the integer it
    equals, as JSON Schema counts it, so that the service gets ids and counts as ints."""
    value = float(literal)
    return int(value) if value.is_integer() and abs(value) <= MAX_ID else value


_DIGITS = re.compile(r"[+-]?[0-9]+")
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def _typed(raw: str, schema: dict, name: str):
    """A text parameter or form field as the type its schema gives (left as text when it is not one,
    for :func:`validate` to name the problem)."""
    kind = schema.get("type")
    if kind == "integer" and _DIGITS.fullmatch(raw):
        if len(raw.lstrip("+-0")) > 20:
            raise BadInput("request.out_of_range", N_("%(field)s is out of range: at most %(most)s"), field=name,
                           most=schema.get("maximum"))
        return int(raw)
    if kind == "boolean" and raw.lower() in _BOOLEANS:
        return _BOOLEANS[raw.lower()]
    return raw


_JSON_TYPES = {dict: "an object", list: "a list", str: "text", bool: "true or false", int: "a number",
               float: "a fraction", type(None): "null"}
_TYPE_WORDS = {"object": "an object", "array": "a list", "string": "text", "integer": "a whole number",
               "boolean": "true or false", "number": "a number", "null": "null"}


def _shown(value) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a number that large"
    return text if len(text) <= 60 else text[:57] + "..."


def _problem(error, where: str) -> tuple:
    """The refusal naming the field and the problem, in the service's words: its code, English text
    and params (as :class:`BadInput` takes them)."""
    field = ".".join([where] * bool(where) + [str(p) for p in error.absolute_path]) or "the value"
    rule, expected, value, schema = error.validator, error.validator_value, error.instance, error.schema
    if rule == "required":
        missing = next(name for name in expected if name not in value)
        return ("request.field_required", N_("%(field)s is required"),
                {"field": f"{field + '.' if error.absolute_path or where else ''}{missing}"})
    if rule == "type":
        kinds = [expected] if isinstance(expected, str) else expected
        return ("request.wrong_type", N_("%(field)s must be %(expected)s, not %(given)s"),
                {"field": field, "expected": " or ".join(_TYPE_WORDS[k] for k in kinds),
                 "given": _JSON_TYPES.get(type(value), type(value).__name__)})
    if rule == "enum":
        return ("request.unknown_value", N_("unknown %(field)s %(value)s; %(field)s: one of %(values)s"),
                {"field": field, "value": _shown(value), "values": ", ".join(map(str, expected))})
    if rule == "maxLength":
        return ("request.too_long", N_("%(field)s may be at most %(most)s characters; this one has %(chars)s"),
                {"field": field, "most": expected, "chars": len(value)})
    if rule == "minLength" and expected == 1:
        return "request.empty", N_("%(field)s must not be empty"), {"field": field}
    if rule == "minLength":
        return "request.too_short", N_("%(field)s needs at least %(least)s characters"), {"field": field, "least": expected}
    if rule in ("minimum", "maximum"):
        return ("request.out_of_bounds", N_("%(field)s must be from %(least)s to %(most)s; %(value)s is not"),
                {"field": field, "least": schema.get("minimum", "-inf"), "most": schema.get("maximum", "inf"),
                 "value": _shown(value)})
    if rule == "pattern" and expected == _WRITTEN:
        return "request.blank", N_("%(field)s must not be blank"), {"field": field}
    if rule == "pattern":
        return ("request.no_match", N_("%(field)s %(value)s does not match %(pattern)s"),
                {"field": field, "value": _shown(value), "pattern": expected})
    if rule == "maxProperties":
        return "request.too_many_entries", N_("%(field)s may have at most %(most)s entries"), {"field": field, "most": expected}
    return "request.invalid", N_("%(field)s: %(problem)s"), {"field": field, "problem": error.message[:200]}
