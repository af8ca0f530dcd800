"""``enclave exports``: the export review service from the hub side's command line."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..i18n import N_
from . import main, pass_ctx
from .language import refusal


@main.group()
def exports() -> None:
    """Export review: verify released files, generate the states page."""


@exports.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the full result, manifest included, as JSON.")
@pass_ctx
def verify(ctx, file: Path, as_json: bool) -> None:
    """Say whether FILE was released, from which requests and by whom, and whether the signatures hold.

    The file is found by its SHA-256 or, if it was changed after release, by its watermark. Every
    release of the same bytes is listed with its state. Exits 0 when at least one release is of
    these very bytes, unrevoked, with a valid signature; 1 otherwise.
    """
    from ..exports.verify import verify_file

    try:
        result = verify_file(ctx.settings, file.read_bytes())
    except FileNotFoundError as exc:
        raise refusal("exports.no_signing_key",
                      N_("no export signing key (%(path)s): the export review service has not run here"),
                      path=exc.filename) from None
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    elif not result["released"]:
        click.echo(f"{file}: NOT released by Enclave (sha256 {result['sha256']})")
    else:
        found = result["releases"]
        click.echo(f"{file}: released {len(found)} time(s), found by {result['found_by']}"
                   f" ({'VALID' if result['valid'] else 'no valid release'})")
        for r in found:
            m = r["manifest"]
            click.echo(f"- release {m['release_id']} as {m['file']['name']!r}")
            click.echo(f"  found by:   {result['found_by']}")
            click.echo(f"  request:    {m['request_id']} in workspace {m['workspace']}, requested by {m['requester']}")
            approvers = ", ".join(f"{a['reviewer']} ({a['reason']})" for a in m["approvers"])
            click.echo(f"  approved:   {approvers}; released {m['times']['released_at']}")
            click.echo(f"  policy:     {m['policy']['version']}, {m['policy']['approvals_required']} approval(s)")
            click.echo(f"  signature:  {'valid' if r['signature_valid'] else 'INVALID'} (key {m['key_id']})")
            if not r["hash_matches"]:
                click.echo("  content:    MODIFIED since release (hash differs; identified by watermark)")
            click.echo(f"  status:     {'REVOKED ' + r['revoked_at'] if r['revoked'] else 'valid' if r['valid'] else 'not valid'}")
    raise SystemExit(0 if result["valid"] else 1)


@exports.command("states-doc")
@click.option("--check", is_flag=True, help="Exit 1 if docs/export-review.md differs from the generated page.")
def states_doc(check: bool) -> None:
    """Write docs/export-review.md from the workflow's transition table."""
    from ..exports import docs

    if check:
        if docs.DOC_PATH.read_text() != docs.render():
            raise refusal("docs.out_of_date", N_("%(path)s is out of date: run '%(command)s'"),
                          path=str(docs.DOC_PATH), command="enclave exports states-doc")
        click.echo(f"{docs.DOC_PATH} is up to date")
        return
    docs.DOC_PATH.write_text(docs.render())
    click.echo(f"wrote {docs.DOC_PATH}")
