"""``enclave hub`` and ``enclave demo``: run JupyterHub for Enclave. JupyterHub and the demo's data
are imported when a command runs, not to list the commands (``enclave --help``)."""

from __future__ import annotations

import os

import click

from . import main, pass_ctx


def _run_hub(settings) -> None:
    from ..hub import EnclaveHub, check_host
    from ..settings import REPO_ROOT

    check_host(settings)
    os.chdir(settings.home)
    EnclaveHub.launch_instance(["-f", str(REPO_ROOT / "jupyterhub_config.py")])


@main.command("hub")
@pass_ctx
def hub(ctx) -> None:
    """Start JupyterHub with Enclave's configuration."""
    _run_hub(ctx.settings)


@main.command("demo")
@pass_ctx
def demo(ctx) -> None:
    """Seed a demo (accounts, a workspace, a release) once, then start the hub."""
    from .. import demo as demo_seed
    from ..hub import check_host

    settings = ctx.settings
    check_host(settings)
    with ctx.recording() as record:
        created = demo_seed.seed(settings, record)
    if created:
        click.echo("Demo accounts (shown once; kept in %s, mode 0600):" % demo_seed.credentials_path(settings))
        for name, roles, password in created:
            click.echo(f"  {name:10} {', '.join(roles):18} {password}")
    else:
        click.echo(f"Demo already seeded; credentials are in {demo_seed.credentials_path(settings)}")
    click.echo(f"Starting Enclave on {settings.public_url}")
    _run_hub(settings)
