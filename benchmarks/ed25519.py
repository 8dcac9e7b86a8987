"""`scripts/bench ed25519`: Ed25519 verifies per second on one core, by library (issue 20).

The same pre-signed (key, message, signature) triples, messages the size of a signed order
(~130 bytes), verified in a loop by
- `cryptography` (OpenSSL), the way node/core/crypto.py verified until issue 20 (the key parsed
  per call, as each tx carries its signer);
- libsodium through PyNaCl alone (`crypto_sign_open`);
- `node.core.crypto.verify_signature`: the strict pre-checks in pure integers, then libsodium
  (what admission and followers run);
and `check_public_key` (the pure-integer point check validate_tx runs on a failed signature's
signer and on a deposit's account). Best of `--rounds` rounds of `--seconds` each; one process,
one thread. Needs the bench extra (`cryptography`).

    ./scripts/bench ed25519 [--quick] [--json] [--seconds S] [--rounds R]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable

from nacl.bindings import crypto_sign_open

from node.core.crypto import SigningKey, check_public_key, verify_signature

TRIPLES = 256


def _triples() -> list[tuple[bytes, bytes, bytes]]:
    out = []
    for i in range(TRIPLES):
        key = SigningKey(hashlib.sha256(b"bench-ed25519/%d" % i).digest())
        message = hashlib.sha256(b"m%d" % i).digest() * 4  # 128 bytes, about a signed order
        out.append((key.public_key, message, key.sign(message)))
    return out


def _rate(run: Callable[[], None], seconds: float, rounds: int) -> int:
    """Calls of `run` (each over every triple) per second: the best round."""
    best = 0.0
    for _ in range(rounds):
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            run()
            calls += TRIPLES
        best = max(best, calls / elapsed)
    return int(best)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure (best kept)")
    parser.add_argument("--quick", action="store_true", help="0.2 s x 1 round (smoke)")
    parser.add_argument("--json", action="store_true", help="also print one JSON object")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 0.2, 1

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    triples = _triples()

    def openssl() -> None:
        for key, message, signature in triples:
            Ed25519PublicKey.from_public_bytes(key).verify(signature, message)

    def libsodium() -> None:
        for key, message, signature in triples:
            crypto_sign_open(signature + message, key)

    def ours() -> None:
        for key, message, signature in triples:
            if not verify_signature(key, signature, message):
                raise AssertionError("a valid signature failed")

    def key_checks() -> None:
        for key, _, _ in triples:
            if not check_public_key(key):
                raise AssertionError("a valid key failed")

    figures = {
        "cryptography_verify_per_s": _rate(openssl, args.seconds, args.rounds),
        "libsodium_verify_per_s": _rate(libsodium, args.seconds, args.rounds),
        "verify_signature_per_s": _rate(ours, args.seconds, args.rounds),
        "check_public_key_per_s": _rate(key_checks, args.seconds, args.rounds),
    }
    ratio = figures["libsodium_verify_per_s"] / figures["cryptography_verify_per_s"]
    import cryptography
    import nacl

    print(
        f"python {platform.python_version()}, cryptography {cryptography.__version__}, "
        f"pynacl {nacl.__version__}, {os.cpu_count()} cpus; best of {args.rounds} x "
        f"{args.seconds:g} s, one core"
    )
    for name, value in figures.items():
        print(f"  {name:28} {value:>9,}")
    print(f"  libsodium / cryptography     {ratio:9.2f}x")
    if args.json:
        print(json.dumps({**figures, "libsodium_over_cryptography": round(ratio, 2)}))


if __name__ == "__main__":
    main()
