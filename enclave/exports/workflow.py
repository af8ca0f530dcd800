"""The export request workflow as data: states, the one table of allowed transitions, per-file votes.

Everything that moves a request goes through :data:`TRANSITIONS`: who may take each step, whether
a written reason is required, and the guard that must hold. The states page of the documentation
is generated from this table (``python -m enclave.exports.docs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

SUBMITTED = "submitted"
IN_REVIEW = "in_review"
RETURNED = "returned"
APPROVED = "approved"
REJECTED = "rejected"
RELEASED = "released"
WITHDRAWN = "withdrawn"
REVOKED = "revoked"

STATES = {
    SUBMITTED: "Submitted by the requester from a sandbox; file contents are frozen.",
    IN_REVIEW: "At least one reviewer has voted on a file.",
    RETURNED: "Changes requested; the requester may send new versions of files and resubmit.",
    APPROVED: "Enough independent approvals on every approved file.",
    REJECTED: "Refused; nothing is released.",
    RELEASED: "Approved files are signed and downloadable by the requester.",
    WITHDRAWN: "Withdrawn by the requester; nothing is released.",
    REVOKED: "Release revoked by an admin; no further downloads.",
}
FINAL = frozenset({REJECTED, WITHDRAWN, REVOKED})
OPEN = frozenset({SUBMITTED, IN_REVIEW, RETURNED})

# Who takes a step.
REQUESTER, REVIEWER, ADMIN, SYSTEM = "requester", "reviewer", "admin", "system"

# Per-file votes.
APPROVE, REQUEST_CHANGES, REJECT = "approve", "request_changes", "reject"
VOTES = (APPROVE, REQUEST_CHANGES, REJECT)

# A file's decision, from its votes.
FILE_PENDING, FILE_APPROVED, FILE_REJECTED, FILE_CHANGES, FILE_CONFLICTED = (
    "pending", "approved", "rejected", "changes_requested", "conflicted")


def file_decision(votes: list[str], required: int) -> str:
    """A file is decided once ``required`` reviewers have voted; until then it is pending."""
    if REQUEST_CHANGES in votes:
        return FILE_CHANGES if len(votes) >= required else FILE_PENDING
    if len(votes) < required:
        return FILE_PENDING
    if all(v == APPROVE for v in votes):
        return FILE_APPROVED
    if all(v == REJECT for v in votes):
        return FILE_REJECTED
    return FILE_CONFLICTED


# -- guards: return None when the step may be taken, else the reason it may not --


def _decisions(request) -> list[tuple[str, str, int]]:
    return [
        (f.name, file_decision([v.decision for v in f.votes], request.approvals_required), len(f.votes))
        for f in request.current_files()
    ]


def _all_voted(request) -> str | None:
    for name, decision, n in _decisions(request):
        if decision == FILE_PENDING:
            return f"file {name!r} has {n} of the {request.approvals_required} votes the policy requires"
    return None


def guard_approve(request) -> str | None:
    missing = _all_voted(request)
    if missing:
        return missing
    decisions = _decisions(request)
    for name, decision, _ in decisions:
        if decision in (FILE_CHANGES, FILE_CONFLICTED):
            return f"file {name!r} is {decision.replace('_', ' ')}: return the request or reject it"
    if not any(d == FILE_APPROVED for _, d, _ in decisions):
        return "no file is approved: reject the request instead"
    return None


def guard_reject(request) -> str | None:
    return _all_voted(request)


@dataclass(frozen=True)
class Transition:
    actor: str
    action: str
    description: str
    reason_required: bool = True
    guard: Callable | None = None


TRANSITIONS: dict[tuple[str, str], Transition] = {
    (SUBMITTED, IN_REVIEW): Transition(
        REVIEWER, "start review", "Taken by the first vote on any file of the request.", False),
    (SUBMITTED, RETURNED): Transition(
        REVIEWER, "return", "Changes requested before any vote."),
    (SUBMITTED, WITHDRAWN): Transition(
        REQUESTER, "withdraw", "The requester takes the request back.", False),
    (IN_REVIEW, APPROVED): Transition(
        REVIEWER, "approve",
        "Every file has the votes the workspace policy requires, none awaits changes or is in"
        " conflict, and at least one is approved. Rejected files are not released.",
        guard=guard_approve),
    (IN_REVIEW, REJECTED): Transition(
        REVIEWER, "reject", "Every file has the votes the policy requires.", guard=guard_reject),
    (IN_REVIEW, RETURNED): Transition(
        REVIEWER, "return", "Changes requested; votes on unchanged files are kept."),
    (IN_REVIEW, WITHDRAWN): Transition(
        REQUESTER, "withdraw", "The requester takes the request back.", False),
    (RETURNED, SUBMITTED): Transition(
        REQUESTER, "resubmit", "Changed files are new versions and their votes start again.", False),
    (RETURNED, WITHDRAWN): Transition(
        REQUESTER, "withdraw", "The requester takes the request back.", False),
    (APPROVED, RELEASED): Transition(
        SYSTEM, "release",
        "Right after approval: approved files are stripped of metadata, watermarked where the"
        " format allows, and released with a signed manifest.", False),
    (RELEASED, REVOKED): Transition(
        ADMIN, "revoke", "Download links stop working; the manifests stay verifiable."),
}


def allowed_from(state: str) -> dict[str, Transition]:
    return {to: t for (frm, to), t in TRANSITIONS.items() if frm == state}
