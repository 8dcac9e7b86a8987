"""The strict Ed25519 verifier (issue 20; docs/PROTOCOL.md, "Signatures (consensus rule)").

The small-order points are derived here with a separate pure-integer reference of the curve
(not from node.core.crypto's constants), in every encoding; the verifier must refuse each as a
key and as R, refuse S >= L and non-canonical R, reproduce libsodium's outcome on the 12
vectors of "Taming the many EdDSAs", and keys entering the chain (genesis, a tx's signer, a
deposit's account) must be checked with the same rule.
"""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from nacl.bindings import crypto_core_ed25519_is_valid_point, crypto_sign_open
from nacl.exceptions import BadSignatureError

from node.core import codec
from node.core.crypto import SigningKey, check_public_key, verify_signature
from node.core.errors import Reject
from node.core.genesis import GenesisError, parse_genesis
from node.core.txs import SignedTx, TxKind, Withdraw, _Envelope, decode_tx, sign_tx
from tests.core.harness import DEVNET, USD, Chain, devnet_doc

# ---- a reference of the curve (RFC 8032 section 5.1), pure integers, affine coordinates

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
IDENTITY = (0, 1)
Point = tuple[int, int]


def add(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    x3 = (x1 * y2 + x2 * y1) * pow(1 + t, P - 2, P) % P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, P - 2, P) % P
    return x3, y3


def mul(n: int, point: Point) -> Point:
    out = IDENTITY
    while n:
        if n & 1:
            out = add(out, point)
        point, n = add(point, point), n >> 1
    return out


def recover_x(y: int, sign: int) -> int | None:
    """x of the point with this y and x's sign (parity), or None: no such point."""
    xx = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(xx, (P + 3) // 8, P)
    if (x * x - xx) % P:
        x = x * SQRT_M1 % P
    if (x * x - xx) % P:
        return None
    if x == 0 and sign:
        return None
    return x if x & 1 == sign else P - x


def encode(point: Point, *, y_plus_p: bool = False, sign: int | None = None) -> bytes:
    x, y = point
    bit = x & 1 if sign is None else sign
    return ((y + (P if y_plus_p else 0)) | (bit << 255)).to_bytes(32, "little")


def decode(data: bytes) -> Point | None:
    """RFC 8032 decoding, strict: None for y >= p, no point, or a sign bit on x = 0."""
    n = int.from_bytes(data, "little")
    y, sign = n & ((1 << 255) - 1), n >> 255
    if y >= P:
        return None
    x = recover_x(y, sign)
    return None if x is None else (x, y)


def reference_key_ok(data: bytes) -> bool:
    point = decode(data)
    return point is not None and mul(8, point) != IDENTITY


B = (recover_x(4 * pow(5, P - 2, P) % P, 0), 4 * pow(5, P - 2, P) % P)


def _torsion() -> list[Point]:
    """The 8 points of order dividing 8: the multiples of one point of order 8."""
    # [L]P is the torsion part of a point P; it has order 8 for half of all points
    for y in range(2, 10**6):
        x = recover_x(y, 0)
        if x is None:
            continue
        q = mul(L, (x, y))  # the torsion part of a random point
        if mul(4, q) != IDENTITY:  # order 8
            return [mul(k, q) for k in range(8)]
    raise AssertionError("no point of order 8 found")


TORSION = _torsion()


def _small_order_encodings() -> list[bytes]:
    """Every 32-byte string whose y (sign aside, possibly + p) is that of a small-order point."""
    out = set()
    for x, y in TORSION:
        for sign in (0, 1):
            out.add(encode((x, y), sign=sign))
            if y + P < 2**255:
                out.add(encode((x, y), y_plus_p=True, sign=sign))
    return sorted(out)


SMALL_ORDER = _small_order_encodings()
FORGED_KEY = bytes([1]) + bytes(31)  # the identity point
FORGED_SIG = bytes([1]) + bytes(63)  # R = identity, S = 0


def test_the_reference_curve_is_the_curve() -> None:
    key = SigningKey.from_label("devnet/trader/0")
    assert mul(L, B) == IDENTITY and encode(B).hex().startswith("5866666666")
    assert decode(key.public_key) is not None
    assert len(set(TORSION)) == 8 and all(mul(8, t) == IDENTITY for t in TORSION)


def test_small_order_points_in_every_encoding_are_refused_as_keys() -> None:
    # 8 canonical encodings, the sign bit on x = 0 (two), y = p and y = p + 1 (two signs each)
    assert len(SMALL_ORDER) == 14
    assert FORGED_KEY in SMALL_ORDER
    signer = SigningKey.from_label("devnet/trader/1")
    message = b"withdraw everything"
    for key in SMALL_ORDER:
        assert not check_public_key(key), key.hex()
        for signature in (
            FORGED_SIG,
            key + bytes(32),
            encode(TORSION[1]) + bytes(32),
            signer.sign(message),
        ):
            assert not verify_signature(key, signature, message), key.hex()


def test_small_order_r_is_refused() -> None:
    key = SigningKey.from_label("devnet/trader/2")
    message = b"m"
    good = key.sign(message)
    for r in SMALL_ORDER:
        assert not verify_signature(key.public_key, r + good[32:], message), r.hex()


@pytest.mark.parametrize("message", [b"", b"withdraw", bytes(range(256)), b"\x00" * 1000])
def test_the_issue_20_forgery_fails(message: bytes) -> None:
    assert not check_public_key(FORGED_KEY)
    assert not verify_signature(FORGED_KEY, FORGED_SIG, message)
    with pytest.raises(BadSignatureError):  # libsodium alone refuses it too
        crypto_sign_open(FORGED_SIG + message, FORGED_KEY)


def test_the_forgery_did_pass_the_old_verifier() -> None:
    """Pins the cause of issue 20: `cryptography` (OpenSSL) accepts it for any message."""
    ed25519 = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ed25519")
    public = ed25519.Ed25519PublicKey.from_public_bytes(FORGED_KEY)
    for message in (b"a", b"withdraw 10^9"):
        public.verify(FORGED_SIG, message)  # raises InvalidSignature if refused


def test_check_public_key_matches_the_reference() -> None:
    rng = random.Random(20)
    samples = [rng.randbytes(32) for _ in range(300)]
    samples += [(2**255 - 1 - i).to_bytes(32, "little") for i in range(40)]  # y >= p and near
    samples += [(P + i).to_bytes(32, "little") for i in range(19)]  # non-canonical y = i
    samples += [((P + i) | 1 << 255).to_bytes(32, "little") for i in range(19)]
    samples += [SigningKey.from_label(f"k/{i}").public_key for i in range(20)]
    samples += SMALL_ORDER
    for key in samples:
        assert check_public_key(key) == reference_key_ok(key), key.hex()
    assert not check_public_key(b"\x05" * 31) and not check_public_key(bytes(33))


def test_honest_keys_pass_and_mixed_order_keys_pass_as_in_libsodium_verify() -> None:
    for i in range(20):
        key = SigningKey.from_label(f"devnet/trader/{i}").public_key
        assert check_public_key(key) and crypto_core_ed25519_is_valid_point(key)
    # A + T, T of order 8: not small order, so a valid key (only A's owner can sign for it);
    # libsodium's is_valid_point (prime-order subgroup check) would refuse it, its verify not.
    point = decode(SigningKey.from_label("devnet/trader/0").public_key)
    assert point is not None
    mixed = encode(add(point, TORSION[1]))
    assert check_public_key(mixed) and not crypto_core_ed25519_is_valid_point(mixed)


def test_s_at_or_above_l_is_refused() -> None:
    key = SigningKey.from_label("devnet/trader/3")
    message = b"pay 1"
    good = key.sign(message)
    assert verify_signature(key.public_key, good, message)
    s = int.from_bytes(good[32:], "little")
    for bad_s in (s + L, s + 2 * L, L, 2**256 - 1):
        bad = good[:32] + bad_s.to_bytes(32, "little")
        assert not verify_signature(key.public_key, bad, message), bad_s
        with pytest.raises(BadSignatureError):
            crypto_sign_open(bad + message, key.public_key)


def test_non_canonical_r_is_refused() -> None:
    """R with y >= p: the encodings y + p of the points with y < 19 (every one that decodes),
    with both signs; and a valid R with its y pushed past p (cannot equal the computed R)."""
    key = SigningKey.from_label("devnet/trader/4")
    message = b"m"
    good = key.sign(message)
    non_canonical = [
        ((P + y) | sign << 255).to_bytes(32, "little")
        for y in range(19)
        for sign in (0, 1)
        if recover_x(y, sign) is not None
    ]
    assert len(non_canonical) >= 6
    for r in non_canonical:
        assert not verify_signature(key.public_key, r + good[32:], message), r.hex()
        assert not verify_signature(key.public_key, r + bytes(32), message), r.hex()


def test_valid_signatures_verify_and_dev_keys_are_unchanged() -> None:
    doc = json.loads(DEVNET.read_text())
    for role in ("bridge", "oracle", "operator", "producer"):
        assert SigningKey.from_label(f"devnet/{role}").public_key.hex() == doc["keys"][role]
    for account in doc["accounts"][:5]:
        assert SigningKey.from_label(account["label"]).public_key.hex() == account["address"]
    # RFC 8032 section 7.1, TEST 1 (empty message)
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    key = SigningKey(seed)
    assert key.public_key.hex() == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )
    signature = key.sign(b"")
    assert signature.hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    assert verify_signature(key.public_key, signature, b"")
    assert not verify_signature(key.public_key, signature, b"x")
    assert not verify_signature(key.public_key, signature[:63] + b"\x00", b"")


# ---- "Taming the many EdDSAs" (Chalkias, Garillot, Nikolaenko, SSR 2020): the 12 vectors of
# github.com/novifinancial/ed25519-speccheck, cases.json (commit 6551933), and libsodium's
# column of its results.md: only vector 3 (mixed-order A and R, 0 < S < L) verifies.
# Fields: message, public key, signature (hex), libsodium's outcome, what the case tests.
TAMING_VECTORS = [
    (
        "8c93255d71dcab10e8f379c26200f3c7bd5f09d9bc3068d3ef4edeb4853022b6",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"
        "0000000000000000000000000000000000000000000000000000000000000000",
        False,
        "0: S = 0, small-order A and R",
    ),
    (
        "9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43"
        "a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
        False,
        "1: small-order A, mixed-order R",
    ),
    (
        "aebf3f2601a0c8c5d39cc7d8911642f740b78168218da8471772b35f9d35b9ab",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"
        "8c4bd45aecaca5b24fb97bc10ac27ac8751a7dfe1baff8b953ec9f5833ca260e",
        False,
        "2: mixed-order A, small-order R",
    ),
    (
        "9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79",
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "9046a64750444938de19f227bb80485e92b83fdb4b6506c160484c016cc1852f"
        "87909e14428a7a1d62e9f22f3d3ad7802db02eb2e688b6c52fcd6648a98bd009",
        True,
        "3: mixed-order A and R, passes cofactored and cofactorless",
    ),
    (
        "e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c",
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "160a1cb0dc9c0258cd0a7d23e94d8fa878bcb1925f2c64246b2dee1796bed512"
        "5ec6bc982a269b723e0668e540911a9a6a58921d6925e434ab10aa7940551a09",
        False,
        "4: mixed-order A and R, passes cofactored only",
    ),
    (
        "e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c",
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "21122a84e0b5fca4052f5b1235c80a537878b38f3142356b2c2384ebad4668b7"
        "e40bc836dac0f71076f9abe3a53f9c03c1ceeeddb658d0030494ace586687405",
        False,
        "5: mixed-order A, prime-order R, fails cofactored iff 8h is pre-reduced",
    ),
    (
        "85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40",
        "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623",
        "e96f66be976d82e60150baecff9906684aebb1ef181f67a7189ac78ea23b6c0e"
        "547f7690a0e2ddcd04d87dbc3490dc19b3b3052f7ff0538cb68afb369ba3a514",
        False,
        "6: S > L",
    ),
    (
        "85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40",
        "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623",
        "8ce5b96c8f26d0ab6c47958c9e68b937104cd36e13c33566acd2fe8d38aa1942"
        "7e71f98a473474f2f13f06f97c20d58cc3f54b8bd0d272f42b695dd7e89a8c22",
        False,
        "7: S >> L (high bits set)",
    ),
    (
        "9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
        "03be9678ac102edcd92b0210bb34d7428d12ffc5df5f37e359941266a4e35f0f",
        False,
        "8: non-canonical R, reduced for the hash",
    ),
    (
        "9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
        "ca8c5b64cd208982aa38d4936621a4775aa233aa0505711d8fdcfdaa943d4908",
        False,
        "9: non-canonical R, not reduced for the hash",
    ),
    (
        "e96b7021eb39c1a163b6da4e3093dcd3f21387da4cc4572be588fafae23c155b",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dc"
        "a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
        False,
        "10: non-canonical A, reduced for the hash",
    ),
    (
        "39a591f5321bbe07fd5a23dc2f39d025d74526615746727ceefd6e82ae65c06f",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dc"
        "a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
        False,
        "11: non-canonical A, not reduced for the hash",
    ),
]


@pytest.mark.parametrize(
    ("message", "public_key", "signature", "libsodium", "case"),
    TAMING_VECTORS,
    ids=[case.split(":")[0] for *_, case in TAMING_VECTORS],
)
def test_taming_the_many_eddsas_vectors(
    message: str, public_key: str, signature: str, libsodium: bool, case: str
) -> None:
    m, a, s = bytes.fromhex(message), bytes.fromhex(public_key), bytes.fromhex(signature)
    assert verify_signature(a, s, m) is libsodium, case
    try:  # the installed libsodium agrees on its own (our pre-checks change no outcome)
        crypto_sign_open(s + m, a)
        alone = True
    except BadSignatureError:
        alone = False
    assert alone is libsodium, case


def test_taming_vector_3_key_is_mixed_order_and_accepted() -> None:
    key = bytes.fromhex(TAMING_VECTORS[3][1])
    point = decode(key)
    assert point is not None and mul(8, point) != IDENTITY and mul(L, point) != IDENTITY
    assert check_public_key(key)


# ---- where keys enter the chain


@pytest.mark.parametrize("field", ["bridge", "producer", "account", "liquidator"])
def test_genesis_with_a_small_order_key_is_refused(field: str) -> None:
    doc = devnet_doc()
    bad = FORGED_KEY.hex() if field != "producer" else SMALL_ORDER[-1].hex()
    name = "address"
    if field == "account":
        doc["accounts"][0]["address"] = bad
    elif field == "liquidator":
        doc["liquidator"]["address"] = bad
    else:
        doc["keys"][field] = bad
        name = field
    with pytest.raises(GenesisError, match=f"{name} is not a valid Ed25519 public key"):
        parse_genesis(doc)
    parse_genesis(devnet_doc())  # the untouched document parses


def _forged_tx(body: Withdraw, signer: bytes = FORGED_KEY, signature: bytes = FORGED_SIG) -> bytes:
    """The raw bytes of a tx carrying any signer and signature (sign_tx needs a private key)."""
    envelope = _Envelope(
        kind=TxKind.WITHDRAW, body=codec.encode(body), signer=signer, signature=signature
    )
    return codec.encode(envelope)


def test_a_tx_from_a_small_order_signer_gets_bad_key_in_a_block() -> None:
    chain = Chain()
    before = chain.root()
    txs: list[SignedTx] = []
    for n, key in enumerate(SMALL_ORDER[:4] + [FORGED_KEY]):
        raw = _forged_tx(Withdraw(nonce=n, amount_quote=1_000 * USD), signer=key)
        txs.append(decode_tx(raw))
    receipts = chain.block(*txs)
    assert [r.code for r in receipts] == [Reject.BAD_KEY] * len(txs)
    assert all(r.events == () for r in receipts)
    # only the block's own bookkeeping changed: an empty block gives the same root
    empty = Chain()
    empty.block()
    assert chain.root() == empty.root() and chain.root() != before


def test_a_signer_off_the_curve_gets_bad_key_a_wrong_signature_bad_signature() -> None:
    chain = Chain()
    off_curve = next(
        k
        for k in (hashlib.sha256(b"%d" % i).digest() for i in range(100))
        if k[31] < 0x80 and not check_public_key(k) and int.from_bytes(k, "little") < P
    )
    stranger = SigningKey.from_label("devnet/trader/5")
    body = Withdraw(nonce=0, amount_quote=USD)
    wrong_sig = stranger.sign(b"something else")
    receipts = chain.block(
        decode_tx(_forged_tx(body, signer=off_curve, signature=wrong_sig)),
        decode_tx(_forged_tx(body, signer=stranger.public_key, signature=wrong_sig)),
    )
    assert [r.code for r in receipts] == [Reject.BAD_KEY, Reject.BAD_SIGNATURE]


def test_a_deposit_to_a_small_order_account_gets_bad_key() -> None:
    chain = Chain()
    empty = Chain()
    empty.block()
    receipts = chain.block(
        *(chain.deposit(key, 100 * USD, deposit_id=900 + n) for n, key in enumerate(SMALL_ORDER))
    )
    assert [r.code for r in receipts] == [Reject.BAD_KEY] * len(SMALL_ORDER)
    assert chain.root() == empty.root()  # no nonce consumed, nothing credited
    # the bridge's next deposit (nonce 0 again after the rejects) to a real account goes in
    chain.nonces[chain.key("devnet/bridge").public_key] = 0
    ok = chain.block(chain.deposit(chain.trader(0).public_key, 100 * USD, deposit_id=900))
    assert [r.code for r in ok] == [0]


def test_a_valid_tx_still_passes() -> None:
    chain = Chain()
    key = chain.trader(0)
    tx = sign_tx(Withdraw(nonce=0, amount_quote=USD), key, chain.chain_id)
    assert decode_tx(tx.raw) == tx
    assert [r.code for r in chain.block(tx)] == [0]
