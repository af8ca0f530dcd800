"""The sealed-run service layer, run inside the export review service (it shares its database, blob
store and audit client): each workspace's sealed-run policy, submission, the data holder's approval,
the queue, and a run from the synthetic pre-run to its end on the sealed view.

Every step goes through :data:`enclave.sealed.workflow.TRANSITIONS` and is an audit record in the
same transaction as its change (nothing happens unrecorded). The operator reads runs only through
:meth:`SealedRuns.runs_of`, which shows what :func:`~enclave.sealed.workflow.shown_to_operator`
allows; the outcome (state, error, log, outputs) stays for reviewers.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from dataclasses import asdict
from datetime import datetime, timedelta

from sqlalchemy import func, select

from ..audit.records import without_floats
from ..exports.models import SealedRun, SealedRunPolicy
from ..exports.service import (
    Actor,
    BadInput,
    Conflict,
    ExportError,
    ExportService,
    NotFound,
    Refused,
    TooLarge,
    Upload,
    now,
)
from ..exports.workflow import SEALED_RUN
from .. import workspaces
from ..i18n import N_
from ..sandbox.policy import acro_environment
from . import workflow
from .runner import Outcome, RunError, RunLimits, RunRequest, SealedRunRefusal, check_request, run, sealed_run_uid

log = logging.getLogger("enclave.sealed")

POLICY_KEYS = ("approval_required", "runs_per_day", "reviewers", "limits")
LIMIT_KEYS = ("seconds", "memory_mb", "disk_mb", "cpus")


class SealedRuns:
    """Sealed runs on the review service's database and store (``exports``: an :class:`ExportService`)."""

    def __init__(self, exports: ExportService) -> None:
        self.exports = exports
        self.settings = exports.settings
        self.cfg = exports.settings.sealed_runs

    # -- the workspace's policy, set by its data holder --

    def _holder_of(self, actor: Actor, workspace: str):
        ws = self.exports.workspace(workspace)
        if ws.holder is None or ws.holder != actor.name:
            raise Refused("sealed_run.not_the_holder", N_(
                "only the data holder of workspace %(workspace)s (%(holder)s) sets and approves its sealed runs"),
                workspace=repr(workspace), holder=ws.holder or "none")
        return ws

    def policy(self, workspace: str) -> dict:
        """The workspace's sealed-run policy: its data holder's, else [sealed_runs]'s defaults."""
        with self.exports.db.snapshot() as s:
            row = s.get(SealedRunPolicy, workspace)
            return self._policy_dict(row)

    def _policy_dict(self, row: SealedRunPolicy | None) -> dict:
        limits = {k: getattr(self.cfg, k) for k in LIMIT_KEYS}
        if row is None:
            return {"approval_required": self.cfg.approval_required, "runs_per_day": self.cfg.runs_per_day,
                    "reviewers": [], "limits": limits, "version": 0}
        return {"approval_required": row.approval_required, "runs_per_day": row.runs_per_day,
                "reviewers": list(row.reviewers), "limits": {**limits, **row.limits}, "version": row.version}

    def set_policy(self, actor: Actor, workspace: str, changes: dict) -> dict:
        """Change the workspace's policy; only its data holder may. Reviewers are people who will see
        results computed on the raw data: none may be an operator of the workspace."""
        ws = self._holder_of(actor, workspace)
        unknown = sorted(set(changes) - set(POLICY_KEYS))
        if unknown:
            raise BadInput("sealed_run.unknown_policy_key", N_("%(key)s is not a sealed-run policy key (%(known)s)"),
                           key=repr(unknown[0]), known=", ".join(POLICY_KEYS))
        if "approval_required" in changes and not isinstance(changes["approval_required"], bool):
            raise BadInput("sealed_run.bad_approval_required", N_("approval_required must be true or false (got"
                                                                  " %(value)s)"), value=repr(changes["approval_required"]))
        if "runs_per_day" in changes and not (isinstance(changes["runs_per_day"], int)
                                              and not isinstance(changes["runs_per_day"], bool)
                                              and 0 <= changes["runs_per_day"] <= 1000):
            raise BadInput("sealed_run.bad_runs_per_day", N_("runs_per_day must be a whole number from 0 to 1000 (got"
                                                             " %(value)s)"), value=repr(changes["runs_per_day"]))
        if "reviewers" in changes:
            changes = {**changes, "reviewers": self._reviewers(ws, changes["reviewers"])}
        if "limits" in changes:
            limits = changes["limits"]
            bad = [k for k in (limits if isinstance(limits, dict) else {}) if k not in LIMIT_KEYS]
            try:
                if not isinstance(limits, dict) or bad:
                    raise ValueError
                self._run_limits({**{k: getattr(self.cfg, k) for k in LIMIT_KEYS}, **limits})
            except (TypeError, ValueError):
                raise BadInput("sealed_run.bad_limits", N_(
                    "limits must hold only seconds (at least 5), memory_mb (at least 128), disk_mb (at least 16) and"
                    " cpus (above 0) (got %(value)s)"), value=repr(limits)) from None
        with self.exports._writing() as s:
            row = s.get(SealedRunPolicy, workspace, with_for_update=True)
            current = self._policy_dict(row)
            if row is None:
                row = SealedRunPolicy(workspace=workspace, approval_required=current["approval_required"],
                                      runs_per_day=current["runs_per_day"], reviewers=[], limits={}, version=0,
                                      updated_by=actor.name)
                s.add(row)
            for key, value in changes.items():
                setattr(row, key, {**row.limits, **value} if key == "limits" else value)
            row.version += 1
            row.updated_by, row.updated_at = actor.name, now()
            policy = self._policy_dict(row)
            self.exports._record(s, actor.name, "sealed_run.policy", workspace, **without_floats(
                {k: policy[k] for k in ("approval_required", "runs_per_day", "reviewers", "limits", "version")}))
        return policy

    def _reviewers(self, ws, reviewers) -> list[str]:
        """The reviewers a holder appoints: accounts with the reviewer role, none an operator of the
        workspace (people who will see results computed on the raw data)."""
        from .. import accounts

        if not isinstance(reviewers, list) or not all(isinstance(r, str) and r for r in reviewers):
            raise BadInput("sealed_run.bad_reviewers", N_("reviewers must be a list of user names (got %(value)s)"),
                           value=repr(reviewers))
        operators = sorted(set(reviewers) & ws.operators)
        if operators:
            raise Refused("sealed_run.reviewer_is_operator", N_(
                "%(user)s is an operator of workspace %(workspace)s: operators never review results computed on"
                " the raw data"), user=operators[0], workspace=repr(ws.name))
        for name in sorted(set(reviewers)):
            try:
                account = accounts.get_account(self.settings, name)
            except accounts.AccountError:
                raise BadInput("sealed_run.reviewer_unknown", N_("no account named %(user)s"), user=repr(name)) from None
            if "reviewer" not in account.roles:
                raise Refused("sealed_run.reviewer_without_role", N_(
                    "%(user)s does not have the reviewer role: only reviewers review export requests"), user=name)
        return sorted(set(reviewers))

    @staticmethod
    def _run_limits(limits: dict) -> RunLimits:
        seconds, memory_mb, disk_mb = int(limits["seconds"]), int(limits["memory_mb"]), int(limits["disk_mb"])
        cpus = float(limits["cpus"])
        if seconds < 5 or memory_mb < 128 or disk_mb < 16 or cpus <= 0:
            raise ValueError("seconds ≥ 5, memory_mb ≥ 128, disk_mb ≥ 16, cpus > 0")
        return RunLimits(seconds=seconds, memory_mb=memory_mb, disk_mb=disk_mb, cpus=cpus)

    # -- submission, by an operator from the workspace's sandbox --

    def submit(self, actor: Actor, release: str, notebook_path: str, notebook: bytes,
               inputs: list[tuple[str, bytes]], outputs: list[str]) -> dict:
        """Freeze the notebook and inputs and queue the run (or hold it for the holder's approval)."""
        from synthetic import sealed

        ws = self.exports.sandbox_workspace(actor)
        policy = self.policy(ws.name)
        if sum(len(b) for _, b in inputs) + len(notebook) > self.cfg.max_input_mb * 2**20:
            raise TooLarge("sealed_run.inputs_too_large", N_(
                "the notebook and its inputs are larger than %(max_mb)s MiB together"), max_mb=self.cfg.max_input_mb)
        try:
            sealed.for_workspace(self.settings, ws.name, release)
        except sealed.SealedViewError as exc:
            raise Refused.from_refusal(exc) from None
        if not policy["reviewers"]:
            raise Refused("sealed_run.no_reviewers", N_(
                "the data holder of workspace %(workspace)s has appointed nobody to review sealed runs' results:"
                " sealed runs cannot be made there yet"), workspace=repr(ws.name))
        result_names(notebook_path, outputs)
        limits = self._run_limits(policy["limits"])
        draft = RunRequest(run_id="check", user=actor.name, workspace=ws.name, release=release,
                           data_dir=self._synthetic_data(ws, release), data_kind="synthetic_release",
                           notebook=notebook, limits=limits, uid=sealed_run_uid(self.settings, 0),
                           notebook_path=notebook_path, inputs=inputs, outputs=outputs)
        try:
            checked = check_request(self.settings, draft)
        except SealedRunRefusal as exc:
            raise BadInput.from_refusal(exc) from None
        digests = [(path, self.exports.store.put(data), len(data)) for path, data in checked.inputs]
        notebook_sha256 = self.exports.store.put(notebook)
        run_id = uuid.uuid4().hex
        state = workflow.AWAITING_APPROVAL if policy["approval_required"] else workflow.QUEUED
        with self.exports._writing() as s:
            # The workspace's submissions one at a time (on PostgreSQL; SQLite's write lock does it):
            # two at once must not both count the runs before either is added.
            s.get(SealedRunPolicy, ws.name, with_for_update=True)
            since = now() - timedelta(hours=24)
            today = s.scalar(select(func.count()).select_from(SealedRun).where(
                SealedRun.workspace == ws.name, SealedRun.requester == actor.name, SealedRun.submitted_at > since))
            if today >= policy["runs_per_day"]:
                raise Refused("sealed_run.daily_limit", N_(
                    "%(user)s has submitted %(runs)s sealed runs in workspace %(workspace)s in the past 24 hours,"
                    " the most its data holder allows"), user=actor.name, runs=today, workspace=repr(ws.name))
            row = SealedRun(
                id=run_id, workspace=ws.name, requester=actor.name, release=release,
                notebook_path=checked.notebook_path, notebook_sha256=notebook_sha256,
                inputs=[{"path": p, "sha256": d, "size": n} for p, d, n in digests], outputs=checked.outputs,
                limits=asdict(limits), policy_version=policy["version"], state=state, submitted_at=now(),
                updated_at=now())
            s.add(row)
            self.exports._record(s, actor.name, "sealed_run.submit", ws.name, run_id=run_id, release=release,
                                 notebook_sha256=notebook_sha256, inputs=row.inputs, outputs=row.outputs, state=state)
        return self.shown(row)

    # -- steps taken by people --

    def _get(self, s, run_id: str, for_update: bool = False) -> SealedRun:
        row = s.get(SealedRun, run_id, with_for_update=for_update) if isinstance(run_id, str) else None
        if row is None:
            raise NotFound("sealed_run.unknown", N_("no sealed run %(run_id)s"), run_id=repr(run_id))
        return row

    def _step(self, s, row: SealedRun, to: str, actor: str, who: str, reason: str = "", **detail) -> None:
        step = workflow.step(row.state, to, actor)
        if step is None:
            raise Conflict("sealed_run.step_not_allowed", N_("a sealed run that is %(state)s cannot become %(to)s"),
                           state=row.state.replace("_", " "), to=to.replace("_", " "))
        row.state, row.updated_at = to, now()
        extra = {"reason": reason} if reason else {}
        self.exports._record(s, who, "sealed_run.step", row.workspace, run_id=row.id, step=step.action, state=to,
                             **extra, **detail)

    def decide(self, actor: Actor, run_id: str, approve: bool, reason: str = "") -> dict:
        """The data holder approves a run awaiting approval, or refuses it with a reason the operator sees."""
        reason = (reason or "").strip()
        if not approve and not reason:
            raise BadInput("sealed_run.reason_required", N_("refusing a sealed run needs a reason"))
        with self.exports._writing() as s:
            row = self._get(s, run_id, for_update=True)
            self._holder_of(actor, row.workspace)
            to = workflow.QUEUED if approve else workflow.REFUSED
            if not approve:
                row.refusal = {"code": "sealed_run.refused_by_holder", "text": reason, "params": {}}
            self._step(s, row, to, workflow.HOLDER, actor.name, reason)
        return self.shown(row)

    def withdraw(self, actor: Actor, run_id: str) -> dict:
        with self.exports._writing() as s:
            row = self._get(s, run_id, for_update=True)
            if row.requester != actor.name:
                raise NotFound("sealed_run.unknown", N_("no sealed run %(run_id)s"), run_id=repr(run_id))
            self._step(s, row, workflow.WITHDRAWN, workflow.OPERATOR, actor.name)
        return self.shown(row)

    # -- what the operator sees --

    @staticmethod
    def shown(row: SealedRun, at: float | None = None) -> dict:
        """A run as its operator may see it: never its outcome, duration, error or sizes."""
        started = row.started_at.timestamp() if row.started_at else None
        state = workflow.shown_to_operator(row.state, started, row.limits["seconds"], time.time() if at is None else at)
        out = {"id": row.id, "release": row.release, "notebook": row.notebook_path,
               "submitted_at": row.submitted_at.isoformat(), "state": state}
        if state == workflow.REFUSED and row.refusal:
            out["refusal"] = row.refusal
        return out

    def runs_of(self, actor: Actor) -> list[dict]:
        """The actor's runs in the workspace of their sandbox, newest first."""
        ws = self.exports.sandbox_workspace(actor)
        with self.exports.db.snapshot() as s:
            rows = s.scalars(select(SealedRun).where(SealedRun.workspace == ws.name, SealedRun.requester == actor.name)
                             .order_by(SealedRun.submitted_at.desc())).all()
            return [self.shown(r) for r in rows]

    def awaiting_holder(self, actor: Actor) -> list[dict]:
        """Runs awaiting ``actor``'s approval, in the workspaces whose data holder they are: what the
        holder decides from (who, which release, the notebook's hash, inputs and outputs)."""
        with self.exports.db.snapshot() as s:
            rows = s.scalars(select(SealedRun).where(SealedRun.state == workflow.AWAITING_APPROVAL)
                             .order_by(SealedRun.submitted_at)).all()
            return [{"id": r.id, "workspace": r.workspace, "requester": r.requester, "release": r.release,
                     "notebook": r.notebook_path, "notebook_sha256": r.notebook_sha256, "inputs": r.inputs,
                     "outputs": r.outputs, "submitted_at": r.submitted_at.isoformat(),
                     "code": self._code_cells(r.notebook_sha256)}
                    for r in rows if self.exports.workspace(r.workspace).holder == actor.name]

    def _code_cells(self, notebook_sha256: str) -> list[str]:
        """The frozen notebook's code cells, for the holder to read before approving (the code will
        run on their raw data); empty when the notebook cannot be read as one."""
        try:
            notebook = json.loads(self.exports.store.get(notebook_sha256))
            cells = notebook.get("cells", [])
            return [c["source"] if isinstance(c["source"], str) else "".join(c["source"])
                    for c in cells if isinstance(c, dict) and c.get("cell_type") == "code" and "source" in c]
        except (OSError, ValueError, TypeError, AttributeError, KeyError):
            return []

    def releases_of(self, actor: Actor) -> list[str]:
        """The releases of the actor's sandbox's workspace a sealed run may use: those with a sealed
        view (synthetic releases whose raw source the data holder keeps registered)."""
        from synthetic import sealed

        ws = self.exports.sandbox_workspace(actor)
        found = []
        for release in ws.releases:
            try:
                sealed.for_workspace(self.settings, ws.name, release)
            except sealed.SealedViewError:
                continue
            found.append(release)
        return found

    # -- the runner's side --

    def start_next(self) -> str | None:
        """Take the oldest queued run into its pre-run (one transaction: a run is taken once), or None."""
        with self.exports._writing() as s:
            run_id = s.scalar(select(SealedRun.id).where(SealedRun.state == workflow.QUEUED)
                              .order_by(SealedRun.submitted_at).limit(1))
            if run_id is None:
                return None
            row = self._get(s, run_id, for_update=True)
            if row.state != workflow.QUEUED:  # withdrawn meanwhile (PostgreSQL: read before the lock)
                return None
            self._step(s, row, workflow.PRE_RUNNING, workflow.RUNNER, "system")
            return run_id

    def recover(self) -> int:
        """At the service's start: runs a stopped service left in their pre-run are queued again (it
        ran on synthetic data only); runs left running on the real data end, their request saying the
        run was interrupted; what runs left on disk is removed. Returns how many runs were moved."""
        from .runner import remove_leftovers

        remove_leftovers(self.settings)
        with self.exports.db.snapshot() as s:
            stale = [(r.id, r.state) for r in s.scalars(select(SealedRun).where(
                SealedRun.state.in_((workflow.PRE_RUNNING, workflow.RUNNING))))]
        for run_id, state in stale:
            if state == workflow.PRE_RUNNING:
                with self.exports._writing() as s:
                    self._step(s, self._get(s, run_id, for_update=True), workflow.QUEUED, workflow.RUNNER, "system")
            else:
                with self.exports.db.snapshot() as s:
                    limits = RunLimits(**self._get(s, run_id).limits)
                outcome = Outcome(run_id, "failed", limits, 0.0, error=RunError(
                    "Interrupted", "the review service stopped while the run was running; nothing of it was kept"))
                self._end(run_id, outcome, _outcome_record(outcome))
        return len(stale)

    def _request(self, row: SealedRun, slot: int, data_kind: str) -> RunRequest:
        from synthetic import sealed

        ws = self.exports.workspace(row.workspace)
        data_dir = (sealed.for_workspace(self.settings, row.workspace, row.release).path if data_kind == "sealed_view"
                    else self._synthetic_data(ws, row.release))
        inputs = [(i["path"], self.exports.store.get(i["sha256"])) for i in row.inputs]
        return RunRequest(
            run_id=f"{row.id}-{'pre' if data_kind == 'synthetic_release' else 'run'}", user=row.requester,
            workspace=row.workspace, release=row.release, data_dir=data_dir, data_kind=data_kind,
            notebook=self.exports.store.get(row.notebook_sha256), limits=RunLimits(**row.limits),
            uid=sealed_run_uid(self.settings, slot), notebook_path=row.notebook_path, inputs=inputs,
            outputs=list(row.outputs), workspace_env=acro_environment(self.exports.policy(ws)))

    def _synthetic_data(self, ws, release: str):
        """The folder the workspace's sandboxes mount at ``/data/<release>``: what the pre-run reads."""
        return dict((name, folder) for folder, name in workspaces.data_mounts(self.settings, ws))[release]

    def _take(self, run_id: str, to: str, **detail) -> SealedRun:
        with self.exports._writing() as s:
            row = self._get(s, run_id, for_update=True)
            if to == workflow.RUNNING:
                row.started_at = now()
            self._step(s, row, to, workflow.RUNNER, "system", **detail)
            return row

    async def execute(self, run_id: str, slot: int) -> Outcome | None:
        """:meth:`_execute`, and if the runner itself fails (not the notebook: a bug, the host), the run
        ends all the same: refused while in its pre-run, or with its error for review."""
        try:
            return await self._execute(run_id, slot)
        except asyncio.CancelledError:
            raise  # the service is stopping: the next start recovers the run
        except Exception as exc:
            log.exception("sealed run %s: the runner failed", run_id)
            await asyncio.to_thread(self._runner_failed, run_id, exc)
            return None

    def _runner_failed(self, run_id: str, exc: Exception) -> None:
        with self.exports.db.snapshot() as s:
            row = self._get(s, run_id)
        if row.state == workflow.PRE_RUNNING:
            self._refuse(run_id, {"code": "sealed_run.runner_failed", "text": N_(
                "the run could not be started (%(error)s); nothing ran on the real data"),
                "params": {"error": type(exc).__name__}})
        elif row.state == workflow.RUNNING:
            outcome = Outcome(run_id, "failed", RunLimits(**row.limits), 0.0,
                              error=RunError("RunnerError", f"{type(exc).__name__}: {exc}"))
            self._end(run_id, outcome, _outcome_record(outcome))

    def _refuse(self, run_id: str, refusal: dict) -> None:
        with self.exports._writing() as s:
            r = self._get(s, run_id, for_update=True)
            r.refusal = refusal
            self._step(s, r, workflow.REFUSED, workflow.RUNNER, "system", refusal["code"])

    def _still_offered(self, row: SealedRun) -> dict | None:
        """Why a run taken from the queue cannot run any more (its release detached from the workspace,
        or its sealed view gone since it was submitted), as a refusal; None when it can."""
        from synthetic import sealed

        try:
            sealed.for_workspace(self.settings, row.workspace, row.release)
        except sealed.SealedViewError as exc:
            return {"code": exc.code, "text": exc.message.text, "params": dict(exc.message.params)}
        return None

    async def _execute(self, run_id: str, slot: int) -> Outcome | None:
        """Run ``run_id`` (taken by :meth:`start_next`) in runner slot ``slot``: the pre-run on the synthetic release, then,
        if it succeeded, the run on the sealed view. Returns the real run's outcome (None when the
        run was refused), once the slot may be given to another run: at the real run's start plus its
        time limit, so that when the next run starts does not tell how long this one took."""
        with self.exports.db.snapshot() as s:
            row = self._get(s, run_id)
        gone = await asyncio.to_thread(self._still_offered, row)
        if gone is not None:
            await asyncio.to_thread(self._refuse, run_id, gone)
            return None
        pre = await run(self.settings, self._request(row, slot, "synthetic_release"))
        if pre.state != "succeeded":
            error = pre.error
            refusal = ({"code": error.refusal.code, "text": error.refusal.text, "params": error.refusal.params}
                       if error is not None and error.refusal is not None else
                       {"code": "sealed_run.pre_run_failed", "text": N_(
                           "the notebook did not succeed on the synthetic release (%(state)s: %(error)s): it was not"
                           " run on the real data"),
                        "params": {"state": pre.state, "error": f"{error.type}: {error.message}" if error else ""}})
            await asyncio.to_thread(self._refuse, run_id, refusal)
            return None
        row = await asyncio.to_thread(self._take, run_id, workflow.RUNNING)
        started = time.monotonic()
        outcome = await run(self.settings, self._request(row, slot, "sealed_view"))
        summary = _outcome_record(outcome)
        await asyncio.to_thread(self._end, run_id, outcome, summary)
        await asyncio.sleep(max(0.0, row.limits["seconds"] - (time.monotonic() - started)))
        return outcome

    def _end(self, run_id: str, outcome: Outcome, summary: dict) -> None:
        """End the run: its results (or its error) become an export request for the reviewers the
        data holder appointed, hidden from the operator until they decide it; in one transaction."""
        with self.exports.db.snapshot() as s:
            row = self._get(s, run_id)
        policy = self.policy(row.workspace)
        provenance = {"sealed_run": run_id, **(summary["provenance"] or {}), "limits": row.limits,
                      "duration_seconds": summary["duration_seconds"], "state": outcome.state,
                      **_source_versions(self.settings, row.release)}
        names = result_names(row.notebook_path, list(row.outputs))
        uploads = []
        if outcome.executed_notebook:
            uploads.append(Upload(names[row.notebook_path], outcome.executed_notebook, provenance=provenance))
        uploads += [Upload(names[path], data, provenance=provenance) for path, data in outcome.outputs.items() if data]
        if outcome.state != "succeeded":
            error = outcome.error or RunError("Error", outcome.state)
            uploads += [Upload("error-type.txt", f"{error.type}\n".encode(), provenance=provenance),
                        Upload("error.txt", f"{error.type}: {error.message}\n".encode(), provenance=provenance)]
        if outcome.log.strip():
            uploads.append(Upload("run-log.txt", outcome.log.encode(), provenance=provenance))
        title = f"Sealed run of {row.notebook_path} on {row.release}"
        context = _context(row, outcome, summary)

        def ended(s, request_id: str) -> None:
            r = self._get(s, run_id, for_update=True)
            r.outcome, r.export_request_id = summary, request_id
            self._step(s, r, workflow.ENDED, workflow.RUNNER, "system", request_id=request_id,
                       outcome={"state": outcome.state, "sha256": summary["sha256"]})

        ws = self.exports.workspace(row.workspace)
        try:
            self.exports._create(ws, row.requester, "system", title, context, uploads, origin=SEALED_RUN,
                                 appointed=tuple(policy["reviewers"]), made_in=ended)
        except ExportError as exc:  # a result the review service does not take (over its cap, an archive)
            log.warning("sealed run %s: its results were refused for review (%s); its error goes instead", run_id, exc)
            refused = [Upload("error-type.txt", b"ResultsRefused\n", provenance=provenance),
                       Upload("error.txt", f"ResultsRefused: {exc}\n".encode(), provenance=provenance)]
            self.exports._create(ws, row.requester, "system", title, context, refused, origin=SEALED_RUN,
                                 appointed=tuple(policy["reviewers"]), made_in=ended)


RESERVED_NAMES = ("error-type.txt", "error.txt", "run-log.txt")


def result_names(notebook_path: str, outputs: list[str]) -> dict[str, str]:
    """The file name each result will have in its export request (path → name): the executed
    notebook's and each output's own name, which must be exportable and distinct, and none of the
    names a failed run's error takes. Checked at submission, so that no run is spent on results
    that could not be reviewed."""
    from pathlib import PurePosixPath

    from ..exports import files

    names: dict[str, str] = {}
    for path in [notebook_path, *outputs]:
        name = PurePosixPath(str(path)).name
        try:
            files.check_name(name)
        except files.FileRejected as exc:
            raise BadInput.from_refusal(exc) from None
        if name in RESERVED_NAMES or name in names.values():
            raise BadInput("sealed_run.result_name_taken", N_(
                "%(path)s: its results are reviewed by file name, and %(file)s is taken (by another output, the"
                " notebook, or a failed run's %(reserved)s)"), path=path, file=name, reserved=", ".join(RESERVED_NAMES))
        names[str(path)] = name
    return names


def _source_versions(settings, release: str) -> dict:
    """The source behind the release and the versions (SHA-256) of its raw files the sealed view was
    made from: provenance for reviewers (the files' paths stay on the holder's side)."""
    from synthetic import sealed

    try:
        manifest = sealed.read_manifest(settings.holder_dir, release)
    except sealed.SealedViewError:
        return {}
    return {"source": manifest["source"],
            "source_files": {table: f["sha256"] for table, f in manifest["source_files"].items()}}


def _context(row: SealedRun, outcome: Outcome, summary: dict) -> str:
    """What reviewers read first: how the run went, what it was given and what it was not able to give."""
    lines = [f"Sealed run {row.id}: {row.requester}'s notebook {row.notebook_path} (SHA-256 {row.notebook_sha256})"
             f" on the sealed view of {row.release}.",
             f"Outcome: {outcome.state}" + (f" ({outcome.error.type}: {outcome.error.message})" if outcome.error else "")
             + f", after {summary['duration_seconds']} s of at most {row.limits['seconds']} s.",
             "Inputs: " + (", ".join(f"{i['path']} ({i['sha256'][:12]})" for i in row.inputs) or "none") + ".",
             "Outputs asked for: " + (", ".join(row.outputs) or "none") + "."]
    if outcome.withheld:
        lines.append("Not collected: " + ", ".join(f"{p} ({why})" for p, why in outcome.withheld.items()) + ".")
    lines.append("The operator sees nothing of this request (not even that the run failed) until it is decided;"
                 " for a failed run, approve error-type.txt alone to tell them only the exception's type.")
    return "\n".join(lines)


def _outcome_record(outcome: Outcome) -> dict:
    """What is kept of a real run's outcome for reviewers: its state, error, log, withheld outputs,
    provenance and the hashes of the executed notebook and outputs (their bytes are in the store)."""
    produced = {name: hashlib.sha256(data).hexdigest() for name, data in outcome.outputs.items()}
    notebook = hashlib.sha256(outcome.executed_notebook).hexdigest() if outcome.executed_notebook else None
    digest = hashlib.sha256(json.dumps({"notebook": notebook, "outputs": produced}, sort_keys=True).encode()).hexdigest()
    return {
        "state": outcome.state, "duration_seconds": round(outcome.duration_seconds, 3),
        "error": {"type": outcome.error.type, "message": outcome.error.message} if outcome.error else None,
        "withheld": outcome.withheld, "log": outcome.log,
        "executed_notebook_sha256": notebook, "outputs": produced, "sha256": digest,
        "provenance": asdict(outcome.provenance) if outcome.provenance else None,
        "ended_at": datetime.now().astimezone().isoformat(),
    }


async def run_queue(runs: SealedRuns, slots: int, poll_seconds: float = 2.0) -> None:
    """Run queued runs, at most ``slots`` at once, until cancelled (the service stopping). Each run
    is taken once (:meth:`SealedRuns.start_next`) into a free slot, whose uid it runs as."""
    free = set(range(slots))
    running: set[asyncio.Task] = set()

    async def one(run_id: str, slot: int) -> None:
        try:
            await runs.execute(run_id, slot)
        finally:
            free.add(slot)

    try:
        while True:
            while free:
                try:
                    run_id = await asyncio.to_thread(runs.start_next)
                except ExportError as exc:  # the audit log or the database not answering: try again later
                    log.warning("the sealed-run queue could not take a run: %s", exc)
                    break
                if run_id is None:
                    break
                slot = min(free)
                free.discard(slot)
                task = asyncio.create_task(one(run_id, slot))
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.sleep(poll_seconds)
    finally:
        for task in list(running):
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
