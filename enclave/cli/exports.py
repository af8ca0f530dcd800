"""``enclave exports``: the export review service from the hub side's command line."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..exports import docs
from ..exports.service import verify_file
from . import main, pass_ctx


@main.group()
def exports() -> None:
    """Export review: verify released files, generate the states page."""


@exports.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the full result, manifest included, as JSON.")
@pass_ctx
def verify(ctx, file: Path, as_json: bool) -> None:
    """Say whether FILE was released, from which request and by whom, and whether its signature holds.

    The file is found by its SHA-256 or, if it was changed after release, by its watermark.
    Exits 0 only for a released, unmodified, unrevoked file with a valid signature.
    """
    try:
        result = verify_file(ctx.settings, file.read_bytes())
    except FileNotFoundError as exc:
        raise click.ClickException(
            f"no export signing key ({exc.filename}): the export review service has not run here"
        ) from None
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    elif not result["released"]:
        click.echo(f"{file}: NOT released by Enclave (sha256 {result['sha256']})")
    else:
        m = result["manifest"]
        click.echo(f"{file}: released as {m['file']['name']!r} (release {m['release_id']})")
        click.echo(f"  found by:   {result['found_by']}")
        click.echo(f"  request:    {m['request_id']} in workspace {m['workspace']}, requested by {m['requester']}")
        approvers = ", ".join(f"{a['reviewer']} ({a['reason']})" for a in m["approvers"])
        click.echo(f"  approved:   {approvers}; released {m['times']['released_at']}")
        click.echo(f"  policy:     {m['policy']['version']}, {m['policy']['approvals_required']} approval(s)")
        click.echo(f"  signature:  {'valid' if result['signature_valid'] else 'INVALID'} (key {m['key_id']})")
        if not result["hash_matches"]:
            click.echo("  content:    MODIFIED since release (hash differs; identified by watermark)")
        if result["revoked"]:
            click.echo("  status:     REVOKED")
    ok = result["released"] and result.get("signature_valid") and result.get("hash_matches") and not result.get("revoked")
    raise SystemExit(0 if ok else 1)


@exports.command("states-doc")
@click.option("--check", is_flag=True, help="Exit 1 if docs/export-review.md differs from the generated page.")
def states_doc(check: bool) -> None:
    """Write docs/export-review.md from the workflow's transition table."""
    if check:
        if docs.DOC_PATH.read_text() != docs.render():
            raise click.ClickException(f"{docs.DOC_PATH} is out of date: run 'enclave exports states-doc'")
        click.echo(f"{docs.DOC_PATH} is up to date")
        return
    docs.DOC_PATH.write_text(docs.render())
    click.echo(f"wrote {docs.DOC_PATH}")
