"""Domain-separated SHA-256 and Ed25519. Imports node.core.errors and `cryptography`.

Every hash and signature carries a domain tag (`perp/<domain>/v1\\0`) so bytes hashed or signed
for one purpose can never be replayed as another; signatures also bind the chain id.
"""

from __future__ import annotations

import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

HASH_BYTES = 32
_sha256 = hashlib.sha256


def domain(name: str) -> bytes:
    """The prefix for hashes and signatures of one purpose, e.g. domain("tx")."""
    if not name or "\x00" in name or "/" in name:
        raise ValueError(f"bad domain name {name!r}")
    return b"perp/" + name.encode("ascii") + b"/v1\x00"


def tagged_hash(domain_prefix: bytes, *parts: bytes) -> bytes:
    """sha256(domain_prefix || parts...), 32 bytes."""
    digest = _sha256(domain_prefix)
    for part in parts:
        digest.update(part)
    return digest.digest()


def signing_bytes(domain_prefix: bytes, chain_id: bytes, body: bytes) -> bytes:
    """What is signed: domain tag, length-prefixed chain id, canonical body."""
    if len(chain_id) > 255:
        raise ValueError("chain id longer than 255 bytes")
    return domain_prefix + bytes([len(chain_id)]) + chain_id + body


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True iff `signature` is a valid Ed25519 signature of `message` by `public_key`."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


class SigningKey:
    """An Ed25519 private key (key material stays out of the state machine: shell use only)."""

    __slots__ = ("_key", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key: bytes = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @staticmethod
    def label_seed(label: str) -> bytes:
        """The seed of a deterministic devnet/test key: sha256('perp/devkey/v1' || label)."""
        return tagged_hash(domain("devkey"), label.encode())

    @classmethod
    def from_label(cls, label: str) -> SigningKey:
        """Deterministic key for devnets and tests (see label_seed)."""
        return cls(cls.label_seed(label))

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)
