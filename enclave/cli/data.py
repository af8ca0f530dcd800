"""``enclave data``: the data holder's releases (build, list, show, verify) and sources (who holds
each: they consent to its releases' attachment to workspaces).

Building a release runs the ``synthetic`` package on the data holder's side; sandboxes only ever
see the published ``data/`` folder of a release.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from . import main, operator_name, pass_ctx


def _errors():
    from synthetic.contract import ContractError
    from synthetic.gates import GateFailure
    from synthetic.masking import PseudonymKeyError
    from synthetic.store import StoreError
    from synthetic.synthesis import SynthesisError

    return ContractError, GateFailure, PseudonymKeyError, StoreError, SynthesisError


@main.group()
def data() -> None:
    """Build and inspect releases (masked or synthetic data) in the release store."""


@data.command("release")
@click.argument("contract", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--method", type=click.Choice(["masked", "synthetic"]), required=True)
@click.option("--model", type=click.Choice(["gaussian_copula", "ctgan", "tvae"]),
              help="Synthetic only: overrides the contract's synthesis.model.")
@click.option("--epochs", type=click.IntRange(1, 5000), help="CTGAN/TVAE training epochs.")
@click.option("--time-budget", type=click.FloatRange(min=1), help="CTGAN/TVAE wall-clock budget in seconds.")
@click.option("--version", help="Release version (default: the next integer).")
@pass_ctx
def release(ctx, contract: Path, method: str, model, epochs, time_budget, version) -> None:
    """Build a release from CONTRACT.yaml and publish it if every gate passes."""
    from synthetic import pipeline
    from synthetic.contract import load_contract

    from synthetic.gates import GateFailure

    from ..audit.client import AuditError
    from ..audit.records import without_floats

    errors = _errors()
    # The release is recorded in the audit log, published or refused with its gates' results.
    with ctx.recording() as record:
        try:
            parsed = load_contract(contract)
            overrides = {k: v for k, v in (("model", model), ("epochs", epochs), ("time_budget_s", time_budget)) if v}
            if overrides:
                if method != "synthetic":
                    raise click.UsageError("--model, --epochs and --time-budget apply to --method synthetic only")
                parsed = parsed.model_copy(update={"synthesis": parsed.synthesis.model_copy(update=overrides)})
            result = pipeline.release(ctx.settings, contract, method, by=operator_name(), version=version,
                                      contract=parsed)
        except GateFailure as exc:
            record("data.release_refused", detail=without_floats({
                "release": f"{parsed.name}@{version or 'next'}", "method": method, "reason": str(exc),
                "gates": exc.manifest["gates"] if exc.manifest else []}))
            raise click.ClickException(str(exc)) from None
        except errors as exc:
            raise click.ClickException(str(exc)) from None
        try:
            record("data.release_published", detail=without_floats({
                "release": result.release, "method": method, "content_hash": result.manifest["content_hash"],
                "gates": result.manifest["gates"]}))
        except AuditError as exc:
            raise click.ClickException(f"{result.release} was published, but the audit log did not record it"
                                       f" ({exc}); record it before attaching it anywhere") from None
    click.echo(f"published {result.release} ({method}); content hash {result.manifest['content_hash']}")
    for t, info in result.manifest["tables"].items():
        click.echo(f"  {t}: {info['rows']} rows, {len(info['columns'])} columns")


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
        raise click.ClickException(str(exc)) from None
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
        raise click.ClickException(str(exc)) from None
    if problems:
        for p in problems:
            click.echo(f"{release}: {p}", err=True)
        raise SystemExit(1)
    click.echo(f"{release}: intact ({store.manifest(ctx.settings.release_store, release)['content_hash']})")


@data.command("sources")
@pass_ctx
def sources(ctx) -> None:
    """List sources (release 'residents@1' is of source 'residents'): each one's data holder, who
    consents to its releases' use in workspaces, and its releases in the store. A source with
    releases but no holder ('-') cannot be asked for until one is set (data set-holder)."""
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
    """Make USER (an account with the holder role) the holder of SOURCE: they consent, or not, to
    each attachment of its releases to a workspace."""
    from ..provisioning.client import path

    ctx.api("PUT", path("sources", source, "holder"), {"holder": username})
    click.echo(f"holder of {source}: {username}")
