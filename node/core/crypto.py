"""Domain-separated SHA-256 and strict Ed25519. Imports `nacl` (PyNaCl: libsodium) only.

Every hash and signature carries a domain tag (`perp/<domain>/v1\\0`) so bytes hashed or signed
for one purpose can never be replayed as another; signatures also bind the chain id.

One strict verifier (a consensus rule: docs/PROTOCOL.md, "Signatures (consensus rule)"):
admission, the producer and followers all reach `verify_signature` through `txs.validate_tx`
or `blocks.verify_*`. A signature verifies iff

1. the public key passes `check_public_key`: 32 bytes, canonical (y < p), a point of the curve,
   not one of the 8 small-order points (whatever its encoding); the point decoding itself is
   left to libsodium here (it refuses a y with no x), the rest is checked first;
2. S < L (canonical scalar) and R is neither non-canonical (y >= p) nor a small-order point;
3. libsodium's `crypto_sign_open` (PyNaCl) accepts it: it applies the same refusals and then
   checks [S]B = R + [k]A cofactorless, comparing R byte for byte with the canonical encoding.

The refusals of rules 1-2 are checked here in pure integer arithmetic, so they hold whatever
libsodium build is installed; libsodium then decodes A and R and decides the equation. Why:
`cryptography` (OpenSSL) accepts the identity as a key, and then `01 00..00 | 00..00` verifies
for every message (issue 20; tests/core/test_ed25519.py). The figures behind the library
choice: docs/PERFORMANCE.md, "Ed25519 verification" (`./scripts/bench ed25519`).
"""

from __future__ import annotations

import hashlib

from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError
from nacl.exceptions import ValueError as NaclValueError

HASH_BYTES = 32
_sha256 = hashlib.sha256

# Curve25519 in twisted Edwards form (RFC 8032 section 5.1): -x^2 + y^2 = 1 + d x^2 y^2 mod p.
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493  # order of the base point
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_Y_MASK = (1 << 255) - 1
# y of the 8 points of small order (the torsion subgroup): identity (0, 1), (0, -1) of order 2,
# (+-sqrt(-1), 0) of order 4, and the four points of order 8 (two y values, each with +-x).
# Every encoding whose y (sign bit aside) is one of these, or one of them + p (the non-canonical
# y = p, p + 1), names a small-order point; the second set is refused earlier as non-canonical.
_Y_ORDER_8 = 0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7
SMALL_ORDER_Y = (1, _P - 1, 0, _Y_ORDER_8, _P - _Y_ORDER_8)


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


def _is_curve_y(y: int, x_negative: bool) -> bool:
    """True iff a point (x, y) with x of the given sign lies on the curve (RFC 8032 5.1.3).
    x = 0 with the sign bit set is a non-canonical encoding (only y = +-1 have x = 0)."""
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    vxx = v * x * x % _P
    if vxx != u and vxx != (_P - u) % _P:
        return False  # u / v is not a square: no point has this y
    return not (x == 0 and x_negative)


def _canonical_not_small(encoding: bytes) -> bool:
    """The cheap half of a point check: y < p and y not that of a small-order point."""
    y = int.from_bytes(encoding, "little") & _Y_MASK
    return y < _P and y not in SMALL_ORDER_Y


def check_public_key(key: bytes) -> bool:
    """True iff `key` may hold an account or sign: 32 bytes, canonical encoding (y < p, no
    sign bit on x = 0), a point of the curve, and not of small order. The 8 small-order points
    are refused in every encoding, canonical or not, so no one can sign "for" such a key.
    Points of mixed order (a torsion part on a prime-order point) pass, as in libsodium's
    verify: only their owner can sign for them. Pure integers (one modular power, ~0.1 ms in
    CPython: txs.validate_tx runs it on the signer only when the signature already failed)."""
    if type(key) is not bytes or len(key) != 32 or not _canonical_not_small(key):
        return False
    return _is_curve_y(int.from_bytes(key, "little") & _Y_MASK, key[31] >> 7 == 1)


def verify_signature(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True iff `signature` is a valid strict Ed25519 signature of `message` by `public_key`
    (the rules in the module docstring; tests/core/test_ed25519.py pins each). True implies
    check_public_key(public_key): libsodium refuses a key that is not a point of the curve, the
    rest of that check runs here first."""
    if len(public_key) != 32 or len(signature) != 64 or not _canonical_not_small(public_key):
        return False
    if int.from_bytes(signature[32:], "little") >= _L:
        return False  # S not reduced: S and S + L would both verify (malleability)
    if not _canonical_not_small(signature[:32]):
        return False  # a non-canonical R (it could never equal the computed one) or small order
    try:
        crypto_sign_open(signature + message, public_key)
    except (BadSignatureError, NaclValueError):
        return False
    return True


class SigningKey:
    """An Ed25519 private key (key material stays out of the state machine: shell use only).

    The seed -> key pair derivation is RFC 8032's (the same as `cryptography`'s
    Ed25519PrivateKey.from_private_bytes), so label-derived devnet keys are unchanged."""

    __slots__ = ("_secret", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        public_key, self._secret = crypto_sign_seed_keypair(seed)
        self.public_key: bytes = public_key

    @staticmethod
    def label_seed(label: str) -> bytes:
        """The seed of a deterministic devnet/test key: sha256('perp/devkey/v1' || label)."""
        return tagged_hash(domain("devkey"), label.encode())

    @classmethod
    def from_label(cls, label: str) -> SigningKey:
        """Deterministic key for devnets and tests (see label_seed)."""
        return cls(cls.label_seed(label))

    def sign(self, message: bytes) -> bytes:
        return crypto_sign(message, self._secret)[:64]
