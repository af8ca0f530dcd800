"""The export request workflow as data: states, the one table of allowed transitions, per-file votes.

Everything that moves a request goes through :data:`TRANSITIONS`: who may take each step, whether
a written reason is required, and the guard that must hold. Reviewers vote on files; the votes
decide the request themselves (the ``system`` steps, taken by the vote that decides them), except
where one file's votes conflict: then a reviewer decides. The states page of the documentation is
generated from this table (``python -m enclave.exports.docs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..i18n import N_, Message

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
    APPROVED: "Every file has its votes: each approved or rejected, at least one approved.",
    REJECTED: "Refused; nothing is released.",
    RELEASED: "Approved files are signed and downloadable by the requester.",
    WITHDRAWN: "Withdrawn by the requester; nothing is released.",
    REVOKED: "Release revoked by an admin; no further downloads.",
}
FINAL = frozenset({REJECTED, WITHDRAWN, REVOKED})
# A sealed run's request (``origin`` "sealed_run") is computed on the raw data: its requester sees
# it only once reviewers have decided it, and it is never returned for changes (its files come from
# the run, not from the requester: a new run is a new request).
SEALED_RUN = "sealed_run"
SHOWN_TO_SEALED_RUN_REQUESTER = frozenset({APPROVED, RELEASED, REJECTED, REVOKED})
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


# -- guards: return None when the step may be taken, else why it may not: a message with a stable
# code whose text names the step as %(action)s, which problem() fills --


def decisions(request) -> list[tuple[str, str, int]]:
    """Each current file of ``request``: its name, its decision from its votes, and how many are in."""
    return [
        (f.name, file_decision([v.decision for v in f.votes], request.approvals_required), len(f.votes))
        for f in request.current_files()
    ]


def _all_voted(request) -> Message | None:
    for name, decision, n in decisions(request):
        if decision == FILE_PENDING:
            return Message("export.step.votes_missing", N_(
                "cannot %(action)s: file %(file)s has %(votes)s of the %(required)s votes the policy requires"),
                {"file": repr(name), "votes": n, "required": request.approvals_required})
    return None


def _file_is(name: str, decision: str) -> Message:
    """A file's decision that stops a step (its votes conflict, or ask for changes)."""
    if decision == FILE_CONFLICTED:
        return Message("export.step.file_conflicted", N_("cannot %(action)s: file %(file)s is conflicted"),
                       {"file": repr(name)})
    return Message("export.step.file_changes_requested", N_("cannot %(action)s: file %(file)s is changes requested"),
                   {"file": repr(name)})


def conflicted_files(request) -> list[str]:
    return [name for name, decision, _ in decisions(request) if decision == FILE_CONFLICTED]


def guard_voted(request) -> Message | None:
    return None if any(n for _, _, n in decisions(request)) else Message(
        "export.step.no_votes", N_("cannot %(action)s: no file has a vote yet"))


def guard_votes_approve(request) -> Message | None:
    missing = _all_voted(request)
    if missing:
        return missing
    found = decisions(request)
    for name, decision, _ in found:
        if decision in (FILE_CHANGES, FILE_CONFLICTED):
            return _file_is(name, decision)
    if not any(d == FILE_APPROVED for _, d, _ in found):
        return Message("export.step.none_approved", N_("cannot %(action)s: no file is approved"))
    return None


def guard_votes_reject(request) -> Message | None:
    missing = _all_voted(request)
    if missing:
        return missing
    for name, decision, _ in decisions(request):
        if decision != FILE_REJECTED:
            return Message("export.step.file_not_rejected", N_(
                "cannot %(action)s: file %(file)s is %(decision)s, not rejected"),
                {"file": repr(name), "decision": decision.replace("_", " ")})
    return None


def guard_votes_return(request) -> Message | None:
    missing = _all_voted(request)
    if missing:
        return missing
    found = decisions(request)
    for name, decision, _ in found:
        if decision == FILE_CONFLICTED:
            return Message("export.step.reviewer_decides", N_(
                "cannot %(action)s: the votes on %(file)s conflict: a reviewer decides"), {"file": repr(name)})
    if not any(d == FILE_CHANGES for _, d, _ in found):
        return Message("export.step.no_changes_requested", N_("cannot %(action)s: no file has changes requested"))
    return None


def guard_conflict(request) -> Message | None:
    """A reviewer decides for the request only where the votes cannot: a file's votes conflict."""
    missing = _all_voted(request)
    if missing:
        return missing
    if not conflicted_files(request):
        return Message("export.step.no_conflict", N_(
            "cannot %(action)s: no file's votes conflict: the votes decide the request themselves"))
    return None


def guard_resubmit(request) -> Message | None:
    for name, decision, _ in decisions(request):
        if decision in (FILE_CHANGES, FILE_CONFLICTED):
            if decision == FILE_CONFLICTED:
                return Message("export.step.new_version_needed", N_(
                    "cannot %(action)s: file %(file)s is conflicted: send a new version of it first"), {"file": repr(name)})
            return Message("export.step.new_version_needed", N_(
                "cannot %(action)s: file %(file)s is changes requested: send a new version of it first"),
                {"file": repr(name)})
    return None


def changes_requested(request) -> str:
    """The reviewers' reasons on the files with changes requested: the reason of the return the
    votes decide."""
    lines = []
    for f in request.current_files():
        votes = [v.decision for v in f.votes]
        if file_decision(votes, request.approvals_required) == FILE_CHANGES:
            lines += [f"{f.name}: {v.reason}" for v in f.votes if v.decision == REQUEST_CHANGES]
    return "\n".join(lines)


@dataclass(frozen=True)
class Transition:
    actor: str
    action: str
    description: str
    reason_required: bool = True
    guard: Callable | None = None


# Taken by the vote that decides it: the description of every automatic request-level decision.
BY_VOTE = "Taken by the vote that decides it: "

# (from, to, who) -> the step. A pair of states can have two entries: the step the votes take by
# themselves (``system``) and the one a person takes where the votes cannot decide.
TRANSITIONS: dict[tuple[str, str, str], Transition] = {
    (SUBMITTED, IN_REVIEW, SYSTEM): Transition(
        SYSTEM, "start review", "Taken by the first vote on any file of the request.", False, guard_voted),
    (SUBMITTED, WITHDRAWN, REQUESTER): Transition(
        REQUESTER, "withdraw", "The requester takes the request back.", False),
    (IN_REVIEW, APPROVED, SYSTEM): Transition(
        SYSTEM, "approve",
        BY_VOTE + "every file has the votes the workspace policy requires, each is approved or rejected,"
        " and at least one is approved. Rejected files are not released.",
        False, guard_votes_approve),
    (IN_REVIEW, REJECTED, SYSTEM): Transition(
        SYSTEM, "reject", BY_VOTE + "every file is rejected.", False, guard_votes_reject),
    (IN_REVIEW, RETURNED, SYSTEM): Transition(
        SYSTEM, "return",
        BY_VOTE + "every file has its votes, none conflicts, and changes are requested on one; the"
        " reason is the reviewers' reasons for the changes.", False, guard_votes_return),
    (IN_REVIEW, REJECTED, REVIEWER): Transition(
        REVIEWER, "reject",
        "Every file has its votes and one's votes conflict (approve and reject): a reviewer decides"
        " for the request, rejecting it or returning it.", guard=guard_conflict),
    (IN_REVIEW, RETURNED, REVIEWER): Transition(
        REVIEWER, "return",
        "Every file has its votes and one's votes conflict: a reviewer returns the request, saying"
        " what to change. Votes on files left unchanged are kept.", guard=guard_conflict),
    (IN_REVIEW, WITHDRAWN, REQUESTER): Transition(
        REQUESTER, "withdraw", "The requester takes the request back.", False),
    (RETURNED, SUBMITTED, REQUESTER): Transition(
        REQUESTER, "resubmit",
        "Every file with changes requested or conflicting votes has a new version; new versions'"
        " votes start again.", False, guard_resubmit),
    (RETURNED, WITHDRAWN, REQUESTER): Transition(
        REQUESTER, "withdraw", "The requester takes the request back.", False),
    (APPROVED, RELEASED, SYSTEM): Transition(
        SYSTEM, "release",
        "Right after approval: approved files are stripped of metadata, watermarked where the"
        " format allows, and released with a signed manifest.", False),
    (RELEASED, REVOKED, ADMIN): Transition(
        ADMIN, "revoke", "Download links stop working; the manifests stay verifiable."),
}


def allowed_from(state: str) -> list[tuple[str, Transition]]:
    """The steps out of ``state``: (the state each leads to, the step)."""
    return [(to, t) for (frm, to, _), t in TRANSITIONS.items() if frm == state]


def by_hand(state: str, to: str) -> Transition | None:
    """The step from ``state`` to ``to`` a person takes (None: there is none, or the system takes it)."""
    return next((t for (frm, dest, actor), t in TRANSITIONS.items()
                 if frm == state and dest == to and actor != SYSTEM), None)


def problem(request, t: Transition) -> Message | None:
    """Why ``t`` cannot be taken from the request's state now, naming the step; None when it can."""
    why = t.guard(request) if t.guard else None
    return None if why is None else Message(why.code, why.text, {"action": t.action, **why.params})


def automatic_step(request) -> tuple[str, Transition] | None:
    """The step the system takes from the request's state now that its guard holds, if any."""
    return next(((to, t) for to, t in allowed_from(request.state)
                 if t.actor == SYSTEM and problem(request, t) is None), None)
