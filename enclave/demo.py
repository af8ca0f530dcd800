"""The demo: an admin, two operators sharing a workspace, two reviewers, and a released dataset."""

from __future__ import annotations

import csv
import os
import random
import tempfile
from pathlib import Path

from . import accounts, workspaces
from .releases import release_dir
from .settings import Settings

WORKSPACE = "demo"
DEMO_RELEASE = "demo-households@1"
ACCOUNTS = (
    ("admin", ("admin",)),
    ("alice", ("operator",)),
    ("bob", ("operator",)),
    ("carol", ("reviewer",)),
    ("dave", ("reviewer",)),
)


def credentials_path(settings: Settings) -> Path:
    return settings.home / "demo-credentials.txt"


def _publish_file_release(settings: Settings) -> str:
    """A small generated table, published atomically as a release folder."""
    target = release_dir(settings, DEMO_RELEASE)
    if target.exists():
        return DEMO_RELEASE
    settings.release_store.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=settings.release_store, prefix=".staging-"))
    (staging / "data").mkdir()
    rng = random.Random(7)
    with open(staging / "data" / "households.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["district", "household_size", "age_band", "monthly_income_band"])
        for _ in range(500):
            w.writerow([rng.choice(["Heping", "Hexi", "Nankai", "Hedong"]), rng.randint(1, 6),
                        rng.choice(["18-29", "30-44", "45-59", "60+"]),
                        rng.choice(["<3000", "3000-5999", "6000-9999", "10000+"])])
    (staging / "data" / "README.txt").write_text(
        "GENERATED DEMO DATA - synthetic households, not real people.\n")
    for p in staging.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    staging.chmod(0o755)
    os.rename(staging, target)
    return DEMO_RELEASE


def seed(settings: Settings) -> list[tuple[str, tuple[str, ...], str]]:
    """Create the demo once. Returns the accounts created with their passwords (empty if seeded)."""
    if credentials_path(settings).exists():
        return []
    created = []
    for name, roles in ACCOUNTS:
        password = accounts.generate_password()
        accounts.add_user(settings, name, list(roles), password)
        created.append((name, roles, password))
    release = _publish_file_release(settings)
    workspaces.create(settings, WORKSPACE)
    for name, roles in ACCOUNTS:
        for role in roles:
            if role in ("operator", "reviewer"):
                workspaces.add_member(settings, WORKSPACE, name, role)
    workspaces.attach(settings, WORKSPACE, release, by="demo")
    path = credentials_path(settings)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"Enclave demo accounts ({settings.public_url})\n")
        for name, roles, password in created:
            f.write(f"{name}\t{','.join(roles)}\t{password}\n")
    return created
