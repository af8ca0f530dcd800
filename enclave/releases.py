"""The release store as the hub sees it: one read-only folder per release.

The data holder's side (``synthetic/``) publishes releases into ``$ENCLAVE_HOME/releases``; the
hub only looks them up by name and mounts the attached ones read-only at ``/data/<name>``.
"""

from __future__ import annotations

import re
from pathlib import Path

from .i18n import N_
from .refusals import Refusal
from .settings import Settings

# ``name`` or ``name@version``: safe as a directory name and as a mount point under /data.
RELEASE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}(@[A-Za-z0-9][A-Za-z0-9_.-]{0,49})?$")


class ReleaseError(Refusal):
    """A release that cannot be looked up, with the reason (a stable code and its text)."""


def release_dir(settings: Settings, name: str) -> Path:
    """The folder of release ``name``; the name is checked so it cannot leave the store."""
    if not RELEASE_NAME.match(name) or ".." in name:
        raise ReleaseError("release.bad_name", N_(
            "'%(release)s' is not a release name (lower-case letters, digits, '_', '.', '-', optionally '@version')"),
            release=name)
    return settings.release_store / name

