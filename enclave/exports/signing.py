"""Ed25519 signatures over release manifests; the private key exists only on the hub side.

The key is created on first use in ``$ENCLAVE_HOME/secrets`` (mode 0600). Manifests are signed in
a canonical JSON form (sorted keys, no spaces, UTF-8), so anyone holding the public key can check
a manifest without this code.
"""

from __future__ import annotations

import base64
import hashlib
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..files import atomic_write
from ..settings import Settings

KEY_NAME = "exports-signing.key"
PUBLIC_NAME = "exports-signing.pub"


def canonical(manifest: dict) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_or_create_key(settings: Settings) -> Ed25519PrivateKey:
    settings.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = settings.secrets_dir / KEY_NAME
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        atomic_write(path, pem)
        pub = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (settings.secrets_dir / PUBLIC_NAME).write_bytes(pub)
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def load_public_key(settings: Settings) -> Ed25519PublicKey:
    return serialization.load_pem_public_key((settings.secrets_dir / PUBLIC_NAME).read_bytes())


def sign(key: Ed25519PrivateKey, manifest: dict) -> str:
    return base64.b64encode(key.sign(canonical(manifest))).decode()


def verify(public: Ed25519PublicKey, manifest: dict, signature: str) -> bool:
    try:
        public.verify(base64.b64decode(signature), canonical(manifest))
    except (InvalidSignature, ValueError):
        return False
    return True
