"""``enclave data``: the data holder's releases (build, list, show, verify), their raw sources and
lineage (``data source``, ``data lineage``: the holder's own records), the sealed views of
synthetic releases (``data sealed-view``: their real rows, root's only), and the hub's view of
sources (``data sources``, ``data set-holder``: who holds each; they consent to its releases'
attachment to workspaces).

Building a release runs the ``synthetic`` package on the data holder's side; sandboxes only ever
see the published ``data/`` folder of a release.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..i18n import N_
from . import main, operator_name, pass_ctx
from .language import CommandError, refusal, render, translated, usage_error

# The codes of the refusals whose words are not translated yet: the release store's, the pseudonym
# keys' and the synthesis' (synthetic/store.py, masking.py, synthesis.py).
_UNTRANSLATED = {"StoreError": "release.store", "PseudonymKeyError": "release.pseudonym_key",
                 "SynthesisError": "release.synthesis_failed"}


def _error(exc: Exception) -> CommandError:
    """A contract's, source's or release's refusal as the command's error: in the holder's language
    when it renders itself (with its code), else as written, under the code of its kind."""
    if hasattr(exc, "render"):
        return CommandError(exc)
    from synthetic.contract import AsWritten

    return CommandError(AsWritten(_UNTRANSLATED[type(exc).__name__], str(exc)))


def _errors():
    from synthetic.contract import ContractError
    from synthetic.gates import GateFailure
    from synthetic.masking import PseudonymKeyError
    from synthetic.store import StoreError
    from synthetic.sources import SourceError
    from synthetic.synthesis import SynthesisError

    return ContractError, GateFailure, PseudonymKeyError, SourceError, StoreError, SynthesisError


@main.group()
def data() -> None:
    """Build and inspect releases (masked or synthetic data) in the release store, and the data
    holder's raw sources and their releases' lineage."""


@data.command("release")
@click.argument("contract", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--method", type=click.Choice(["masked", "synthetic"]), required=True)
@click.option("--model", type=click.Choice(["gaussian_copula", "ctgan", "tvae"]),
              help="Synthetic only: overrides the contract's synthesis.model.")
@click.option("--epochs", type=click.IntRange(1, 5000), help="CTGAN/TVAE/PAR training epochs.")
@click.option("--time-budget", type=click.FloatRange(min=1),
              help="Synthetic only: the fit's wall-clock budget in seconds.")
@click.option("--seed", type=int, help="Synthetic only: overrides the contract's synthesis.seed (every attempt is"
                                       " logged with its seed).")
@click.option("--version", help="Release version (default: the next integer).")
@pass_ctx
def release(ctx, contract: Path, method: str, model, epochs, time_budget, seed, version) -> None:
    """Build a release from CONTRACT.yaml and publish it if every gate passes.

    The release is of the source named by the contract: an unregistered source is registered
    (as by 'data source add'), a new content of one of its files is recorded as a new file version,
    and another contract file of a registered source is a cut of it. A masked release is checked
    together with every earlier masked release of its source before it is published."""
    from synthetic import pipeline
    from synthetic.contract import load_contract
    from synthetic.gates import GateFailure
    from synthetic.gates.base import verdicts
    from synthetic.synthesis import SynthesisError

    from ..audit.client import AuditError
    from ..audit.records import without_floats

    errors = _errors()
    # Every attempt is recorded in the audit log, published or refused, with its gates' verdicts (not
    # their details, which may hold figures of the real data) and, for synthetic data, its seed.
    with ctx.recording() as record:
        try:
            parsed = load_contract(contract)
            overrides = {k: v for k, v in (("model", model), ("epochs", epochs), ("time_budget_s", time_budget),
                                           ("seed", seed)) if v is not None}
            if overrides:
                if method != "synthetic":
                    raise usage_error("release.options_synthetic_only",
                                      N_("--model, --epochs, --time-budget and --seed apply to --method synthetic"
                                         " only"))
                parsed = parsed.model_copy(update={"synthesis": parsed.synthesis.model_copy(update=overrides)})
            seeded = {"seed": parsed.synthesis.seed} if method == "synthetic" else {}
            result = pipeline.release(ctx.settings, contract, method, by=operator_name(), version=version,
                                      contract=parsed)
        except GateFailure as exc:
            _registered(record, exc.registration, contract)
            record("data.release_refused", detail=without_floats({
                "release": exc.manifest["release"], "method": method, "reason": "a gate failed",
                "gates": verdicts(exc.manifest["gates"]), **seeded}))
            from synthetic.contract import Problem

            raise CommandError(Problem(exc.code, N_("%(refusal)s\nreport (for the data holder only): %(report)s"),
                                       {"refusal": exc, "report": str(exc.report)})) from None
        except SynthesisError as exc:
            _registered(record, getattr(exc, "registration", None), contract)
            record("data.release_refused", detail={
                "release": f"{parsed.name}@{version or 'next'}", "method": method, "reason": str(exc)[:2000],
                **seeded})
            raise _error(exc) from None
        except errors as exc:
            raise _error(exc) from None
        _registered(record, result.registration, contract)
        try:
            record("data.release_published", detail=without_floats({
                "release": result.release, "method": method, "content_hash": result.manifest["content_hash"],
                "gates": verdicts(result.manifest["gates"]), **seeded}))
        except AuditError as exc:
            raise refusal("audit.release_not_recorded",
                          N_("%(release)s was published, but the audit log did not record it (%(problem)s); record"
                             " it before attaching it anywhere"), release=result.release, problem=str(exc)) from None
    click.echo(f"published {result.release} ({method}); content hash {result.manifest['content_hash']}")
    for t, info in result.manifest["tables"].items():
        click.echo(f"  {t}: {info['rows']} rows, {len(info['columns'])} columns")


def _registered(record, reg, contract: Path) -> None:
    """Say and record what the release registered (a new source, cut or file version)."""
    if reg is not None:
        _say_registration(reg, contract)
        _record_registration(record, reg)


def _record_registration(record, reg) -> None:
    name = reg.source.name
    if reg.created:
        record("data.source_registered", detail={"source": name, "change": "registered"})
    elif reg.new_cut:
        record("data.source_registered", detail={"source": name, "change": "new_cut"})
    for t in [] if reg.created else reg.new_files:
        record("data.source_registered", detail={"source": name, "change": "new_file_version",
                                                 "sha256": reg.source.files[t][-1].sha256})


def _say_registration(reg, contract: Path) -> None:
    name = reg.source.name
    if reg.created:
        click.echo(f"registered source {name} from {contract} (first release of it; see data source show {name})")
        return
    if reg.new_cut:
        click.echo(f"{contract} is a new cut of source {name} (registered from {reg.source.contract})")
    for t in reg.new_files:
        v = reg.source.files[t][-1]
        click.echo(f"new version of table {t}'s file in source {name}: {v.path} (sha256 {v.sha256[:16]}...)")


@data.command("list")
@pass_ctx
def list_(ctx) -> None:
    """List releases in the store."""
    from synthetic import store

    names = store.releases(ctx.settings.release_store)
    if not names:
        click.echo("no releases")
    for name in names:
        try:
            m = store.manifest(ctx.settings.release_store, name)
        except store.StoreError as exc:
            click.echo(f"{name}  (unreadable: {exc})")
            continue
        rows = sum(t["rows"] for t in m.get("tables", {}).values())
        label = "  GENERATED" if m.get("generated") else ""
        click.echo(f"{name}  {m.get('method')}  {rows} rows  {m.get('created_at')}  {m.get('created_by')}{label}")


@data.command("show")
@click.argument("release")
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest.")
@pass_ctx
def show(ctx, release: str, as_json: bool) -> None:
    """Show RELEASE's manifest: source, parameters, gates and tables."""
    from synthetic import store

    try:
        m = store.manifest(ctx.settings.release_store, release)
    except store.StoreError as exc:
        raise _error(exc) from None
    if as_json:
        click.echo(json.dumps(m, indent=2, ensure_ascii=False))
        return
    click.echo(f"{m['release']}  ({m['method']}{', GENERATED data' if m.get('generated') else ''})")
    click.echo(f"created {m['created_at']} by {m['created_by']}; content hash {m['content_hash']}")
    for t, src in m["source"].items():
        click.echo(f"source {t}: {src['path']} ({src['rows']} rows, sha256 {src['sha256'][:16]}...)")
    for t, info in m["tables"].items():
        click.echo(f"table {t}: {info['rows']} rows; {', '.join(info['columns'])}")
    click.echo("gates:")
    for g in m["gates"]:
        mark = "pass" if g["passed"] else "FAIL"
        click.echo(f"  {mark}  {g['gate']}{' [' + g['table'] + ']' if g['table'] else ''}: {g['value']} ({g['threshold']})")
    click.echo(f"report: {ctx.settings.release_store / release / store.REPORT}")


@data.command("verify")
@click.argument("release")
@pass_ctx
def verify(ctx, release: str) -> None:
    """Re-hash RELEASE's files against its manifest; exit 1 on any difference."""
    from synthetic import store

    try:
        problems = store.verify(ctx.settings.release_store, release)
    except store.StoreError as exc:
        raise _error(exc) from None
    if problems:
        for p in problems:
            click.echo(f"{release}: {p}", err=True)
        raise SystemExit(1)
    click.echo(f"{release}: intact ({store.manifest(ctx.settings.release_store, release)['content_hash']})")


@data.command("sealed-view")
@click.argument("release")
@click.option("--check", "check_only", is_flag=True,
              help="Verify the sealed view against its manifest (files, hashes, root-only modes, the release it was"
                   " made from) instead of building it; exit 1 on any difference.")
@pass_ctx
def sealed_view(ctx, release: str, check_only: bool) -> None:
    """Build (or rebuild) the sealed view of synthetic RELEASE on the data holder's side: the real rows it
    was generated from, identifiers treated as in the release, in the release's tables, columns and
    types, readable by root only and never mounted into a workspace's sandbox. Sealed runs execute
    notebooks written against the release on it."""
    from synthetic import sealed

    if check_only:
        try:
            problems = sealed.check(ctx.settings, release)
            manifest = sealed.read_manifest(ctx.settings.holder_dir, release)
        except (*_errors(), sealed.SealedViewError) as exc:
            raise _error(exc) from None
        if problems:
            for p in problems:
                click.echo(f"{release}: {render(p)}", err=True)
            raise SystemExit(1)
        click.echo(translated(N_("sealed view of %(release)s: intact (content hash %(hash)s)"))
                   % {"release": release, "hash": manifest["content_hash"]})
        return
    from ..audit.client import AuditError

    with ctx.recording() as record:
        try:
            view = sealed.build(ctx.settings, release, by=operator_name())
        except (*_errors(), sealed.SealedViewError) as exc:
            raise _error(exc) from None
        try:
            record("data.sealed_view_built", detail={"release": release, "source": view.manifest["source"],
                                                     "content_hash": view.content_hash})
        except AuditError as exc:
            sealed.remove(ctx.settings.holder_dir, release)
            raise refusal("audit.sealed_view_not_recorded",
                          N_("the sealed view of %(release)s was removed: the audit log did not record it"
                             " (%(problem)s)"), release=release, problem=str(exc)) from None
    click.echo(translated(N_("sealed view of %(release)s built in %(path)s (content hash %(hash)s)"))
               % {"release": release, "path": view.path, "hash": view.content_hash})
    for t, info in view.manifest["tables"].items():
        click.echo(translated(N_("  %(table)s: %(rows)s rows, %(columns)s columns"))
                   % {"table": t, "rows": info["rows"], "columns": len(info["columns"])})


@data.command("sources")
@pass_ctx
def sources(ctx) -> None:
    """The hub's view of sources (release 'residents@1' is of source 'residents'): each one's data
    holder, who consents to its releases' use in workspaces, and its releases in the store. A
    source with releases but no holder ('-') cannot be asked for until one is set (data
    set-holder). The raw files behind each source are the holder's records: data source list."""
    holders = {s["name"]: s["holder"] for s in ctx.api("GET", "/sources")}
    in_store = ctx.api("GET", "/releases")
    names = sorted(set(holders) | {r["source"] for r in in_store})
    if not names:
        click.echo("no sources")
        return
    width = max(len(n) for n in names) + 2
    click.echo(f"{'SOURCE':<{width}} {'HOLDER':<34} RELEASES")
    for name in names:
        releases = [r["name"] for r in in_store if r["source"] == name]
        click.echo(f"{name:<{width}} {holders.get(name, '-'):<34} {', '.join(releases) or '-'}")


@data.command("set-holder")
@click.argument("source")
@click.argument("username", metavar="USER")
@pass_ctx
def set_holder(ctx, source: str, username: str) -> None:
    """Make USER (an account with the holder role) the holder of SOURCE on the hub: they consent,
    or not, to each attachment of its releases to a workspace."""
    from ..provisioning.client import path

    ctx.api("PUT", path("sources", source, "holder"), {"holder": username})
    click.echo(f"holder of {source}: {username}")


@data.group("source")
def source_group() -> None:
    """The data holder's registry of raw sources (holder side, never mounted): which contract and
    raw files each source name stands for, every version of its files, and the cuts released from
    it. ('data sources' is the hub's view: who holds each source.)"""


@source_group.command("add")
@click.argument("name")
@click.argument("contract", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def source_add(ctx, name: str, contract: Path) -> None:
    """Register raw source NAME from CONTRACT.yaml (NAME must be the contract's name: its releases
    are NAME@version). The contract is checked against its files, whose hashes are recorded;
    files already registered under another source are refused."""
    from synthetic import sources

    with ctx.recording() as record:
        try:
            reg = sources.add_source(ctx.settings.holder_dir, name, contract, by=operator_name())
        except _errors() as exc:
            raise _error(exc) from None
        _record_registration(record, reg)
    if reg.created:
        click.echo(f"registered source {name} from {reg.source.contract}")
    elif reg.new_files:
        click.echo(f"source {name} was registered; new file version(s) recorded: {', '.join(reg.new_files)}")
    else:
        click.echo(f"source {name} was registered already from {reg.source.contract}; its files are unchanged")
    for t, v in reg.source.current_files().items():
        click.echo(f"  {t}: {v.path} ({v.rows} rows, sha256 {v.sha256[:16]}...)")


@source_group.command("list")
@pass_ctx
def source_list(ctx) -> None:
    """List registered raw sources: contract, tables and file versions, cuts."""
    from synthetic import sources

    try:
        found = sources.sources(ctx.settings.holder_dir)
    except sources.SourceError as exc:
        raise _error(exc) from None
    if not found:
        click.echo("no registered sources (data source add NAME CONTRACT.yaml)")
    for src in found:
        versions = sum(len(v) for v in src.files.values())
        click.echo(f"{src.name}  {src.contract}  {len(src.files)} table(s), {versions} file version(s),"
                   f" {len(src.cuts)} cut(s)  registered {src.registered_at} by {src.registered_by}")


def _print_files(src) -> None:
    for t, versions in src.files.items():
        click.echo(f"table {t}:")
        for n, v in enumerate(versions, start=1):
            rows = "?" if v.rows is None else v.rows
            click.echo(f"  file version {n}: {v.path}  {rows} rows  sha256 {v.sha256[:16]}...  first seen {v.first_seen}")


@source_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the whole registry entry.")
@pass_ctx
def source_show(ctx, name: str, as_json: bool) -> None:
    """Show registered source NAME: its contract, every version of its files, its cuts."""
    from synthetic import sources

    try:
        src = sources.source(ctx.settings.holder_dir, name)
    except sources.SourceError as exc:
        raise _error(exc) from None
    if as_json:
        click.echo(json.dumps(src.as_dict(), indent=2, ensure_ascii=False))
        return
    click.echo(f"source {src.name}: contract {src.contract}")
    click.echo(f"registered {src.registered_at} by {src.registered_by}")
    _print_files(src)
    for c in src.cuts:
        click.echo(f"cut: {c['contract']} (first released {c['first_seen']} by {c['by']})")


@data.command("lineage")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the source and its releases' lineage records.")
@click.option("--accept-unlinked", "unlinked", metavar="RELEASE",
              help="Record that RELEASE, published without a lineage record, is not combined with later releases"
                   " (the composition check refuses every new masked release of NAME until then).")
@click.option("--reason", help="With --accept-unlinked: why (kept in the lineage record and the audit log).")
@pass_ctx
def lineage_(ctx, name: str, as_json: bool, unlinked: str | None, reason: str | None) -> None:
    """List source NAME's file versions and its published releases: method, contract file (or cut),
    file hashes and the composition check's result."""
    from synthetic import sources

    if unlinked:
        _accept_unlinked(ctx, name, unlinked, reason)
        return
    try:
        src = sources.source(ctx.settings.holder_dir, name)
        records = sources.releases(ctx.settings.holder_dir, name)
    except sources.SourceError as exc:
        raise _error(exc) from None
    if as_json:
        click.echo(json.dumps({"source": src.as_dict(), "releases": records}, indent=2, ensure_ascii=False))
        return
    click.echo(f"source {src.name}: contract {src.contract}")
    _print_files(src)
    from synthetic import store

    recorded = {r["release"] for r in records}
    unrecorded = [r for r in store.releases(ctx.settings.release_store)
                  if r.partition("@")[0] == name and r not in recorded]
    if not records and not unrecorded:
        click.echo("no published releases")
        return
    click.echo("releases:")
    for r in unrecorded:
        click.echo(f"  {r}  published without a lineage record: later releases are not checked against it")
    for r in records:
        contract = r["contract"]
        kind = "cut " if contract.get("cut") else ""
        click.echo(f"  {r['release']}  {r['method']}  {r['created_at']}  by {r['created_by']}"
                   f"  {kind}contract {contract.get('path') or '(path not recorded)'}")
        click.echo("    files: " + ", ".join(f"{t} {h[:16]}..." for t, h in r["files"].items()))
        if r.get("unlinked"):
            u = r["unlinked"]
            click.echo(f"    composition: not combined (published without lineage; accepted by {u['by']}"
                       f" at {u['at']}: {u['reason']})")
        elif not r.get("row_linked"):
            click.echo("    composition: not row-linked (synthetic rows are not raw rows)")
        for g in r.get("composition", []):
            mark = "pass" if g["passed"] else "FAIL"
            where = f" [{g['table']}]" if g.get("table") else ""
            value = "-" if g["value"] is None else g["value"]
            click.echo(f"    composition{where}: {mark} {value} ({g['threshold']}) {g.get('detail', '')}")


def _accept_unlinked(ctx, name: str, release: str, reason: str | None) -> None:
    from synthetic import sources, store

    if release.partition("@")[0] != name:
        raise usage_error("lineage.other_source", N_("%(release)s is not a release of %(source)s"), release=release,
                          source=name)
    if not reason:
        raise usage_error("lineage.reason_missing", N_("--accept-unlinked needs --reason"))
    with ctx.recording() as record:
        try:
            manifest = store.manifest(ctx.settings.release_store, release)
            sources.accept_unlinked(ctx.settings.holder_dir, release, manifest, reason=reason, by=operator_name())
        except (store.StoreError, sources.SourceError) as exc:
            raise _error(exc) from None
        record("data.release_unlinked", detail={"release": release, "reason": reason})
    click.echo(f"{release}: recorded as not combined with later releases of {name}")
