"""The sealed runs page of the documentation (``docs/sealed-runs.md``), generated from the states and
steps of :mod:`enclave.sealed.workflow` and the defaults of ``[sealed_runs]``.

``python -m enclave.sealed.docs`` writes it; a test fails when the committed page differs.
"""

from __future__ import annotations

from ..exports.docs import states_section
from ..settings import REPO_ROOT, SealedRunSettings
from . import workflow
from .service import LIMIT_KEYS, RESERVED_NAMES

DOC_PATH = REPO_ROOT / "docs" / "sealed-runs.md"


def render() -> str:
    defaults = SealedRunSettings()
    lines = [
        "# Sealed runs: an operator's notebook on the real data",
        "",
        "<!-- Generated from enclave/sealed/workflow.py and [sealed_runs] by `python -m enclave.sealed.docs`;"
        " do not edit by hand. -->",
        "",
        "Operators write their code against a synthetic release. A sealed run executes one of their",
        "notebooks on the *sealed view* of that release instead: the raw rows it was generated from, with",
        "direct identifiers treated as in the release, only the columns the workspace was granted, at the",
        "same path under `/data`. It runs in the data holder's domain, in a sandbox of its own (no network,",
        "no terminal, nobody attached, a fresh home holding only the notebook and the inputs chosen), and",
        "nothing of it reaches the operator but through export review: its executed notebook and chosen",
        "outputs, or its error, become an export request that only the reviewers the data holder appointed",
        "see, and that its requester sees only once they have decided it.",
        "",
        "The export review service runs the queue (`enclave/sealed/service.py`); each run goes through",
        "the steps below, each an audit record (`sealed_run.submit`, `sealed_run.step`).",
        "",
    ]
    lines += states_section(workflow.STATES, workflow.FINAL)
    lines += [
        "## Steps",
        "",
        "| From | To | Who | Action | Reason required | Meaning |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| `{frm}` | `{to}` | {t.actor} | {t.action} | {'yes' if t.reason_required else 'no'} | {t.description} |"
              for (frm, to), t in workflow.TRANSITIONS.items()]
    lines += ["", "```mermaid", "stateDiagram-v2", "    [*] --> awaiting_approval", "    [*] --> queued"]
    lines += [f"    {frm} --> {to}: {t.action}" for (frm, to), t in workflow.TRANSITIONS.items()]
    lines += [f"    {s} --> [*]" for s in sorted(workflow.FINAL)]
    lines += [
        "```",
        "",
        "## What the operator sees",
        "",
        "The operator's code controls everything about a run on the real data: whether it fails, where,",
        "with what message, how long it takes, how large its outputs are. The operator is therefore shown",
        f"only these words: {', '.join(f'`{s}`' for s in workflow.OPERATOR_STATES)}, and only from times",
        "that do not depend on the data:",
        "",
        "- a run is `running` from the start of its run on the real data until that start plus its time",
        "  limit, whenever it really ended, then `ended`: the same word for success, failure and time-out;",
        "- a run holds its runner slot for its whole time limit, so when the next run starts does not tell",
        "  how long this one took;",
        "- a refusal is shown with its reason: the data holder's, or the error of the *pre-run*, which runs",
        "  the notebook on the synthetic release first (real-data runs are not spent on bugs, and the",
        "  synthetic release is what the operator already sees).",
        "",
        "## Results",
        "",
        "When a run ends, its results become an export request (`origin: sealed_run`) with the reviewers the",
        "data holder appointed (frozen on the request; the workspace's own reviewers do not see it), the",
        "automated checks run on its files, and provenance on every file: the notebook's SHA-256, the",
        "release, its content hash and the hash of the data the run read, the environment, the limits, the",
        "duration and the outcome. A run that succeeded gives its executed notebook and outputs; one that",
        "failed or ran out of time gives its executed notebook, `error-type.txt` (the exception's type",
        "alone) and `error.txt` (type and message); a run's own output goes in `run-log.txt`. Reviewers",
        "approve or reject each file (a sealed run's request is never returned for changes: a new run is a",
        "new request). Outputs are named by their file name: names must be exportable and distinct, and",
        f"{', '.join(f'`{n}`' for n in RESERVED_NAMES)} are taken.",
        "",
        "## The data holder's policy, per workspace",
        "",
        "The data holder of a workspace's sources sets, for that workspace, whether runs wait for their",
        "approval, how many runs an operator may submit in 24 hours, who reviews the results (never an",
        "operator of the workspace; until someone is appointed, no run can be submitted) and the limits",
        f"({', '.join(f'`{k}`' for k in LIMIT_KEYS)}). Until they do, `[sealed_runs]` gives the defaults:",
        "",
        "| Setting | Default |",
        "|---|---|",
    ]
    lines += [f"| `{k}` | `{v}` |" for k, v in defaults.model_dump().items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    DOC_PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC_PATH}")
