"""The OpenAPI 3.1 document of the JSON API, served at ``api/openapi.json``."""

from __future__ import annotations

from ..services import json_api_document
from . import workflow

_ERROR = {"description": "Refused, with the reason", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_ERRORS = {str(code): {**_ERROR, "description": text} for code, text in (
    (400, "Bad input (the error names the problem)"), (403, "Not allowed"),
    (404, "No such request (or not visible to the caller)"), (409, "Not possible in the request's state"),
)}
_REQUEST = {"application/json": {"schema": {"$ref": "#/components/schemas/ExportRequest"}}}
_UPLOAD = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "title": {"type": "string", "maxLength": 200},
                "context": {"type": "string", "description": "What the outputs are and how disclosure was controlled."},
                "manifest": {
                    "type": "string",
                    "description": 'JSON: {"files": {"<name>": {"sha256": "<hex>", "provenance": {...}}}}.'
                                   " A declared SHA-256 that does not match the received bytes rejects the upload.",
                },
                "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
            },
        }
    }
}
_UPLOAD_ERRORS = {
    "411": {**_ERROR, "description": "No Content-Length"},
    "413": {**_ERROR,
            "description": "A file over the size cap, or the body over the upload limit (the error says which)"},
}
_UPLOAD_AUTH = (
    "The caller is identified and authorised from the headers, before the body is read: a sandbox"
    " server's token in Authorization (or the HubOAuth cookie with an X-XSRFToken header; an _xsrf"
    " form field is not read in time). A body over 64 KiB that is refused, or over the upload limit,"
    " is not read at all: send 'Expect: 100-continue' to hear the refusal before sending it."
)
_RID = {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}}
_FID = {"name": "file_id", "in": "path", "required": True, "schema": {"type": "integer"}}


def _op(summary: str, responses: dict, **extra) -> dict:
    return {"summary": summary, "responses": {**responses, **_ERRORS}, **extra}


def _upload_op(summary: str, responses: dict, **extra) -> dict:
    return _op(summary, {**responses, **_UPLOAD_ERRORS}, description=_UPLOAD_AUTH,
               requestBody={"required": True, "content": _UPLOAD}, **extra)


def _json_body(props: dict, required: list[str]) -> dict:
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "properties": props, "required": required}}}}


def openapi_document(prefix: str, intake: bool = False) -> dict:
    paths = {
        "/requests": {
            "get": _op("List requests: the caller's own (mine=1) or those the caller reviews",
                       {"200": {"description": "A page of requests"}},
                       parameters=[{"name": n, "in": "query", "schema": s} for n, s in (
                           ("mine", {"type": "boolean"}), ("workspace", {"type": "string"}),
                           ("state", {"type": "string", "enum": list(workflow.STATES)}),
                           ("max_age_days", {"type": "integer"}), ("page", {"type": "integer"}))]),
            "post": _upload_op("Submit an export request (sandbox server token; user and workspace come from the token)",
                               {"201": {"description": "Created", "content": _REQUEST}}),
        },
        "/checks": {
            "post": _upload_op("Run the automated checks on files without submitting them",
                               {"200": {"description": "Findings per file"}}),
        },
        "/requests/{request_id}": {
            "get": _op("One request as the caller may see it (votes blinded, private comments hidden)",
                       {"200": {"description": "The request", "content": _REQUEST}}, parameters=[_RID]),
        },
        "/requests/{request_id}/files": {
            "post": _upload_op("New versions of files of a returned request (a changed file's votes start again)",
                               {"200": {"description": "Changed files"}}, parameters=[_RID]),
        },
        "/requests/{request_id}/transitions": {
            "post": _op("Move a request along the transition table", {"200": {"description": "New state"}},
                        parameters=[_RID], requestBody=_json_body(
                            {"to": {"type": "string", "enum": list(workflow.STATES)}, "reason": {"type": "string"}},
                            ["to"])),
        },
        "/requests/{request_id}/comments": {
            "post": _op("Comment: private (reviewers) or public (the requester sees it)",
                        {"201": {"description": "Added"}}, parameters=[_RID], requestBody=_json_body(
                            {"text": {"type": "string"}, "visibility": {"type": "string", "enum": ["private", "public"]},
                             "file_id": {"type": "integer"}}, ["text"])),
        },
    }
    if not intake:
        paths.update({
            "/requests/{request_id}/votes": {
                "post": _op("Vote on one file (reviewers of the workspace, never the requester)",
                            {"201": {"description": "Recorded"}}, parameters=[_RID], requestBody=_json_body(
                                {"file_id": {"type": "integer"}, "decision": {"type": "string", "enum": list(workflow.VOTES)},
                                 "reason": {"type": "string", "minLength": 1}}, ["file_id", "decision", "reason"])),
            },
            "/requests/{request_id}/files/{file_id}/links": {
                "post": _op("An expiring download link for a released file (requester, admins)",
                            {"201": {"description": "url and expires_at"}}, parameters=[_RID, _FID]),
            },
            "/requests/{request_id}/files/{file_id}/manifest": {
                "get": _op("The signed release manifest of a file", {"200": {"description": "manifest, signature, key_id"}},
                           parameters=[_RID, _FID]),
            },
            "/policies/{workspace}": {
                "put": _op("Set a workspace's review policy (admins)", {"200": {"description": "The new policy"}},
                           parameters=[{"name": "workspace", "in": "path", "required": True, "schema": {"type": "string"}}],
                           requestBody=_json_body({"approvals_required": {"type": "integer", "minimum": 1, "maximum": 10}},
                                                  ["approvals_required"])),
            },
        })
    return json_api_document(
        "Enclave export review API", "Request bodies: at most 64 KiB, except on the upload routes.", prefix,
        {"ExportRequest": {"type": "object", "properties": {
            "id": {"type": "string"}, "workspace": {"type": "string"}, "requester": {"type": "string"},
            "title": {"type": "string"}, "state": {"type": "string", "enum": list(workflow.STATES)},
            "files": {"type": "array", "items": {"type": "object"}}, "history": {"type": "array"},
            "comments": {"type": "array"}}}},
        paths,
    )
