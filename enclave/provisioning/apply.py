"""``enclave apply FILE.yaml`` (``POST /apply`` of the provisioning service, which runs it):
accounts, sources and workspaces declared in one file, made so.

The file says what should be; :func:`apply` works out what differs from what is (the *plan*) and
makes each difference through the one service layer (:mod:`enclave.accounts`,
:mod:`enclave.sources`, :mod:`enclave.workspaces`), every call joining one database transaction, so
that the whole file is applied or none of it. Each change leaves the audit record the CLI's would,
handed to the audit log as the last step before the commit: a record the log does not take leaves
nothing changed.

Nothing in the file is applied until the whole file is checked: a malformed or contradictory file
is refused with every problem named as ``FILE:LINE: key: problem``. The keys the file may hold are
in :data:`SCHEMA`, from which ``docs/provisioning.md`` lists them (``enclave apply-doc``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import yaml
from pydantic import ValidationError

from .. import accounts, db, sources, supply, workspaces
from ..i18n import N_, Message
from ..rbac import ACCOUNT_ROLES, WORKSPACE_ROLES
from ..releases import ReleaseError, release_dir
from ..settings import REPO_ROOT, ExportSettings, LimitSettings, Settings

# ---------------------------------------------------------------------------------------------
# The file's keys: the parser checks against these, and docs/provisioning.md lists them.


@dataclass(frozen=True)
class Key:
    name: str
    type: str  # as the documentation names it
    meaning: str


ACCOUNT_STATES = ("active", "disabled")
WORKSPACE_STATES = ("active", "frozen", "archived")
MOMENT = "date or time, or null"

SCHEMA: dict[str, tuple[Key, ...]] = {
    "top level": (
        Key("accounts", "mapping: account name → account", "Accounts, by name."),
        Key("sources", "mapping: source name → source", "Sources (the part of a release's name before `@`) and their data holders."),
        Key("workspaces", "mapping: workspace name → workspace", "Workspaces, by name."),
        Key("prune", "mapping", "What the file declares completely, so that what it does not list is removed (below). Without it, nothing is removed."),
    ),
    "prune": (
        Key("accounts", "true or false", "Remove every account the file does not list (with its memberships). Refused for the last usable admin, a source's holder and a workspace's holder."),
        Key("members", "true or false", "In each workspace of the file that has `members:`, remove the roles of members it does not list."),
        Key("releases", "true or false", "In each workspace of the file that has `releases:`, detach the releases it does not list (attached or awaiting consent)."),
    ),
    "account": (
        Key("roles", f"list of: {', '.join(ACCOUNT_ROLES)}", "The account's roles, exactly (roles not listed are taken away). Required for a new account."),
        Key("state", " or ".join(ACCOUNT_STATES), "A disabled account cannot log in; its sandboxes are stopped and its tokens revoked."),
        Key("state_reason", "text", "Why the account is disabled: required with `state: disabled`, not allowed otherwise."),
        Key("expires_at", MOMENT, "From this moment the account is treated as disabled; null: it never expires."),
    ),
    "source": (
        Key("holder", "account name", "The data holder (an account with the `holder` role) who owns the source's releases and consents to their use."),
    ),
    "workspace": (
        Key("purpose", "text", "The approved scenario of use (应用场景), shown to the data holder with every request for a release. Required before a release can be asked for."),
        Key("holder", "account name", "The data holder whose sources the workspace uses (an account with the `holder` role)."),
        Key("state", " or ".join(WORKSPACE_STATES), "A frozen workspace starts no sandbox and takes no export request; archived is final."),
        Key("state_reason", "text", "Why the workspace is frozen or archived: required with those states, not allowed with `active`."),
        Key("expires_at", MOMENT, "At this moment the workspace is frozen; null: it never expires."),
        Key("operators_may_review", "true or false", "Whether one account may be both an operator and a reviewer of the workspace (never of its own requests). Default false."),
        Key("members", "mapping: role → list of account names", f"Members by workspace role ({', '.join(WORKSPACE_ROLES)})."),
        Key("releases", "mapping: release → release request", "Releases asked for: each awaits the consent of its source's data holder before it is mounted."),
        Key("limits", "mapping", f"Sandbox limits of the workspace ({', '.join(LimitSettings.model_fields)}); keys not given keep their value."),
        Key("guard", "mapping", "Guard settings of the workspace's servers (as `enclave workspace set-guard`); keys not given keep their value."),
        Key("export_policy", "mapping", f"Overrides of `[exports]` for the workspace's export requests ({', '.join(workspaces.EXPORT_POLICY_KEYS)}); keys not given keep their value. Each change makes a new policy version."),
    ),
    "members": tuple(Key(role, "list of account names", meaning) for role, meaning in (
        ("operator", "Work in the workspace's sandboxes (the account needs the `operator` role)."),
        ("reviewer", "Decide on the workspace's export requests (the account needs the `reviewer` role)."),
        ("owner", "Answer for the workspace (any active account)."),
    )),
    "release": (
        Key("columns", "list of column names, or null", "Only these columns (`column` in every table that has it, or `table.column`): a column view. Null or absent: the whole release."),
        Key("reason", "text", "Why the workspace needs this data, shown to the data holder and kept in the data supply manifest."),
    ),
}

# ---------------------------------------------------------------------------------------------
# Problems


@dataclass(frozen=True, order=True)
class Problem:
    line: int
    key: str
    problem: str

    def format(self, file: str) -> str:
        return f"{file}:{self.line}: {self.key or '(file)'}: {self.problem}"


class ApplyError(Exception):
    """The file is refused (nothing was applied); every problem found is named. ``str()`` is the
    problems, a ``FILE:LINE: key: problem`` line each; ``message`` is the whole refusal, under the
    code ``apply.refused``: a heading (translated where it is shown) above those lines (in English)."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = sorted(set(problems))
        super().__init__("\n".join(p.format(file) for p in self.problems))
        self.message = Message("apply.refused", N_(
            "%(file)s is refused; nothing was applied (%(count)s problem(s)):\n%(problems)s"),
            {"file": file, "count": len(self.problems), "problems": str(self)})


Path_ = tuple  # a key's place in the file: ("workspaces", "census", "members", "operator")


def _dotted(path: Path_) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path).replace(".[", "[")


class _Problems:
    """Problems as they are found, each at the line of the key it is about."""

    def __init__(self, lines: dict[Path_, int]) -> None:
        self.lines = lines
        self.found: list[Problem] = []

    def line(self, path: Path_) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def add(self, path: Path_, problem: str) -> None:
        self.found.append(Problem(self.line(path), _dotted(path), problem))


# ---------------------------------------------------------------------------------------------
# Reading the file: YAML nodes to plain values, with the line of every key and item.


def _load_yaml(text: str, problems: _Problems) -> Any:
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow anywhere (a control character)
        problems.found.append(Problem(text.count("\n", 0, exc.position) + 1, "YAML syntax",
                                      f"unacceptable character #x{exc.character:04x}: {exc.reason}"))
        return None
    try:
        node = loader.get_single_node()
        if node is None:
            return {}
        return _value(loader, node, (), problems)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problems.found.append(Problem(mark.line + 1 if mark else 1, "YAML syntax", str(exc.problem or exc.context)))
        return None
    except yaml.YAMLError as exc:
        problems.found.append(Problem(1, "YAML syntax", str(exc)))
        return None
    finally:
        loader.dispose()


def _value(loader: yaml.SafeLoader, node: yaml.Node, path: Path_, problems: _Problems) -> Any:
    problems.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problems.found.append(Problem(key_node.start_mark.line + 1, _dotted(path), "a key must be a plain name"))
                continue
            key = key_node.value  # as written: '1', 'yes' and '2027-01-01' stay names
            if key == "<<":
                problems.found.append(Problem(key_node.start_mark.line + 1, _dotted(path + (key,)),
                                              "merge keys are not supported: write the keys out, or give a whole"
                                              " value by an alias (limits: *standard)"))
                continue
            if key in out:
                problems.found.append(Problem(key_node.start_mark.line + 1, _dotted(path + (key,)),
                                              f"given twice (first on line {problems.lines[path + (key,)]})"))
                continue
            problems.lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _value(loader, value_node, path + (key,), problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_value(loader, item, path + (i,), problems) for i, item in enumerate(node.value)]
    try:
        return loader.construct_object(node, deep=True)
    except (ValueError, yaml.constructor.ConstructorError) as exc:  # 2027-02-30 looks like a date and is none
        problems.found.append(Problem(node.start_mark.line + 1, _dotted(path), f"'{node.value}' cannot be read: {exc}"))
        return MISSING


# ---------------------------------------------------------------------------------------------
# The declaration: the file's values, checked for shape and normalised.

MISSING = object()


@dataclass
class Declaration:
    file: str
    accounts: dict[str, dict] = field(default_factory=dict)
    sources: dict[str, dict] = field(default_factory=dict)
    workspaces: dict[str, dict] = field(default_factory=dict)
    prune: dict[str, bool] = field(default_factory=lambda: {"accounts": False, "members": False, "releases": False})
    lines: dict[Path_, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line(self, *path) -> int:
        return _Problems(self.lines).line(tuple(path))


def _text(value, path, problems, *, allow_empty: bool = True) -> str | object:
    if value is MISSING:  # unreadable, and said so already
        return MISSING
    if not isinstance(value, str):
        problems.add(path, f"must be text (got {_kind(value)}); quote it if it only looks like something else")
        return MISSING
    if not allow_empty and not value.strip():
        problems.add(path, "must not be empty")
        return MISSING
    return value.strip()


def _kind(value) -> str:
    if value is None:
        return "nothing"
    return {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list", dict: "a mapping",
            date: "a date", datetime: "a time"}.get(type(value), type(value).__name__)


def _moment(value, path, problems) -> datetime | None | object:
    """A date means 00:00 UTC that day (as ``enclave user set-expiry``); a time without a zone, UTC."""
    if value is MISSING:  # unreadable, and said so already
        return MISSING
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            problems.add(path, f"'{value}' is not a date: give YYYY-MM-DD or an ISO 8601 time"
                               " (2027-06-30, 2027-06-30T08:00:00+08:00), or null")
            return MISSING
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    problems.add(path, f"must be a date or time, or null (got {_kind(value)})")
    return MISSING


def _mapping(value, path, problems, what: str) -> dict:
    if value is None or value is MISSING:
        return {}
    if not isinstance(value, dict):
        problems.add(path, f"must be a mapping of {what} (got {_kind(value)})")
        return {}
    return value


def _known_keys(value: dict, path, problems, section: str) -> None:
    known = [k.name for k in SCHEMA[section]]
    for key in value:
        if key not in known:
            where = "at the top level" if section == "top level" else f"in {section}"
            problems.add(path + (key,), f"unknown key (keys {where}: {', '.join(known)})")


def _names(value, path, problems, choices: tuple[str, ...] | None = None) -> list[str] | object:
    if value is MISSING:  # unreadable, and said so already
        return MISSING
    if not isinstance(value, list):
        problems.add(path, f"must be a list (got {_kind(value)})")
        return MISSING
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            problems.add(path + (i,), f"must be a name (got {_kind(item)})")
        elif choices is not None and item not in choices:
            problems.add(path + (i,), f"unknown role '{item}' (one of: {', '.join(choices)})")
        elif item in out:
            problems.add(path + (i,), f"'{item}' is listed twice")
        else:
            out.append(item)
    return out


def parse(text: str, file: str = "FILE") -> Declaration:
    """The file's declaration, its shape checked (without the database): the problems found are in
    ``problems``, for :func:`make_plan` to name with its own. A file that is not YAML is refused here."""
    decl = Declaration(file)
    problems = _Problems(decl.lines)
    data = _load_yaml(text, problems)
    if data is None and problems.found:
        raise ApplyError(file, problems.found)
    top = _mapping(data, (), problems, "sections")
    _known_keys(top, (), problems, "top level")

    prune = _mapping(top.get("prune"), ("prune",), problems, "true/false switches")
    _known_keys(prune, ("prune",), problems, "prune")
    for key, value in prune.items():
        if key in decl.prune:
            if isinstance(value, bool):
                decl.prune[key] = value
            else:
                problems.add(("prune", key), f"must be true or false (got {_kind(value)})")

    for name, value in _mapping(top.get("accounts"), ("accounts",), problems, "account names to accounts").items():
        decl.accounts[name] = _account(name, value, ("accounts", name), problems)
    for name, value in _mapping(top.get("sources"), ("sources",), problems, "source names to sources").items():
        decl.sources[name] = _source(name, value, ("sources", name), problems)
    for name, value in _mapping(top.get("workspaces"), ("workspaces",), problems, "workspace names to workspaces").items():
        decl.workspaces[name] = _workspace(name, value, ("workspaces", name), problems)
    decl.problems = problems.found
    return decl


def _account(name: str, value, path, problems) -> dict:
    if not db.USERNAME.match(name):
        problems.add(path, "not an account name: 1-32 lower-case letters, digits, '_' or '-', starting with a letter")
    elif name in accounts.RESERVED_NAMES:
        problems.add(path, f"the name is reserved: {accounts.RESERVED_NAMES[name]}")
    value = _mapping(value, path, problems, "account keys")
    _known_keys(value, path, problems, "account")
    out: dict[str, Any] = {}
    if "roles" in value:
        roles = _names(value["roles"], path + ("roles",), problems, ACCOUNT_ROLES)
        if roles is not MISSING:
            if not roles:
                problems.add(path + ("roles",), "an account needs at least one role")
            out["roles"] = sorted(roles)
    _state(value, path, problems, out, ACCOUNT_STATES, "disabled")
    if "expires_at" in value:
        out["expires_at"] = _moment(value["expires_at"], path + ("expires_at",), problems)
    return {k: v for k, v in out.items() if v is not MISSING}


def _state(value: dict, path, problems, out: dict, states: tuple[str, ...], *stopped: str) -> None:
    if "state" in value:
        if value["state"] not in states:
            problems.add(path + ("state",), f"must be one of: {', '.join(states)} (got {value['state']!r})")
        else:
            out["state"] = value["state"]
    if "state_reason" in value:
        reason = _text(value["state_reason"], path + ("state_reason",), problems)
        if reason is not MISSING and out.get("state") not in stopped:
            problems.add(path + ("state_reason",), f"only with state: {' or '.join(stopped)} (it says why)")
        out["state_reason"] = reason
    if out.get("state") in stopped and not out.get("state_reason"):
        problems.add(path + ("state",), f"{out['state']}: say why with state_reason (the reason is recorded)")


def _source(name: str, value, path, problems) -> dict:
    if not sources.SOURCE_NAME.match(name):
        problems.add(path, "not a source name (lower-case letters, digits, '_', '.', '-'; the part of a release's name before '@')")
    value = _mapping(value, path, problems, "source keys")
    _known_keys(value, path, problems, "source")
    if "holder" not in value:
        problems.add(path, "a source needs its holder")
        return {}
    holder = _text(value["holder"], path + ("holder",), problems, allow_empty=False)
    return {"holder": holder} if holder is not MISSING else {}


def _workspace(name: str, value, path, problems) -> dict:
    if not db.WORKSPACE_NAME.match(name):
        problems.add(path, "not a workspace name: 1-40 lower-case letters, digits and '-', starting and ending with a letter or digit")
    value = _mapping(value, path, problems, "workspace keys")
    _known_keys(value, path, problems, "workspace")
    out: dict[str, Any] = {}
    if "purpose" in value:
        out["purpose"] = _text(value["purpose"], path + ("purpose",), problems, allow_empty=False)
    if "holder" in value:
        out["holder"] = _text(value["holder"], path + ("holder",), problems, allow_empty=False)
    _state(value, path, problems, out, WORKSPACE_STATES, "frozen", "archived")
    if "expires_at" in value:
        out["expires_at"] = _moment(value["expires_at"], path + ("expires_at",), problems)
    if "operators_may_review" in value:
        if isinstance(value["operators_may_review"], bool):
            out["operators_may_review"] = value["operators_may_review"]
        else:
            problems.add(path + ("operators_may_review",), f"must be true or false (got {_kind(value['operators_may_review'])})")
    if "members" in value:
        members = _mapping(value["members"], path + ("members",), problems, "workspace roles to account names")
        _known_keys(members, path + ("members",), problems, "members")
        out["members"] = {}
        for role in WORKSPACE_ROLES:
            names = _names(members.get(role, []), path + ("members", role), problems)
            out["members"][role] = names if names is not MISSING else []  # in the file's order, for the lines
    if "releases" in value:
        out["releases"] = {}
        for release, request in _mapping(value["releases"], path + ("releases",), problems, "release names to requests").items():
            out["releases"][release] = _release_request(request, path + ("releases", release), problems)
    if "limits" in value:
        limits = _mapping(value["limits"], path + ("limits",), problems, "limit names to values")
        unknown = [k for k in limits if k not in LimitSettings.model_fields]
        for k in unknown:
            problems.add(path + ("limits", k), f"unknown limit (one of: {', '.join(LimitSettings.model_fields)})")
        known = {k: v for k, v in limits.items() if k not in unknown}
        try:
            out["limits"] = LimitSettings(**known).model_dump(include=set(known))
        except ValueError as exc:
            for error in getattr(exc, "errors", lambda: [])():
                key = str(error["loc"][0]) if error.get("loc") else ""
                problems.add(path + ("limits", key), error["msg"])
    if "guard" in value:
        out["guard"] = _mapping(value["guard"], path + ("guard",), problems, "guard settings to values")
        if "acro" in out["guard"]:
            problems.add(path + ("guard", "acro"), "ACRO thresholds are set in [exports] for all workspaces, not per workspace")
    if "export_policy" in value:
        policy = _mapping(value["export_policy"], path + ("export_policy",), problems, "export policy keys to values")
        for key in policy:
            if key not in workspaces.EXPORT_POLICY_KEYS:
                problems.add(path + ("export_policy", key),
                             f"unknown export policy key (one of: {', '.join(workspaces.EXPORT_POLICY_KEYS)})")
        out["export_policy"] = {k: v for k, v in policy.items() if k in workspaces.EXPORT_POLICY_KEYS}
    return {k: v for k, v in out.items() if v is not MISSING}


def _release_request(value, path, problems) -> dict:
    value = _mapping(value, path, problems, "release keys")
    _known_keys(value, path, problems, "release")
    out = {"columns": None, "reason": ""}
    if value.get("columns") is not None:
        columns = _names(value["columns"], path + ("columns",), problems)
        if columns is not MISSING:
            if not columns:
                problems.add(path + ("columns",), "give at least one column, or leave columns out for the whole release")
            out["columns"] = columns
    if "reason" in value:
        reason = _text(value["reason"], path + ("reason",), problems)
        out["reason"] = reason if reason is not MISSING else ""
    return out


# ---------------------------------------------------------------------------------------------
# The plan: what differs between the declaration and Enclave, as the changes that make it so.

Recorder = Callable[..., None]


@dataclass
class Change:
    """One change of the plan: ``sign`` '+' creates, '~' changes, '-' removes."""

    sign: str
    subject: str  # "account alice", "workspace census"
    what: str
    line: int
    key: str
    run: Callable[[Any, Recorder], Any]  # (session, record)

    def describe(self) -> str:
        return f"{self.sign} {self.subject}: {self.what}"


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    # New accounts: they get a generated password, printed once, hashed before the changes run.
    new_accounts: list[str] = field(default_factory=list)
    password_hashes: dict[str, str] = field(default_factory=dict)


@dataclass
class _Current:
    accounts: dict[str, accounts.AccountView]
    sources: dict[str, str]
    workspaces: dict[str, workspaces.WorkspaceView]


def _read_current(settings: Settings, session) -> _Current:
    return _Current(
        {a.name: a for a in accounts.all_accounts(settings, session)},
        {s.name: s.holder for s in sources.all_sources(settings, session)},
        {w.name: w for w in workspaces.all_workspaces(settings, session)},
    )


def _same_moment(a: datetime | None, b: datetime | None) -> bool:
    iso = lambda m: m.astimezone(UTC).isoformat(timespec="seconds") if m else None  # noqa: E731
    return iso(a) == iso(b)


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else "never"


class _Planner:
    def __init__(self, settings: Settings, decl: Declaration, current: _Current, by: str) -> None:
        self.settings, self.decl, self.current, self.by = settings, decl, current, by
        self.problems = _Problems(decl.lines)
        self.problems.found.extend(decl.problems)
        self.early: list[Change] = []  # accounts made or given roles, sources
        self.middle: list[Change] = []  # workspaces
        self.late: list[Change] = []  # roles taken away, accounts disabled or removed
        self.plan = Plan()
        self._tables: dict[str, dict[str, list[str]] | None] = {}

    # What each account will be once the file is applied.
    def roles_of(self, name: str) -> set[str] | None:
        declared = self.decl.accounts.get(name, {})
        if "roles" in declared:
            return set(declared["roles"])
        if name in self.current.accounts:
            return set(self.current.accounts[name].roles)
        return None if name not in self.decl.accounts else set()

    def state_of(self, name: str) -> str:
        declared = self.decl.accounts.get(name, {})
        if "state" in declared:
            return declared["state"]
        found = self.current.accounts.get(name)
        return found.state if found else "active"

    def exists_after(self, name: str) -> bool:
        if name in self.decl.accounts:
            return True
        return name in self.current.accounts and not self.decl.prune["accounts"]

    def account_problem(self, name: str, path: Path_, role: str | None) -> bool:
        """Whether ``name`` cannot be used where ``path`` names it (and say why)."""
        if not self.exists_after(name):
            why = " (prune: accounts removes every account the file does not list)" if name in self.current.accounts else ""
            self.problems.add(path, f"no account named '{name}' in the file or in Enclave{why}")
            return True
        if role is not None and role not in (self.roles_of(name) or set()):
            self.problems.add(path, f"'{name}' does not hold the {role} role")
            return True
        return False

    def build(self) -> Plan:
        for name, declared in self.decl.accounts.items():
            self.account(name, declared)
        for name, declared in self.decl.sources.items():
            self.source(name, declared)
        for name, declared in self.decl.workspaces.items():
            self.workspace(name, declared)
        if self.decl.prune["accounts"]:
            for name in sorted(set(self.current.accounts) - set(self.decl.accounts)):
                self.late.append(Change("-", f"account {name}", "remove (not in the file)", self.decl.line("prune", "accounts"),
                                        "prune.accounts", lambda s, r, n=name: accounts.remove_user(self.settings, n, r, session=s)))
        if self.problems.found:
            raise ApplyError(self.decl.file, self.problems.found)
        self.plan.changes = self.early + self.middle + self.late
        return self.plan

    def account(self, name: str, declared: dict) -> None:
        path = ("accounts", name)
        line = self.decl.line(*path)
        subject = f"account {name}"
        found = self.current.accounts.get(name)
        settings = self.settings
        if found is None:
            if "roles" not in declared:
                if not any(p.key.startswith(_dotted(path + ("roles",))) for p in self.problems.found):
                    self.problems.add(path, "a new account needs its roles")
                return
            expires = declared.get("expires_at")
            self.plan.new_accounts.append(name)
            hashes = self.plan.password_hashes  # filled by apply() once the plan is known
            self.early.append(Change("+", subject, f"create ({', '.join(declared['roles'])})"
                                     + (f", expires {_when(expires)}" if expires else "") + "; its password is printed once",
                                     line, _dotted(path),
                                     lambda s, r: accounts.add_user(settings, name, declared["roles"], None, r,
                                                                    expires_at=expires, session=s,
                                                                    password_hash=hashes[name])))
            if declared.get("state") == "disabled":
                self.late.append(Change("~", subject, f"disabled: {declared['state_reason']}", self.decl.line(*path, "state"),
                                        _dotted(path + ("state",)),
                                        lambda s, r: accounts.disable(settings, name, declared["state_reason"], r, session=s)))
            return
        if "roles" in declared and set(declared["roles"]) != set(found.roles):
            roles, before = declared["roles"], sorted(found.roles)
            key, rline = _dotted(path + ("roles",)), self.decl.line(*path, "roles")
            what = f"roles {', '.join(before)} → {', '.join(roles)}"
            if set(roles) >= set(before):
                self.early.append(Change("~", subject, what, rline, key,
                                         lambda s, r: accounts.set_roles(settings, name, roles, r, session=s)))
            else:
                union = sorted(set(roles) | set(before))
                if union != before:  # new roles first, for the memberships that need them
                    self.early.append(Change("~", subject, f"roles {', '.join(before)} → {', '.join(union)} (before the others go)",
                                             rline, key, lambda s, r: accounts.set_roles(settings, name, union, r, session=s)))
                self.late.append(Change("~", subject, what, rline, key,
                                        lambda s, r: accounts.set_roles(settings, name, roles, r, session=s)))
        if "expires_at" in declared and not _same_moment(declared["expires_at"], found.expires_at):
            expires = declared["expires_at"]
            self.early.append(Change("~", subject, f"expires {_when(found.expires_at)} → {_when(expires)}",
                                     self.decl.line(*path, "expires_at"), _dotted(path + ("expires_at",)),
                                     lambda s, r: accounts.set_expiry(settings, name, expires, r, session=s)))
        state, reason = declared.get("state", found.state), declared.get("state_reason", found.state_reason)
        sline, skey = self.decl.line(*path, "state"), _dotted(path + ("state",))
        enable = lambda s, r: accounts.enable(settings, name, r, session=s)  # noqa: E731
        disable = lambda s, r: accounts.disable(settings, name, reason, r, session=s)  # noqa: E731
        if state == "active" and found.state == "disabled":
            self.early.append(Change("~", subject, "enabled", sline, skey, enable))
        elif state == "disabled" and found.state != "disabled":
            self.late.append(Change("~", subject, f"disabled: {reason}", sline, skey, disable))
        elif state == "disabled" and found.state_reason != reason:
            self.late.append(Change("~", subject, f"why it is disabled: {found.state_reason} → {reason}"
                                    " (enabled and disabled again, in the one transaction)", sline, skey, enable))
            self.late.append(Change("~", subject, "disabled again with the new reason", sline, skey, disable))

    def source(self, name: str, declared: dict) -> None:
        if "holder" not in declared:
            return
        path = ("sources", name, "holder")
        holder = declared["holder"]
        if self.account_problem(holder, path, "holder"):
            return
        before = self.current.sources.get(name)
        if before == holder:
            return
        settings = self.settings
        self.early.append(Change("+" if before is None else "~", f"source {name}",
                                 f"holder {holder}" if before is None else f"holder {before} → {holder}",
                                 self.decl.line(*path), _dotted(path),
                                 lambda s, r: sources.set_holder(settings, name, holder, r, session=s)))

    def holder_of_source(self, source: str) -> str | None:
        declared = self.decl.sources.get(source, {})
        return declared.get("holder", self.current.sources.get(source))

    def release_columns(self, release: str, columns: list[str] | None, path: Path_) -> dict | None | object:
        """The column view ``columns`` name, as the service stores it (table → columns)."""
        try:
            folder = release_dir(self.settings, release) / "data"
        except ReleaseError as exc:
            self.problems.add(path, str(exc))
            return MISSING
        if not folder.is_dir():
            self.problems.add(path, f"release '{release}' is not in the release store ({self.settings.release_store})")
            return MISSING
        if columns is None:
            return None
        if release not in self._tables:
            self._tables[release] = supply.release_tables(self.settings, release)
        try:
            return supply.select_columns(self._tables[release], release, columns)
        except supply.SupplyError as exc:
            self.problems.add(path + ("columns",), str(exc))
            return MISSING

    def check_export_policy(self, policy: dict, path: Path_) -> None:
        """As the service checks it: over [exports], with the types and bounds of its settings."""
        try:
            ExportSettings.model_validate({**self.settings.exports.model_dump(), **policy})
        except ValidationError as exc:
            for error in exc.errors():
                self.problems.add(path + tuple(str(part) for part in error["loc"][:1]), error["msg"])

    def workspace(self, name: str, declared: dict) -> None:
        path = ("workspaces", name)
        subject = f"workspace {name}"
        settings, by = self.settings, self.by
        found = self.current.workspaces.get(name)
        now = found.describe() if found else None
        changes: list[Change] = []
        problems_before = len(self.problems.found)

        def change(sign: str, what: str, key: tuple, run) -> None:
            changes.append(Change(sign, subject, what, self.decl.line(*path, *key), _dotted(path + key), run))

        state = declared.get("state", now["state"] if now else "active")
        reason = declared.get("state_reason", now["state_reason"] if now else "")
        purpose = declared.get("purpose", now["purpose"] if now else "")
        holder = declared.get("holder", now["holder"] if now else None)
        may_review = declared.get("operators_may_review", now["operators_may_review"] if now else False)

        if "holder" in declared:
            self.account_problem(holder, path + ("holder",), "holder")

        # Members: who holds which role once the file is applied.
        current_members = now["members"] if now else {role: [] for role in WORKSPACE_ROLES}
        pruning_members = self.decl.prune["members"] and "members" in declared
        final_members: dict[str, set[str]] = {}
        for role in WORKSPACE_ROLES:
            kept = set() if pruning_members else set(current_members[role])
            if self.decl.prune["accounts"]:
                kept &= set(self.decl.accounts)
            final_members[role] = kept
            for i, user in enumerate(declared.get("members", {}).get(role, [])):
                upath = path + ("members", role, i)
                if self.account_problem(user, upath, role if role != "owner" else None):
                    continue
                if user not in current_members[role] and self.state_of(user) != "active":
                    self.problems.add(upath, f"'{user}' is disabled (in the file or in Enclave): a disabled account cannot be given a role")
                final_members[role].add(user)
        if not may_review:
            listed = declared.get("members", {})
            for user in sorted(final_members["operator"] & final_members["reviewer"]):
                in_file = [r for r in ("operator", "reviewer") if user in listed.get(r, [])]
                where = ("members", in_file[-1], listed[in_file[-1]].index(user)) if in_file else ("members",)
                kept = [r for r in ("operator", "reviewer") if r not in in_file]
                self.problems.add(path + where, f"'{user}' would be both operator and reviewer of '{name}', which its policy"
                                                " does not allow (operators_may_review: false)"
                                  + (f"; '{user}' stays {kept[0]} (the file does not say prune: members)" if kept else ""))

        # Releases asked for once the file is applied, and whether a request can be made at all.
        current_releases = now["releases"] if now else {}
        wanted_releases: dict[str, dict] = {}
        for release, request in declared.get("releases", {}).items():
            rpath = path + ("releases", release)
            columns = self.release_columns(release, request["columns"], rpath)
            if columns is MISSING:
                continue
            wanted_releases[release] = {"columns": columns, "reason": request["reason"]}
            current = current_releases.get(release)
            if current is not None and current["columns"] == columns and current["reason"] == request["reason"]:
                continue  # asked for already, or attached: nothing to do
            source_holder = self.holder_of_source(sources.source_of(release))
            if source_holder is None:
                self.problems.add(rpath, f"release '{release}' has no data holder: declare its source"
                                         f" '{sources.source_of(release)}' under sources: with its holder")
            elif holder is None:
                self.problems.add(rpath, f"workspace '{name}' has no data holder to consent: give it holder:")
            elif source_holder != holder:
                self.problems.add(rpath, f"release '{release}' is held by '{source_holder}', not by '{holder}',"
                                         f" the data holder of '{name}'")
            if not purpose:
                self.problems.add(rpath, f"workspace '{name}' has no purpose: the data holder consents to a use; give it purpose:")

        if "export_policy" in declared:
            self.check_export_policy(declared["export_policy"], path + ("export_policy",))
        if found is None and state == "archived":
            self.problems.add(path + ("state",), "a new workspace cannot be archived")
        if len(self.problems.found) > problems_before:
            return  # its changes would rest on what is wrong

        # Removals first: releases and roles the file no longer lists (only with prune).
        for release, current in sorted(current_releases.items()):
            wanted = wanted_releases.get(release)
            unlisted = release not in declared.get("releases", {})
            if unlisted and not (self.decl.prune["releases"] and "releases" in declared):
                continue
            if wanted is not None and wanted == {"columns": current["columns"], "reason": current["reason"]}:
                continue
            if wanted is None and not unlisted:
                continue  # a problem with it was named above
            what = ("detach (not in the file)" if unlisted else "asked for again, with its new columns or reason: the"
                    " data holder's consent is asked again") + f" — {release}, {current['status'].replace('_', ' ')}"
            key = ("releases",) if unlisted else ("releases", release)
            change("-" if unlisted else "~", what, key,
                   lambda s, r, rel=release: workspaces.detach(settings, name, rel, by, r, session=s))
        if pruning_members:
            for role in WORKSPACE_ROLES:
                for user in sorted(set(current_members[role]) - set(declared["members"][role])):
                    change("-", f"remove {role} {user} (not in the file)", ("members", role),
                           lambda s, r, u=user, ro=role: workspaces.remove_member(settings, name, u, ro, r, session=s))

        if found is None:
            expires = declared.get("expires_at")
            change("+", "create" + (f", purpose: {purpose}" if purpose else "") + (f", holder {holder}" if holder else "")
                   + (f", expires {_when(expires)}" if expires else ""), (),
                   lambda s, r: workspaces.create(settings, name, r, purpose=purpose, holder=holder, expires_at=expires, session=s))
        else:
            if "purpose" in declared and declared["purpose"] != now["purpose"]:
                change("~", f"purpose: {declared['purpose']}", ("purpose",),
                       lambda s, r: workspaces.set_purpose(settings, name, purpose, r, session=s))
            if "holder" in declared and holder != now["holder"]:
                change("~", f"holder {now['holder'] or '-'} → {holder}", ("holder",),
                       lambda s, r: workspaces.set_holder(settings, name, holder, r, session=s))
            if "expires_at" in declared and not _same_moment(declared["expires_at"], found.expires_at):
                expires = declared["expires_at"]
                change("~", f"expires {_when(found.expires_at)} → {_when(expires)}", ("expires_at",),
                       lambda s, r: workspaces.set_expiry(settings, name, expires, r, session=s))
            if now["state"] == "frozen" and (state == "active" or (state == "frozen" and reason != now["state_reason"])):
                change("~", "unfrozen" if state == "active" else "unfrozen, to be frozen again with the new reason",
                       ("state",), lambda s, r: workspaces.unfreeze(settings, name, r, session=s))
        if may_review != (now["operators_may_review"] if now else False):
            change("~", f"operators_may_review: {str(may_review).lower()}", ("operators_may_review",),
                   lambda s, r: workspaces.set_operators_may_review(settings, name, may_review, r, session=s))
        for role in WORKSPACE_ROLES:
            for i, user in enumerate(declared.get("members", {}).get(role, [])):
                if user not in current_members[role]:
                    change("+", f"add {role} {user}", ("members", role, i),
                           lambda s, r, u=user, ro=role: workspaces.add_member(settings, name, u, ro, r, session=s))
        for release, wanted in wanted_releases.items():
            current = current_releases.get(release)
            if current is not None and wanted == {"columns": current["columns"], "reason": current["reason"]}:
                continue
            columns = declared["releases"][release]["columns"]
            change("+", f"ask for {release}" + (f" (columns {', '.join(columns)})" if columns else "")
                   + f", awaiting the consent of {self.holder_of_source(sources.source_of(release))}",
                   ("releases", release),
                   lambda s, r, rel=release, cols=columns, why=wanted["reason"]:
                       workspaces.attach(settings, name, rel, by, cols, why, r, session=s))
        for section, setter in (("limits", workspaces.set_limits), ("guard", workspaces.set_guard),
                                ("export_policy", workspaces.set_export_policy)):
            current = now[section] if now else {}
            differing = {k: v for k, v in declared.get(section, {}).items() if current.get(k, MISSING) != v}
            if differing:
                shown = ", ".join(f"{k} {json.dumps(current[k]) if k in current else '-'} → {json.dumps(v)}"
                                  for k, v in differing.items())
                change("~", f"{section}: {shown}", (section,),
                       lambda s, r, d=differing, set_=setter: set_(settings, name, d, r, session=s))
        before_state = now["state"] if now else "active"
        if state == "frozen" and (before_state != "frozen" or reason != now["state_reason"]):
            change("~", f"frozen: {reason}", ("state",), lambda s, r: workspaces.freeze(settings, name, reason, r, session=s))
        elif state == "archived":
            if before_state != "archived":
                change("~", f"archived: {reason}", ("state",), lambda s, r: workspaces.archive(settings, name, reason, r, session=s))
        if before_state == "archived" and changes:
            for c in changes:
                self.problems.found.append(Problem(c.line, c.key, f"workspace '{name}' is archived: nothing changes it"
                                                                  f" (the file asks: {c.what})"))
            return
        self.middle.extend(changes)


def make_plan(settings: Settings, decl: Declaration, session, by: str) -> Plan:
    """The changes that make Enclave what ``decl`` says, in the order they can be made; every
    problem the file has against Enclave's present state (unknown accounts, releases, columns,
    contradictions) raises :class:`ApplyError`."""
    return _Planner(settings, decl, _read_current(settings, session), by).build()


# ---------------------------------------------------------------------------------------------
# Applying


@dataclass
class Result:
    changes: list[Change]
    applied: bool
    # New accounts' generated passwords, to be shown once.
    passwords: dict[str, str] = field(default_factory=dict)
    # Time spent hashing the new passwords (Argon2id), part of the total.
    hashing_seconds: float = 0.0


_SERVICE_ERRORS = (accounts.AccountError, workspaces.WorkspaceError, sources.SourceError, ReleaseError, supply.SupplyError)


def _hash_passwords(names: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """A generated password for each new account, and its Argon2id hash. One at a time: each hash
    already runs its lanes in parallel, and threads of them only contend (measured)."""
    passwords = {name: accounts.generate_password() for name in names}
    return passwords, {name: accounts.hash_password(password) for name, password in passwords.items()}


def apply(settings: Settings, text: str, file: str, by: str,
          recording: Callable[[], AbstractContextManager[Recorder]] | None = None, *, dry_run: bool = False) -> Result:
    """Apply the declaration in ``text`` (read from ``file``) in one transaction.

    ``recording``: opens the audit log's recorder (the provisioning service's, as the caller:
    ``POST /apply``, which ``enclave apply`` sends), entered only when there is something to change;
    its ``together(records)`` hands the file's records to the log, which takes them all or none.
    ``dry_run``: work out and return the changes, make none. Raises :class:`ApplyError` naming every problem; then nothing was applied."""
    decl = parse(text, file)
    with db.snapshot(settings.enclave_db_url) as session:  # no write lock while the file is checked
        plan = make_plan(settings, decl, session, by)
    if dry_run or not plan.changes:
        return Result(plan.changes, applied=False)
    # Hashing takes long (Argon2id): done before the write transaction, which holds the write lock.
    started = time.perf_counter()
    passwords, hashes = _hash_passwords(plan.new_accounts)
    hashing = time.perf_counter() - started
    with db.transaction(settings.enclave_db_url) as session:
        plan = make_plan(settings, decl, session, by)  # again, as things are now that no one else writes
        if not plan.changes:
            return Result([], applied=False)
        late_passwords, late_hashes = _hash_passwords([n for n in plan.new_accounts if n not in hashes])
        passwords, hashes = passwords | late_passwords, hashes | late_hashes
        plan.password_hashes.update(hashes)
        pending: list[tuple[str, str | None, dict | None]] = []

        def buffered(action: str, workspace: str | None = None, detail: dict | None = None) -> None:
            pending.append((action, workspace, detail))

        for change in plan.changes:
            _run(decl, change, session, buffered)
        if recording is None:
            raise ValueError("changes are recorded: apply() needs the audit log's recorder (recording=)")
        # The records go to the audit log last, before the commit, together: the log takes them all
        # or none, and then the transaction rolls back (nothing changed, nothing recorded).
        with recording() as record:
            record.together(pending)
    return Result(plan.changes, applied=True, passwords={n: passwords[n] for n in plan.new_accounts},
                  hashing_seconds=hashing)


def _run(decl: Declaration, change: Change, session, record: Recorder) -> None:
    try:
        change.run(session, record)
    except _SERVICE_ERRORS as exc:
        raise ApplyError(decl.file, [Problem(change.line, change.key, f"{exc} (nothing was applied)")]) from None


# ---------------------------------------------------------------------------------------------
# The key reference in docs/provisioning.md

DOC_PATH = REPO_ROOT / "docs" / "provisioning.md"
_BEGIN = "<!-- keys: generated from enclave/provisioning/apply.py by `enclave apply-doc`; do not edit by hand -->"
_END = "<!-- end of keys -->"


def render_keys() -> str:
    parts = [_BEGIN, ""]
    for section, keys in SCHEMA.items():
        parts += [f"### {section}", "", "| key | value | meaning |", "|---|---|---|"]
        parts += [f"| `{k.name}` | {k.type} | {k.meaning} |" for k in keys]
        parts.append("")
    parts.append(_END)
    return "\n".join(parts)


def render_doc(current: str) -> str:
    """The page with its key reference regenerated (the rest is written by hand)."""
    head, begin, rest = current.partition(_BEGIN)
    if not begin:
        raise ValueError(f"{DOC_PATH} has no key reference section (a line '{_BEGIN}')")
    _, end, tail = rest.partition(_END)
    if not end:
        raise ValueError(f"{DOC_PATH}: the key reference has no end ('{_END}')")
    return head + render_keys() + tail
