"""Was a file released by Enclave? ``enclave exports verify`` and ``enclave audit trace`` ask here.

It reads the review service's database (its releases and their signed manifests) and checks each
manifest's signature with the service's public key. It needs only the models, the signing key and
the store's hash, not the service itself (its checks and web app), so that the CLI answers within
its budget of a second; a watermark is read (PIL or pypdf) only when the hash is not known.
"""

from __future__ import annotations

from sqlalchemy import select

from ..settings import Settings
from . import signing
from .models import Database, Release, db_url
from .release import read_watermark
from .store import sha256


def verify_file(settings: Settings, data: bytes) -> dict:
    """Was this file released, from which requests, by whom, and do the manifests' signatures hold?

    The same bytes can be released by several requests (a table submitted again in a later one):
    every release of them is reported, oldest first, each with its own state. A file changed since
    its release is found by its watermark instead, where its format carries one. ``valid`` holds
    when at least one release is unrevoked, of these very bytes, with a valid signature.
    """
    database = Database(db_url(settings))
    digest = sha256(data)
    public = signing.load_public_key(settings)
    try:
        with database.snapshot() as s:
            found = list(s.scalars(select(Release).where(Release.sha256 == digest).order_by(Release.released_at)))
            by = "hash"
            if not found:
                mark = read_watermark(data)
                found = [rel] if mark and (rel := s.get(Release, mark)) is not None else []
                by = "watermark"
            releases = [verified(public, rel, digest) for rel in found]
    finally:
        database.engine.dispose()
    return {
        "released": bool(releases),
        "found_by": by if releases else None,
        "sha256": digest,
        "valid": any(r["valid"] for r in releases),
        "releases": releases,
    }


def verified(public, rel: Release, digest: str) -> dict:
    """One release of a file whose SHA-256 is ``digest``: is it of these bytes, signed with the key
    ``public`` and unrevoked?"""
    hash_matches = rel.manifest["file"]["sha256"] == digest
    signature_valid = signing.verify(public, rel.manifest, rel.signature)
    revoked = rel.revoked_at is not None
    return {
        "release_id": rel.id,
        "hash_matches": hash_matches,
        "signature_valid": signature_valid,
        "revoked": revoked,
        "revoked_at": rel.revoked_at.isoformat(timespec="seconds") if rel.revoked_at else None,
        "valid": hash_matches and signature_valid and not revoked,
        "manifest": rel.manifest,
    }
