"""The audit log's documentation page, generated from the tables of :mod:`.actions`.

``enclave audit actions-doc`` writes it; a test fails when the committed page differs.
"""

from __future__ import annotations

from ..settings import REPO_ROOT
from .actions import ACTIONS, DETAIL_KEYS, OUTCOMES, SOURCES, WHERE
from .records import MAX_DETAIL_BYTES, MAX_NAME_CHARS
from .service import MAX_BATCH, MAX_LINE

DOC_PATH = REPO_ROOT / "docs" / "audit.md"

DESIGN = f"""\
Every operation and every transfer is recorded in one append-only log on the hub side. Every
hub-side component hands its records to one writer, the audit service; none appends on its own.
Each record is chained to the one before it and sealed at intervals by a signed checkpoint, so
that `enclave audit verify` finds any record that was edited, deleted, inserted, reordered or cut
off, and names the first one.

## A record

| field | set by | meaning |
|---|---|---|
| `seq` | the writer | 1, 2, 3, … with no gap |
| `time` | the writer | its own clock, UTC, ISO 8601 with microseconds (`2026-03-01T08:00:00.123456Z`); never goes backwards |
| `source` | the source | the component that handed the record over (below) |
| `actor` | the source | the user or service that acted |
| `action` | the source | a dotted name from the table of actions below |
| `outcome` | the source | {", ".join(f"`{o}`" for o in OUTCOMES)} |
| `workspace` | the source | the workspace, or null |
| `sandbox` | the source | the sandbox, or null |
| `detail` | the source | a JSON object with the keys the action lists |

The writer refuses, with an error naming the problem, a record with an unknown action, a missing or
unlisted detail key, a workspace or sandbox that does not fit the action, a name longer than
{MAX_NAME_CHARS} characters or holding control characters, a floating-point number, an integer
beyond ±(2^53 − 1), text that is not valid Unicode, or a detail longer than {MAX_DETAIL_BYTES // 1024} KiB once
encoded. A refused record is not written at all.

## Canonical form, hash chain, Merkle tree, checkpoints

- **Canonical form.** A record is stored as, and hashed as, its JSON with keys sorted, separators
  `,` and `:` without spaces, non-ASCII characters as themselves (Chinese text is not escaped), in
  UTF-8: `json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`. Floats are
  refused because their text form differs between languages (send `"0.25"` or an integer in a
  smaller unit). For the values accepted, this is RFC 8785 (JCS), except that keys are sorted by
  code point rather than UTF-16 unit (different only for keys mixing characters above U+FFFF with
  U+E000–U+FFFF).
- **Hash chain.** `h_i = SHA-256(h_(i-1) || canonical(record_i))`, with `h_0` = 32 zero bytes.
  Each record row keeps its `h_i`; verification recomputes the chain and names the first record
  whose hash disagrees.
- **Merkle tree** (RFC 6962): leaf `SHA-256(0x00 || canonical(record))`, node
  `SHA-256(0x01 || left || right)`. `enclave audit prove SEQ` gives an inclusion proof of one
  record against the newest checkpoint, which shows the record is in the signed log without showing
  any other; `AuditReader.prove_consistency` shows that the newest checkpoint's tree extends an
  older one, for whoever kept that one (both checked with RFC 9162's algorithms).
- **Checkpoints** (signed tree heads): `tree_size`, `time`, `root_hash` (Merkle), `chain_hash`
  (`h_tree_size`) and `key_id`, signed with Ed25519 over their canonical form with
  `"log": "enclave-audit-v1"`. One is made after `audit.checkpoint_every_records` records or
  `audit.checkpoint_every_seconds` seconds, whichever comes first, and when the service stops. Each
  is stored in the database and appended to a second copy outside it,
  `$ENCLAVE_HOME/audit/checkpoints.jsonl`. A checkpoint signed with another key is refused.
- **Keys.** The signing key is created once, by the audit service, at
  `$ENCLAVE_HOME/secrets/audit-signing.key` (mode 0600, hub side only); the public key is
  `audit-signing.pub` next to it. The service refuses to make a new key for a log that has
  checkpoints. Keep a copy of the public key (or its key id) away from the host: whoever holds root
  on the hub could otherwise replace the log and the key together.

What verification proves: nothing up to the newest checkpoint was changed, removed, inserted or
moved, and the log was not cut short of any checkpoint it (or its second copy) knows. Records after
the newest checkpoint are protected by the chain alone until the next one (at most
`checkpoint_every_seconds`). Root on the hub can still add records, or stop the service; the log
makes changes to what was recorded visible, it cannot stop the host's owner from lying from now on.

## One writer

The audit service (`python -m enclave.audit.service`, hub-managed) is the only writer, by
construction: it takes an exclusive lock when it starts and holds it until it exits — a `flock` on
`audit.sqlite.writer-lock` next to the SQLite database, or a PostgreSQL advisory lock — so a second
service on the same log stops at start (`WriterBusy`); the lock goes with the process, even on
`kill -9`. Nothing else in Enclave inserts into the log, and every reader (`enclave audit …`, the
query API) opens the database read-only. Triggers refuse `UPDATE` and `DELETE` on its tables.

Records from all connections are committed together (group commit, up to {MAX_BATCH} a transaction);
a record is acknowledged only after its transaction committed (SQLite in WAL mode with
`synchronous=FULL`; PostgreSQL with its default synchronous commit), so no acknowledged record is
lost when the service is killed. When it starts, the service checks the records after the newest
checkpoint and the checkpoints' second copy, and refuses to continue a log that does not verify.

## Handing records over

The service listens on `$ENCLAVE_HOME/run/audit/audit.sock`, in a directory of mode 0700: only
root, that is hub-side components, reaches it; sandboxes never see it. The protocol is
newline-delimited JSON over persistent connections, with pipelined acknowledgements (requests are
at most {MAX_LINE // 1024} KiB):

```
→ {{"id": 7, "append": {{"source": "hub", "actor": "alice", "action": "auth.login", "outcome": "ok", "detail": {{"method": "native"}}}}}}
← {{"id": 7, "seq": 1234}}
← {{"id": 8, "error": "unknown action 'auth.signin': …", "refused": true}}
```

Sources use `enclave.audit.client`: `AuditClient(settings).append(source, actor, action, outcome,
workspace=…, sandbox=…, detail=…)` returns the `seq`, `AsyncAuditClient` does the same for asyncio
and tornado code. `AuditUnavailable` means the record may not be logged: the caller fails closed.
Records of one change made of many (`enclave apply`'s) go together, `append_many`, as
`{{"id": 9, "append_many": [{{record}}, …]}}` answered `{{"id": 9, "seqs": […]}}`: committed in one
batch, or none of them (one the log refuses refuses them all).

## Reading

- `enclave audit verify [--jsonl FILE]` — exit 0 only if everything verifies; otherwise the first
  bad record is named. An export verifies without the database.
- `enclave audit export --format jsonl [--since --until]` — line 1 is a header with the chain
  hash before the first record; each record line is the canonical record plus its `chain_hash`;
  each checkpoint follows the record it seals.
- `enclave audit query --user --workspace --action --since --until --format table|jsonl|csv`
  (`--user` matches the actor; `--action export.*` matches a prefix; `--until` is exclusive).
- `query` and `export` ask the audit service on `$ENCLAVE_HOME/run/audit/query.sock` (HTTP, root
  only: the peer's uid is checked; the service is started for the while when the hub is down);
  `verify`, `prove`, `trace` and `report` read the database read-only.
- `enclave audit prove SEQ` — an inclusion proof against the newest checkpoint.
- `enclave audit trace FILE|SHA256 [--format text|json]` — from a released file (or a copy: by hash,
  or by its watermark) to its export request, the reviewers and their reasons, the executions that
  produced it, the sandbox session and the releases and columns it had under `/data`; every step
  cites its records' seqs. Exit 1 for a file that was never released.
- `enclave audit report WS --since --until [--format html|json]` — the workspace's assessment report
  for the period: requests and decisions with reasons, check failures, releases, downloads, egress
  notices, active operators, sessions and executions, data supplied versus used.
- The admin pages, `/services/audit/` (records, with the filters above) and `/services/audit/report`,
  and the query API, `/services/audit/api/records` (OpenAPI at `api/openapi.json`), need the
  `custom:audit:read` scope (administrators).
"""


def _keys(names: tuple[str, ...]) -> str:
    return ", ".join(f"`{k}`" for k in names) or "—"


def render() -> str:
    lines = [
        "# The audit log",
        "",
        "<!-- Generated from enclave/audit/actions.py by `enclave audit actions-doc`; do not edit by hand. -->",
        "",
        DESIGN,
        "## Sources",
        "",
        "| source | who hands the record over |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {text} |" for name, text in SOURCES.items()]
    lines += ["", "## Actions", "", "Where an action happens decides which of `workspace` and `sandbox` it needs:", ""]
    lines += [f"- `{name}`: {text}" for name, text in WHERE.items()]
    lines += [
        "",
        "| action | records | where | detail (required) | detail (optional) |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| `{name}` | {a.records} | {a.where} | {_keys(a.required)} | {_keys(a.optional)} |"
              for name, a in ACTIONS.items()]
    lines += ["", "## Detail keys", "", "| key | meaning |", "|---|---|"]
    lines += [f"| `{key}` | {text} |" for key, text in DETAIL_KEYS.items()]
    return "\n".join(lines) + "\n"
