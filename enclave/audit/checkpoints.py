"""Checkpoints: signed tree heads of the audit log, and the Ed25519 key that signs them.

A checkpoint commits to the first ``tree_size`` records twice over: by the Merkle root of their
entries (``root_hash``, so one record's inclusion can be proved) and by the hash chain's value
after the last of them (``chain_hash``, so an export that starts in the middle can still be checked
against it). It is signed over its canonical encoding with a ``log`` label, so that the signature
means nothing anywhere else.

The private key is created once, by the audit service, at ``$ENCLAVE_HOME/secrets/audit-signing.key``
(mode 0600, hub side only, never mounted into a sandbox); the public key is written next to it.
Whoever checks the log needs only the public key — keep a copy (or its key id) apart from the
host, so that someone who could replace both the log and the key on the host is still caught.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..files import atomic_write
from ..settings import Settings
from .records import canonical

LOG_ID = "enclave-audit-v1"
KEY_NAME = "audit-signing.key"
PUBLIC_NAME = "audit-signing.pub"


@dataclass(frozen=True)
class Checkpoint:
    tree_size: int
    time: str
    root_hash: str  # hex
    chain_hash: str  # hex
    key_id: str
    signature: str  # base64

    def signed_bytes(self) -> bytes:
        return canonical({"log": LOG_ID, "tree_size": self.tree_size, "time": self.time,
                          "root_hash": self.root_hash, "chain_hash": self.chain_hash, "key_id": self.key_id})

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, value) -> "Checkpoint":
        """From a checkpoint line (the second copy, an export); ValueError names what is wrong."""
        if not isinstance(value, dict) or set(value) != set(cls.__dataclass_fields__):
            raise ValueError(f"a checkpoint has exactly the fields {', '.join(cls.__dataclass_fields__)}")
        if not isinstance(value["tree_size"], int) or isinstance(value["tree_size"], bool) or value["tree_size"] < 1:
            raise ValueError("a checkpoint's tree_size must be a positive integer")
        if not all(isinstance(value[k], str) for k in ("time", "root_hash", "chain_hash", "key_id", "signature")):
            raise ValueError("a checkpoint's time, hashes, key id and signature are strings")
        return cls(**value)


def key_paths(settings: Settings) -> tuple[Path, Path]:
    return settings.secrets_dir / KEY_NAME, settings.secrets_dir / PUBLIC_NAME


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def create_key(settings: Settings) -> Ed25519PrivateKey:
    """Create the signing key; refuses to replace one that exists (it is created once)."""
    private_path, public_path = key_paths(settings)
    settings.secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # O_EXCL: of two racing first starts, one fails here instead of silently replacing the other's key.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    atomic_write(public_path, public_pem(key.public_key()))
    return key


def load_key(settings: Settings) -> Ed25519PrivateKey:
    return serialization.load_pem_private_key(key_paths(settings)[0].read_bytes(), password=None)


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


def sign(key: Ed25519PrivateKey, tree_size: int, time: str, root_hash: bytes, chain_hash: bytes) -> Checkpoint:
    unsigned = Checkpoint(tree_size, time, root_hash.hex(), chain_hash.hex(), key_id(key.public_key()), "")
    signature = base64.b64encode(key.sign(unsigned.signed_bytes())).decode()
    return Checkpoint(**{**unsigned.to_json(), "signature": signature})


def read_copy(path: Path) -> tuple[list[Checkpoint], list[str]]:
    """The checkpoints' second copy (JSON Lines): the checkpoints, and a problem per bad line."""
    found, problems = [], []
    if not path.exists():
        return found, problems
    for number, line in enumerate(path.read_bytes().split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            found.append(Checkpoint.from_json(json.loads(line)))
        except ValueError as exc:
            problems.append(f"{path.name} line {number}: not a checkpoint ({exc})")
    return found, problems


def append_to_copy(path: Path, checkpoint: Checkpoint) -> None:
    """Append one line and flush it to disk (the copy is written after the database's row)."""
    line = json.dumps(checkpoint.to_json(), sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def signature_problem(public: Ed25519PublicKey, checkpoint: Checkpoint) -> str | None:
    """Why ``checkpoint`` is not a valid signature by ``public``, or None when it is."""
    if checkpoint.key_id != key_id(public):
        return (f"signed with another key (key id {checkpoint.key_id}; the audit public key's id is"
                f" {key_id(public)})")
    try:
        public.verify(base64.b64decode(checkpoint.signature, validate=True), checkpoint.signed_bytes())
    except (InvalidSignature, ValueError):
        return "its signature does not verify with the audit public key (forged or altered)"
    return None
