"""The demo: an admin, a data holder, two operators sharing a workspace, two reviewers, and two
releases of generated residents' data (``synthetic.demo``), a masked one and a synthetic one, both
attached to the workspace with the holder's consent. The raw source stays registered on the
holder's side, and the synthetic release's sealed view (``synthetic.sealed``) is built, for
sealed runs, which the holder's policy for the workspace lets the demo's reviewers review."""

from __future__ import annotations

import os
from pathlib import Path

from synthetic import sealed
from synthetic import sources as holder_sources
from synthetic.demo import DEMO_SOURCE, publish_demo_release, publish_demo_synthetic_release
from synthetic.gates.base import verdicts
from synthetic.store import manifest as release_manifest

from . import accounts, sources, workspaces
from .audit.records import without_floats
from .settings import Settings

WORKSPACE = "demo"
PURPOSE = "演示：居民收入与学历的统计分析 (demo: statistics of residents' income and education)"
HOLDER = "heidi"
ACCOUNTS = (
    ("admin", ("admin",)),
    (HOLDER, ("holder",)),
    ("alice", ("operator",)),
    ("bob", ("operator",)),
    ("carol", ("reviewer",)),
    ("dave", ("reviewer",)),
)
# Why each release is asked for, as the data holder reads it when consenting.
REASONS = {
    "masked": "Demo: generated residents' data, masked, for trying Enclave out",
    "synthetic": "Demo: generated residents' data, synthetic, for writing code that sealed runs execute on the"
                 " real rows",
}


def credentials_path(settings: Settings) -> Path:
    return settings.home / "demo-credentials.txt"


def seed(settings: Settings, record=None) -> list[tuple[str, tuple[str, ...], str]]:
    """Create the demo once. Returns the accounts created with their passwords (empty if seeded).
    ``record``: the audit log's, as the CLI gives it (enclave.workspaces.Recorder)."""
    if credentials_path(settings).exists():
        return []
    created = []
    for name, roles in ACCOUNTS:
        password = accounts.generate_password()
        accounts.add_user(settings, name, list(roles), password, record)
        created.append((name, roles, password))
    registered_before = any(s.name == DEMO_SOURCE for s in holder_sources.sources(settings.holder_dir))
    releases = [publish_demo_release(settings), publish_demo_synthetic_release(settings)]
    if record is not None:
        if not registered_before:
            record("data.source_registered", detail={"source": DEMO_SOURCE, "change": "registered"})
        for release in releases:
            manifest = release_manifest(settings.release_store, release)
            seeded = {"seed": manifest["contract"]["synthesis"]["seed"]} if manifest["method"] == "synthetic" else {}
            record("data.release_published", detail=without_floats({
                "release": release, "method": manifest["method"], "content_hash": manifest["content_hash"],
                "gates": verdicts(manifest["gates"]), **seeded}))
    sources.set_holder(settings, DEMO_SOURCE, HOLDER, record)
    workspaces.create(settings, WORKSPACE, record, purpose=PURPOSE, holder=HOLDER)
    for name, roles in ACCOUNTS:
        for role in roles:
            if role in ("operator", "reviewer"):
                workspaces.add_member(settings, WORKSPACE, name, role, record)
    for release in releases:
        method = release_manifest(settings.release_store, release)["method"]
        workspaces.attach(settings, WORKSPACE, release, by="demo", reason=REASONS[method], record=record)
        # The holder's consent is an action of the holder's account (the provisioning service's pages);
        # the demo gives it in the holder's name, so that it starts with data to work on.
        workspaces.consent(settings, WORKSPACE, release, HOLDER, record)
    view = sealed.build(settings, releases[1], by="demo")
    if record is not None:
        record("data.sealed_view_built", detail={"release": view.release, "source": DEMO_SOURCE,
                                                 "content_hash": view.content_hash})
    set_sealed_run_policy(settings)
    path = credentials_path(settings)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"Enclave demo accounts ({settings.public_url})\n")
        for name, roles, password in created:
            f.write(f"{name}\t{','.join(roles)}\t{password}\n")
    return created


# The demo workspace's sealed-run policy, as its data holder sets it: the demo's reviewers appointed
# (they will see results computed on the raw rows), runs waiting for the holder's approval, and a time
# limit a demo notebook fits in (a run holds its slot for all of it).
SEALED_RUN_POLICY = {"approval_required": True, "reviewers": ["carol", "dave"], "limits": {"seconds": 60}}


def set_sealed_run_policy(settings: Settings) -> None:
    """Set :data:`SEALED_RUN_POLICY` in the holder's name, through the review service's layer (which
    records it in the audit log: the hub's audit service, or the one the command started)."""
    from .exports.service import Actor, ExportService
    from .sealed.service import SealedRuns

    exports = ExportService(settings)
    try:
        SealedRuns(exports).set_policy(Actor(HOLDER, frozenset()), WORKSPACE, SEALED_RUN_POLICY)
    finally:
        exports.close()
