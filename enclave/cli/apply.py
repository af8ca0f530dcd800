"""``enclave apply FILE.yaml``: provision accounts, sources and workspaces from a declarative file
(docs/provisioning.md), and ``enclave apply-doc``, which writes that page's key reference."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..i18n import N_
from . import main, pass_ctx
from .language import refusal


@main.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print what would be created, changed and removed; change nothing.")
@pass_ctx
def apply_(ctx, file: Path, dry_run: bool) -> None:
    """Make Enclave's accounts, sources and workspaces what FILE declares, in one transaction: all
    of it or, if anything is refused, none of it. Removals only where FILE says 'prune:'. A request
    for a release awaits its data holder's consent. New accounts' passwords are printed once."""
    # The provisioning service applies it (POST /apply), and records its changes as ours, together.
    from ..provisioning.client import APPLY_BODY_LIMIT

    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise refusal("apply.not_utf8", N_("%(file)s is not UTF-8 text (%(reason)s at byte %(byte)s)"), file=str(file),
                      reason=exc.reason, byte=exc.start) from None
    body = {"file": str(file), "text": text, "dry_run": dry_run}
    size = len(json.dumps(body, ensure_ascii=False).encode())
    if size > APPLY_BODY_LIMIT:
        raise refusal("apply.too_large", N_("%(file)s is too large to apply: %(size)s bytes to send, the provisioning"
                                            " service takes at most %(limit)s (%(limit_mib)s MiB); split it into several"
                                            " files"), file=str(file), size=size, limit=APPLY_BODY_LIMIT,
                      limit_mib=APPLY_BODY_LIMIT // 2**20)
    result = ctx.api("POST", "/apply", body)  # a refused file: every problem, as the command's error
    if not result["changes"]:
        click.echo(f"nothing to change: Enclave already is as {file} declares")
        return
    for change in result["changes"]:
        click.echo(f"{change['sign']} {change['subject']}: {change['what']}")
    if dry_run:
        click.echo(f"dry run: {len(result['changes'])} change(s) would be made; nothing was changed")
        return
    click.echo(f"applied {len(result['changes'])} change(s) from {file}, in one transaction")
    if result["passwords"]:
        click.echo("passwords of the new accounts (shown this once; hand each to its owner, who should change it):")
        for name, password in result["passwords"].items():
            click.echo(f"  {name}: {password}")


@main.command("apply-doc")
@click.option("--check", is_flag=True, help="Exit 1 if docs/provisioning.md's key reference is out of date.")
def apply_doc(check: bool) -> None:
    """Write the key reference of docs/provisioning.md from the keys 'enclave apply' reads."""
    from ..provisioning import apply as provisioning

    try:
        current = provisioning.DOC_PATH.read_text(encoding="utf-8")
        rendered = provisioning.render_doc(current)
    except (OSError, ValueError) as exc:
        raise refusal("docs.unreadable", N_("cannot write the key reference: %(problem)s"), problem=str(exc)) from None
    if check:
        if rendered != current:
            raise refusal("docs.out_of_date", N_("%(path)s is out of date: run '%(command)s'"),
                          path=str(provisioning.DOC_PATH), command="enclave apply-doc")
        click.echo(f"{provisioning.DOC_PATH} is up to date")
        return
    provisioning.DOC_PATH.write_text(rendered, encoding="utf-8")
    click.echo(f"wrote {provisioning.DOC_PATH}")
