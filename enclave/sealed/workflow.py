"""A sealed run's life as data: its states, the one table of allowed steps, and what each person is
shown of it. The service (:mod:`enclave.sealed.service`) moves a run only through
:data:`TRANSITIONS`.

What the operator sees is the rule that matters here. The run executes the operator's code on the
real data, and that code controls everything about the run: whether it fails, where, with what
message, how long it takes, how large its outputs are. So the operator is shown only
:data:`OPERATOR_STATES`, and only from times that do not depend on the data:

* a run is shown ``running`` from its start until its start plus its time limit, whenever it
  really ends, then ``ended``, the same word for success, failure and time-out;
* a run holds its runner slot for its whole time limit, whatever it did, so the start of the next
  run (of anyone) does not tell how long this one took.

The synthetic pre-run is different: it runs the same notebook on the synthetic release, which the
operator already sees, so when it fails the operator gets the run ``refused`` with the pre-run's
error, and the real data is not touched.
"""

from __future__ import annotations

from dataclasses import dataclass

AWAITING_APPROVAL = "awaiting_approval"
QUEUED = "queued"
PRE_RUNNING = "pre_running"
RUNNING = "running"
ENDED = "ended"
REFUSED = "refused"
WITHDRAWN = "withdrawn"

STATES = {
    AWAITING_APPROVAL: "Submitted in a workspace whose runs need the data holder's approval; waiting for it.",
    QUEUED: "Waiting for a free runner slot.",
    PRE_RUNNING: "The notebook runs on the synthetic release (the pre-run): a notebook that fails there is "
                 "refused and never touches the real data.",
    RUNNING: "The notebook runs on the sealed view of the release, in a sandbox of its own.",
    ENDED: "The run on the real data is over (succeeded, failed or timed out: only reviewers know which); "
           "its results are for review.",
    REFUSED: "Not run on the real data: the data holder refused it, or it failed on the synthetic release "
             "(the operator sees the pre-run's error).",
    WITHDRAWN: "Taken back by the operator before it started.",
}
FINAL = frozenset({ENDED, REFUSED, WITHDRAWN})

# Who takes a step.
OPERATOR, HOLDER, RUNNER = "operator", "holder", "runner"


@dataclass(frozen=True)
class Step:
    actor: str
    action: str
    description: str
    reason_required: bool = False


# (from, to) -> the step. Submission makes a run in AWAITING_APPROVAL or QUEUED (the workspace's
# sealed-run policy decides which); nothing else creates one.
TRANSITIONS: dict[tuple[str, str], Step] = {
    (AWAITING_APPROVAL, QUEUED): Step(HOLDER, "approve", "The data holder lets the run start."),
    (AWAITING_APPROVAL, REFUSED): Step(HOLDER, "refuse", "The data holder refuses the run, with a reason the "
                                       "operator sees.", True),
    (AWAITING_APPROVAL, WITHDRAWN): Step(OPERATOR, "withdraw", "The operator takes the run back."),
    (QUEUED, WITHDRAWN): Step(OPERATOR, "withdraw", "The operator takes the run back."),
    (QUEUED, PRE_RUNNING): Step(RUNNER, "start", "A runner slot is free: the pre-run on the synthetic "
                                "release starts."),
    (PRE_RUNNING, REFUSED): Step(RUNNER, "refuse", "The notebook failed on the synthetic release (or the "
                                 "request could not run): it is not run on the real data."),
    (PRE_RUNNING, RUNNING): Step(RUNNER, "run", "The pre-run succeeded: the notebook runs on the sealed view."),
    (PRE_RUNNING, QUEUED): Step(RUNNER, "requeue", "The service stopped during the pre-run (synthetic data only): "
                                "the run is queued again when it starts."),
    (RUNNING, ENDED): Step(RUNNER, "end", "The run is over (or was interrupted by the service's stop); what it "
                           "produced, or its error, goes to review."),
}

# What the operator is shown of each state (the words of the Exports panel).
SHOWN_QUEUED, SHOWN_AWAITING_APPROVAL, SHOWN_RUNNING, SHOWN_ENDED = (
    "queued", "awaiting_approval", "running", "ended")
OPERATOR_STATES = (SHOWN_QUEUED, SHOWN_AWAITING_APPROVAL, SHOWN_RUNNING, SHOWN_ENDED, REFUSED, WITHDRAWN)


def step(from_state: str, to_state: str, actor: str) -> Step | None:
    """The step from ``from_state`` to ``to_state`` if ``actor`` may take it, else None."""
    found = TRANSITIONS.get((from_state, to_state))
    return found if found is not None and found.actor == actor else None


def shown_to_operator(state: str, started_at: float | None, time_limit_s: int, now: float) -> str:
    """What the operator sees of a run in ``state``: computed from the start of its run on the real
    data (``started_at``, which the synthetic pre-run's length alone sets) and its time limit, never
    from when it really ended, so that nothing seen depends on the real data. Times are seconds
    since the epoch."""
    if state == AWAITING_APPROVAL:
        return SHOWN_AWAITING_APPROVAL
    if state in (REFUSED, WITHDRAWN):
        return state
    if state == QUEUED:
        return SHOWN_QUEUED
    if state == PRE_RUNNING or started_at is None:
        return SHOWN_RUNNING
    return SHOWN_RUNNING if now < started_at + time_limit_s else SHOWN_ENDED
