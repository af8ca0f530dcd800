"""The states page of the documentation, generated from the transition table and check registry.

``enclave exports states-doc`` (or ``python -m enclave.exports.docs``) writes it; a test fails when
the committed page differs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..settings import REPO_ROOT
from . import workflow
from .checks import CHECKS, REASONS

DOC_PATH = REPO_ROOT / "docs" / "export-review.md"


def states_section(states: Mapping[str, str], final: Iterable[str]) -> list[str]:
    """A workflow page's "States" section: each state with its meaning, then the final ones (this
    page's, and the sealed runs' page's, :mod:`enclave.sealed.docs`)."""
    return ["## States", "", "| State | Meaning |", "|---|---|",
            *(f"| `{s}` | {meaning} |" for s, meaning in states.items()),
            "", f"Final states: {', '.join(f'`{s}`' for s in sorted(final))}.", ""]


def render() -> str:
    lines = [
        "# Export review: states, transitions and checks",
        "",
        "<!-- Generated from enclave/exports/workflow.py and checks.py by `enclave exports states-doc`;"
        " do not edit by hand. -->",
        "",
        "An export request is the only way a file leaves a workspace. It is submitted from the sandbox,",
        "checked automatically, voted on file by file by the workspace's reviewers, and released with a",
        "signed manifest. Nobody reviews a request they made; reviewers do not see each other's votes on",
        "a file (nor who voted first) until all the votes the workspace's policy requires are in; every",
        "vote needs a written reason.",
        "",
        "The votes decide the request: the vote that gives every file its votes takes the request-level",
        "decision (the `system` steps below), approving and releasing it, rejecting it, or returning it",
        "with the reviewers' reasons. Only where one file's votes conflict (approve and reject) does a",
        "reviewer decide for the request, with a written reason; the request page says so, and offers",
        "only the steps that can be taken.",
        "",
    ]
    lines += states_section(workflow.STATES, workflow.FINAL)
    lines += [
        "## Transitions",
        "",
        "| From | To | Who | Action | Reason required | Condition |",
        "|---|---|---|---|---|---|",
    ]
    for (frm, to, _), t in workflow.TRANSITIONS.items():
        lines.append(f"| `{frm}` | `{to}` | {t.actor} | {t.action} | {'yes' if t.reason_required else 'no'} |"
                     f" {t.description} |")
    lines += ["", "```mermaid", "stateDiagram-v2", "    [*] --> submitted"]
    lines += [f"    {frm} --> {to}: {t.action}" + (" (votes)" if t.actor == workflow.SYSTEM and t.guard else "")
              for (frm, to, _), t in workflow.TRANSITIONS.items()]
    lines += [f"    {s} --> [*]" for s in sorted(workflow.FINAL)]
    lines += [
        "```",
        "",
        "## Votes and file decisions",
        "",
        f"Each reviewer votes once per file version: {', '.join(f'`{v}`' for v in workflow.VOTES)}.",
        "A file is `pending` until the policy's number of reviewers have voted; it is then `approved`",
        "(all approve), `rejected` (all reject), `changes_requested` (any asks for changes) or",
        "`conflicted`. A file changed while the request is returned is a new version, with no votes.",
        "",
        "## Actions at the same moment",
        "",
        "Every change of a request (a vote, a transition, new file versions, a release, a revocation,",
        "a comment) is one transaction that reads the request under a lock (its row on PostgreSQL, the",
        "database's write lock on SQLite) and checks the table above inside it. Two reviewers and the",
        "requester acting at once are taken one after the other: the first wins, the others get 409",
        "with the request's new state (a withdrawn request is never also released). A lock not granted",
        "within 15 s is a 503 and nothing is changed. `tests/exports/test_concurrency.py` fires every",
        "pair of conflicting actions at once on SQLite and on PostgreSQL and checks that each history is",
        "one chain of allowed transitions.",
        "",
        "## Automated checks",
        "",
        "Each check returns `pass`, `review` or `fail` with a reason and a location; a file's status",
        "is its worst result. Requesters can run them before submitting (`POST api/checks`).",
        "",
        "| Check | What it looks at |",
        "|---|---|",
    ]
    lines += [f"| `{c.name}` | {c.title} |" for c in CHECKS]
    lines += [
        "",
        "### Reasons and their codes",
        "",
        "Every finding carries a stable `code` and the `params` of its reason, next to the reason in",
        "English (`reason`, kept with the request, its audit records and manifests). Pages and the API",
        "show the reason in the reader's language (the API's `message`: the caller's chosen language,",
        "else its `Accept-Language`); scripts and tests rely on the code.",
        "",
        "| Code | Reason (English) |",
        "|---|---|",
    ]
    refusals = [
        "",
        "## Refusals",
        "",
        "The service's refusals have stable codes too (`export.self_review`, `export.not_found`,",
        "`request.blank`, …). The API answers a refusal with `{\"status\", \"error\", \"code\", \"text\",",
        "\"params\", \"message\"}`: `error` in English, `text` its template and `params` what fills it,",
        "`message` in the caller's language; the pages show the message in the reader's language, its",
        "code in `data-code`.",
    ]
    lines += ["| `%s` | %s |" % (code, text.replace("|", "\\|")) for code, text in REASONS.items()]
    return "\n".join(lines + refusals) + "\n"


if __name__ == "__main__":
    DOC_PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC_PATH}")
