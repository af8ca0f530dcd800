"""The OpenAPI 3.1 document of the audit query API, served at ``api/openapi.json``."""

from __future__ import annotations

from ..services import json_api_document
from .actions import ACTIONS, OUTCOMES, SOURCES
from .reader import MAX_PAGE
from .records import RECORD_FIELDS

_ERROR = {"description": "Refused, with the reason",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_TIME = {"type": "string", "description": "ISO 8601 date or date and time; UTC unless it says otherwise",
         "examples": ["2026-03-01", "2026-03-01T08:00:00+08:00"]}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def openapi_document(prefix: str) -> dict:
    record = {
        "type": "object",
        "description": "An audit record, as hashed (see docs/audit.md)",
        "required": list(RECORD_FIELDS),
        "properties": {
            "seq": {"type": "integer", "minimum": 1},
            "time": {"type": "string", "description": "the audit service's clock, UTC, e.g. 2026-03-01T08:00:00.123456Z"},
            "source": {"type": "string", "enum": list(SOURCES)},
            "actor": {"type": "string"},
            "action": {"type": "string", "enum": list(ACTIONS)},
            "outcome": {"type": "string", "enum": list(OUTCOMES)},
            "workspace": {"type": ["string", "null"]},
            "sandbox": {"type": ["string", "null"]},
            "detail": {"type": "object"},
        },
    }
    checkpoint = {
        "type": "object",
        "description": "A signed tree head: Ed25519 over the canonical JSON of the other fields and"
                       " \"log\": \"enclave-audit-v1\"",
        "properties": {k: {"type": "integer" if k == "tree_size" else "string"}
                       for k in ("tree_size", "time", "root_hash", "chain_hash", "key_id", "signature")},
    }
    return json_api_document(
        "Enclave audit log API", "Read-only. Every call needs the custom:audit:read scope.", prefix,
        {"AuditRecord": record, "Checkpoint": checkpoint},
        {
            "/records": {"get": {
                "summary": "Records matching every filter given, one page at a time, in seq order",
                "parameters": [
                    _query("user", {"type": "string"}, "the actor"),
                    _query("workspace", {"type": "string"}, "the workspace"),
                    _query("action", {"type": "string"}, "an action, or a prefix ending in .* (export.*)"),
                    _query("since", _TIME, "records at or after this time"),
                    _query("until", _TIME, "records before this time"),
                    _query("after", {"type": "integer"}, "continue after this seq (the previous page's next)"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 100}, "page size"),
                    _query("order", {"type": "string", "enum": ["asc", "desc"], "default": "asc"}, "desc: newest first"),
                ],
                "responses": {
                    "200": {"description": "A page", "content": {"application/json": {"schema": {
                        "type": "object", "properties": {
                            "records": {"type": "array", "items": {"$ref": "#/components/schemas/AuditRecord"}},
                            "next": {"type": ["integer", "null"], "description": "pass as after for the next page"}}}}}},
                    "400": {**_ERROR, "description": "Bad filter (the error names it)"},
                    "403": {**_ERROR, "description": "Not an administrator"},
                },
            }},
            "/checkpoints/latest": {"get": {
                "summary": "The newest checkpoint and the public key that verifies it",
                "responses": {
                    "200": {"description": "checkpoint (or null), key_id, public_key (PEM)", "content": {
                        "application/json": {"schema": {"type": "object", "properties": {
                            "checkpoint": {"oneOf": [{"$ref": "#/components/schemas/Checkpoint"}, {"type": "null"}]},
                            "key_id": {"type": "string"}, "public_key": {"type": "string"}}}}}},
                    "403": {**_ERROR, "description": "Not an administrator"},
                },
            }},
        },
    )
