"""What the audit log records, as data: the sources that hand records over, the outcomes, and
every action with the detail keys it carries.

The writer refuses a record whose action is not in :data:`ACTIONS`, whose detail lacks a required
key or carries one the action does not list, or whose workspace/sandbox does not fit the action's
``where``. ``docs/audit.md`` is generated from these tables (``enclave audit actions-doc``), so the
page auditors read is the rule the writer applies. To record something new, add it here.
"""

from __future__ import annotations

from dataclasses import dataclass

# The component that handed a record to the audit service.
SOURCES: dict[str, str] = {
    "hub": "JupyterHub and its authenticator, spawner and API handlers",
    "cli": "the `enclave` command, run by an administrator or the data holder on the hub side",
    "exports": "the export review service",
    "sandbox": "a per-sandbox receiver: what a workspace's server reports, stamped hub-side",
}

OUTCOMES: dict[str, str] = {
    "ok": "done as asked",
    "denied": "refused by a rule (permissions, login throttling, a policy)",
    "failed": "attempted, but an error stopped it",
}

# Where an action happens, which decides whether `workspace` and `sandbox` are required.
WHERE: dict[str, str] = {
    "hub": "no workspace: `workspace` and `sandbox` are null",
    "workspace": "`workspace` is required; `sandbox` is null",
    "sandbox": "`workspace` and `sandbox` are both required",
}

# Every detail key any action uses, with what it means. Actions list keys by these names.
DETAIL_KEYS: dict[str, str] = {
    "method": "how: `native` or `oidc` for logins; `masked` or `synthetic` for data releases",
    "remote_ip": "the client's address, as the proxy saw it (the last hop of `X-Forwarded-For`)",
    "reason": "why, in the words of whoever acted (or the rule that refused)",
    "failures": "failed logins for the account: from this client in a row (for a throttle of scope `account`:"
                " from all clients in the past hour; when cleared: how many were forgotten)",
    "scope": "what a login throttle follows: `client` (one client's failures for the account) or `account`"
             " (the account's failures from all clients in the past hour reached the ceiling)",
    "throttled_until": "until when a throttled client's logins are refused without checking the password"
                       " (ISO 8601, UTC)",
    "delay_seconds": "how long a throttled client waits; it doubles with each further failure, up to a cap",
    "client": "a client address whose failed logins for an account are counted (absent: every client)",
    "user": "the account acted upon (for a denied login, the name typed)",
    "roles": "roles of an account, or the member's role in a workspace (list of names)",
    "role": "a workspace role: `operator`, `reviewer` or `owner`",
    "expires_at": "when an account or workspace expires (ISO 8601, UTC; null: never)",
    "language": "the language a person reads Enclave in: `zh_CN` (Simplified Chinese) or `en` (English)",
    "memberships": "an account's workspace memberships, as `workspace:role`",
    "source": "a data holder's source: the name its releases carry before `@`",
    "purpose": "a workspace's purpose: its approved scenario of use",
    "allowed": "whether one account may be both operator and reviewer of the workspace (true or false)",
    "homes": "the operators whose homes in the workspace were deleted",
    "archived_at": "when the workspace was archived (ISO 8601, UTC)",
    "release": "a data release, `NAME@VERSION`",
    "run_id": "a sealed run's id",
    "notebook_sha256": "the SHA-256 of a sealed run's notebook, frozen when it was submitted",
    "inputs": "the files of the home a sealed run was given: `[{path, sha256, size}]`",
    "outputs": "the paths in a sealed run's home to keep when it ends",
    "step": "a sealed run's step (`enclave.sealed.workflow.TRANSITIONS`): approve, refuse, withdraw, start, run, end",
    "state": "the state a sealed run is in after the step",
    "outcome": "how a sealed run on the real data ended (succeeded, failed, timed_out, refused: for reviewers"
               " and auditors, never shown to the operator) and the SHA-256 of what it produced",
    "approval_required": "whether a workspace's sealed runs wait for its data holder's approval",
    "runs_per_day": "the sealed runs an operator may submit in a workspace in 24 hours",
    "reviewers": "the people a data holder appointed to review a workspace's sealed-run results",
    "columns": "the columns made visible, by table (`{table: [column, …]}`; absent means all)",
    "content_hash": "SHA-256 over a release's (or view's) files",
    "limits": "resource limits (object: memory_mb, pids, cpus, max_file_mb)",
    "guard": "guard settings of a workspace (object)",
    "before": "the value before the change",
    "version": "the version of a workspace's export policy after the change (requests record the version"
               " they were made under)",
    "policy": "for a sandbox, the sandbox policy that was applied (object: the server's argv, identity, limits,"
              " network and mounts, and `data`: what its kernels and terminals see read-only under /data); for a"
              " workspace's export policy, its overrides of [exports] (object)",
    "server": "the JupyterHub named server",
    "idle_seconds": "how long the sandbox had been idle",
    "kernel": "kernel id",
    "notebook": "notebook path, relative to the home",
    "cell": "cell id in the notebook",
    "msg_id": "the execute request's message id (an export's provenance names executions by it)",
    "code": "the code text, at most 60,000 characters (see `code_truncated`)",
    "code_sha256": "SHA-256 of the whole code text (UTF-8)",
    "code_truncated": "true when `code` holds only the start of a longer text",
    "terminal": "terminal id",
    "text": "one line of terminal input, at most 60,000 characters",
    "path": "a path relative to the home",
    "new_path": "the path after a rename",
    "size": "bytes",
    "sha256": "SHA-256 of a file's bytes",
    "channel": "the egress channel a budget counts: `kernel_output` (an execution's), `kernel_connection`"
               " (output tied to no request), `terminal_output` (a command's), `contents_read` (a file,"
               " notebook or listing read through the contents API, or an answer of the guard's own"
               " export API)",
    "used": "bytes used of the budget",
    "budget": "the budget, in bytes",
    "window": "the rolling window of an operator's egress budget in a workspace: `hour` or `day`",
    "request_id": "an export request",
    "title": "an export request's title",
    "justification": "an export request's justification, in the requester's words: what the outputs are and how"
                     " disclosure was controlled (at most 20,000 characters)",
    "files": "files of an export request (list of objects: name, sha256, size)",
    "file": "one file's name",
    "status": "a check's result: `pass`, `review` or `fail`",
    "checks": "the automated checks' findings (list of objects: check, status, reason; the worst first,"
              " at most 20, reasons cut at 200 characters)",
    "decision": "a reviewer's vote (`approve`, `request_changes`, `reject`), or the state a request was"
                " moved to",
    "release_id": "a released file's id",
    "gates": "a data release's privacy and utility gates (list of objects: gate, table, value, threshold,"
             " passed; without their details, which may hold figures of the real data)",
    "seed": "the synthesis seed of a synthetic release's attempt (each attempt, refused or published, is"
            " recorded: re-rolling the seed until the gates pass shows)",
    "change": "what registering a data holder's source recorded: `registered` (a new source), `new_cut`"
              " (another contract file of it) or `new_file_version` (a table's file with new content)",
    "packages": "Python packages, pinned (`NAME==VERSION`, …)",
}


@dataclass(frozen=True)
class Action:
    records: str
    where: str
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()

    @property
    def keys(self) -> tuple[str, ...]:
        return self.required + self.optional


ACTIONS: dict[str, Action] = {
    # Logins (hub).
    "auth.login": Action("a login attempt; `denied` for a wrong password, an unknown account, a throttled"
                         " client, or a refusal by policy (the actor is the account, or `anonymous` when there"
                         " is none)",
                         "hub", ("method",), ("remote_ip", "reason", "failures", "user")),
    "auth.throttle": Action("a client's logins for an account refused for a while after failed logins:"
                            " after too many in a row from that client (scope `client`, the client waits"
                            " `delay_seconds`), or when the account's failures from all clients in the past"
                            " hour reach the ceiling (scope `account`: every client that has failed waits;"
                            " those that have not still log in)", "hub",
                            ("user", "scope", "failures", "throttled_until"), ("remote_ip", "delay_seconds")),
    "auth.logout": Action("a logout", "hub", (), ("remote_ip",)),
    # Accounts and roles (CLI, hub API).
    "account.create": Action("an account created with its roles (and its expiry, if it has one)", "hub",
                             ("user", "roles"), ("expires_at",)),
    "account.password_set": Action("a password set by an admin (this also clears the account's login"
                                   " throttles)", "hub", ("user",)),
    "account.throttle_cleared": Action("an account's failed logins forgotten by an admin, those of one client or"
                                       " of all: their throttles end", "hub", ("user", "failures"), ("client",)),
    "account.roles_set": Action("an account's roles changed", "hub", ("user", "roles"), ("before",)),
    "account.disable": Action("an account disabled: its logins refused, its sandboxes stopped, its sessions"
                              " ended and its tokens revoked", "hub", ("user", "reason")),
    "account.enable": Action("a disabled account enabled again", "hub", ("user",)),
    "account.expiry_set": Action("an account's expiry set (`expires_at` null: it never expires)", "hub",
                                 ("user", "expires_at"), ("before",)),
    "account.remove": Action("an account removed, with its workspace memberships", "hub", ("user", "roles"),
                             ("memberships",)),
    "account.expire": Action("an account past its expiry: its sandboxes stopped, its sessions ended and its"
                             " tokens revoked (by the provisioning service)", "hub", ("user", "expires_at")),
    "account.language_set": Action("the language a person reads Enclave in (`zh_CN` or `en`), chosen on the hub's"
                                   " home page or set by an admin; also for users of an identity provider",
                                   "hub", ("user", "language")),
    # Sources and their data holders.
    "source.holder_set": Action("a source registered as a data holder's, or handed to another holder", "hub",
                                ("source", "user"), ("before",)),
    # The operators' environment.
    "environment.package_add": Action("packages added to the operators' environment by an admin"
                                      " (`enclave environment add`)", "hub", ("packages",), ("reason",)),
    # Workspaces, memberships, attachments, limits and guard settings.
    "workspace.create": Action("a workspace created, with its purpose, data holder (`user`) and expiry", "workspace",
                               (), ("purpose", "user", "expires_at")),
    "workspace.purpose_set": Action("the workspace's purpose (its approved scenario of use) changed", "workspace",
                                    ("purpose",), ("before",)),
    "workspace.holder_set": Action("the workspace's data holder (`user`) set", "workspace", ("user",), ("before",)),
    "workspace.expiry_set": Action("the workspace's expiry set (`expires_at` null: it never expires)", "workspace",
                                   ("expires_at",), ("before",)),
    "workspace.separation_set": Action("whether one account may be both operator and reviewer of the workspace",
                                       "workspace", ("allowed",)),
    "workspace.freeze": Action("the workspace frozen: its sandboxes stopped, none started, no export requests;"
                               " by an admin, or at its expiry by `system` (the hub's lifecycle)", "workspace", ("before",), ("reason", "expires_at")),
    "workspace.unfreeze": Action("the workspace active again", "workspace", ("before",)),
    "workspace.archive": Action("the workspace archived for good: homes kept read-only for the retention period",
                                "workspace", ("before", "reason")),
    "workspace.homes_delete": Action("an archived workspace's homes deleted at the end of the retention period",
                                     "workspace", ("homes",), ("archived_at",)),
    "workspace.member_add": Action("a member given a role in the workspace", "workspace", ("user", "role")),
    "workspace.member_remove": Action("a member's role in the workspace removed", "workspace", ("user", "role")),
    "workspace.attach_request": Action("a release (or some of its columns) asked for, awaiting the consent of its"
                                       " data holder (`user`)", "workspace", ("release", "user"), ("columns", "reason")),
    "workspace.attach_refuse": Action("a release asked for refused by its data holder (`user`)", "workspace",
                                      ("release", "user", "reason")),
    "workspace.attach": Action("a release (or some of its columns) attached with its data holder's (`user`)"
                               " consent: visible read-only under /data", "workspace", ("release",),
                               ("columns", "content_hash", "reason", "user")),
    "workspace.detach": Action("a release detached from the workspace", "workspace", ("release",), ("reason",)),
    "workspace.limits_set": Action("the workspace's sandbox limits changed", "workspace", ("limits",), ("before",)),
    "workspace.guard_set": Action("the workspace's guard settings changed", "workspace", ("guard",), ("before",)),
    "workspace.export_policy_set": Action("the workspace's export policy changed (approvals, check thresholds,"
                                          " caps over [exports])", "workspace", ("policy", "version"), ("before",)),
    # Sandboxes.
    "sandbox.start": Action("a sandbox started, with the policy applied", "sandbox", ("policy",), ("server",)),
    "sandbox.stop": Action("a sandbox stopped: by its operator, an admin, or `system` (the hub's lifecycle: its"
                           " workspace frozen or archived, its operator removed, disabled or expired)", "sandbox",
                           (), ("reason", "server")),
    "sandbox.cull": Action("an idle sandbox stopped by the culler", "sandbox", (), ("idle_seconds", "server")),
    # Inside a sandbox, reported by its server and stamped by the hub-side receiver.
    "kernel.execute": Action("code sent to a kernel", "sandbox", ("kernel", "code", "code_sha256"),
                             ("notebook", "cell", "code_truncated", "msg_id")),
    "terminal.input": Action("a line typed in a terminal", "sandbox", ("terminal", "text"), ("code_truncated",)),
    "contents.read": Action("a file read through the contents API; `denied` when it is over one read's budget"
                            " (what one execution may show), with the refusal's `code`", "sandbox", ("path",),
                            ("size", "sha256", "reason", "code")),
    "contents.save": Action("a file saved through the contents API", "sandbox", ("path",), ("size", "sha256")),
    "contents.rename": Action("a file renamed through the contents API", "sandbox", ("path", "new_path")),
    "contents.delete": Action("a file deleted through the contents API", "sandbox", ("path",)),
    "egress.notice": Action("an egress budget notice: output held back or cut by an execution's budget; or,"
                            " with `window`, the operator's egress budget 80 % used in that window (recorded by"
                            " the hub-side receiver, once per window's length)", "sandbox",
                            ("channel", "used", "budget"), ("reason", "kernel", "notebook", "terminal", "window")),
    "egress.held": Action("the operator's egress budget in the workspace spent in `window`: further output is held"
                          " back in the sandbox and reads are refused, until older output leaves the window"
                          " (recorded by the hub-side receiver, once per window's length)", "sandbox",
                          ("channel", "used", "budget", "window")),
    # Export review (the review service).
    "export.request": Action("an export request submitted", "workspace", ("request_id", "files"),
                             ("title", "justification")),
    "export.check": Action("the automated checks' result for one file", "workspace",
                           ("request_id", "file", "status"), ("sha256", "checks")),
    "export.vote": Action("a reviewer's vote on one file (`sha256`: the version voted on)", "workspace",
                          ("request_id", "file", "decision", "reason"), ("sha256",)),
    "export.decision": Action("a request's decision (approved, rejected, returned, withdrawn; submitted when"
                              " the requester resubmits it after changes)", "workspace",
                              ("request_id", "decision"), ("reason",)),
    "export.release": Action("a file released with its signed manifest", "workspace",
                             ("request_id", "file", "sha256", "release_id")),
    "export.download": Action("a released file downloaded", "workspace", ("request_id", "release_id"),
                              ("file", "sha256")),
    "export.revoke": Action("a release revoked", "workspace", ("request_id", "release_id", "reason")),
    # Sealed runs (run by the review service, enclave.sealed).
    "sealed_run.policy": Action("a workspace's sealed-run policy set by its data holder", "workspace",
                                ("approval_required", "runs_per_day", "reviewers", "limits", "version")),
    "sealed_run.submit": Action("a sealed run of an operator's notebook on the real data submitted", "workspace",
                                ("run_id", "release", "notebook_sha256", "inputs", "outputs", "state")),
    "sealed_run.step": Action("a sealed run's step (approved, refused, withdrawn, started, run, ended)",
                              "workspace", ("run_id", "step", "state"), ("reason", "outcome", "request_id")),
    # Data releases (the data holder's side, through the CLI).
    "data.source_registered": Action("a data holder's raw source registered, or a new cut or file version of it"
                                     " recorded (on the holder's side; the raw data stays there)", "hub",
                                     ("source", "change"), ("sha256",)),
    "data.release_unlinked": Action("a published release without lineage accepted as not combined with later"
                                    " releases of its source (the data holder's reason)", "hub",
                                    ("release", "reason")),
    "data.release_published": Action("a release published: every gate passed", "hub",
                                     ("release", "method", "content_hash", "gates"), ("seed",)),
    "data.sealed_view_built": Action("a synthetic release's sealed view built on the holder's side (the real rows"
                                     " it was generated from, for sealed runs; never mounted into a workspace's"
                                     " sandbox)", "hub", ("release", "source", "content_hash")),
    "data.release_refused": Action("a release refused: a gate failed, synthesis did not finish, or the contract"
                                   " did not hold", "hub", ("release", "method", "reason"), ("gates", "seed")),
}


def actions_matching(pattern: str) -> list[str]:
    """Action names for a query: an exact name, or a prefix ending in ``.*`` (``export.*``)."""
    if pattern.endswith(".*"):
        prefix = pattern[:-1]
        return [name for name in ACTIONS if name.startswith(prefix)]
    return [pattern] if pattern in ACTIONS else []
