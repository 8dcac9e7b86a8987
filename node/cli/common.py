"""What every command body shares: the expected-error type, JSON output, the RPC and admin
clients (one token-file rule), market references, signing keys, the offline store, and the
one progress printer. No argparse here: node/cli/parser.py builds the command line."""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
import time
from typing import Any

from node.client import RpcClient
from node.core.crypto import SigningKey

DEFAULT_RPC = "http://127.0.0.1:9545"
DEFAULT_ADMIN = "http://127.0.0.1:9546"
_ASCII_DIGITS = re.compile(r"[0-9]+")


class CliError(Exception):
    """An expected failure: one line on stderr, exit 1."""


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def rpc_client(args: argparse.Namespace) -> RpcClient:
    return RpcClient(args.rpc)


def token_file(args: argparse.Namespace) -> pathlib.Path:
    """`--token-file FILE`, else HOME/admin.token; a usage error names both."""
    if args.token_file:
        return pathlib.Path(args.token_file)
    if args.home:
        return pathlib.Path(args.home) / "admin.token"
    raise CliError("--admin needs --token-file FILE or --home DIR (for its admin.token)")


def admin_client(args: argparse.Namespace, *, timeout_s: float) -> RpcClient:
    """The running node's admin RPC (`--admin URL`) with its bearer token."""
    token = token_file(args).read_text().strip()
    return RpcClient(args.admin, token=token, timeout_s=timeout_s)


def signing_key(text: str) -> SigningKey:
    """`devnet/trader/0` (a label), or a 64-hex-digit seed, or @FILE holding the seed."""
    if text.startswith("@"):
        text = pathlib.Path(text[1:]).read_text().strip()
    if len(text) == 64:
        try:
            return SigningKey(bytes.fromhex(text))
        except ValueError:
            pass
    return SigningKey.from_label(text)


def address(text: str) -> bytes:
    """An account: 64 hex digits, or anything `signing_key` takes (its public key)."""
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    return signing_key(text).public_key


def market_id(client: RpcClient, market: str) -> int:
    """`--market`: an id (ASCII digits) as is, or a symbol resolved by the node's
    perp_getMarket (an unknown symbol is the node's not-found error)."""
    if _ASCII_DIGITS.fullmatch(market):
        return int(market)
    return int(client.call("perp_getMarket", market=market)["market_id"])


def open_store(home: str, *, verify_on_open: bool = True, locked: str | None = None) -> Any:
    """The node's store, opened directly (offline commands): the node must be stopped.
    Verify and rollback open a damaged store too (verify_on_open=False): they diagnose and
    repair it. `locked`: the one line to print instead when a running node holds the store."""
    from node.app import DATA_DIR
    from node.store import StoreLocked, VersionedStore

    path = pathlib.Path(home) / DATA_DIR
    if not path.is_dir():
        raise CliError(f"no store at {path} (is {home} a node home?)")
    try:
        return VersionedStore.open(path, verify_on_open=verify_on_open)
    except StoreLocked:
        if locked is not None:
            raise CliError(locked) from None
        raise CliError(
            f"the store at {path} is in use: stop the node first (this command reads the store "
            "directly)"
        ) from None


class Progress:
    """`verify: 150/1000 blocks` (or `snapshot: exported 1,200 pairs` when the total is not
    known) on stderr, at most every half second; `done()` ends the line if one was shown."""

    def __init__(self, label: str, unit: str) -> None:
        self.label = label
        self.unit = unit
        self.last = time.monotonic()  # nothing shown for work done within half a second
        self.shown = False

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last < 0.5 and done != total:
            return
        self.last = now
        self.shown = True
        count = f"{done:,}" if total is None else f"{done:,}/{total:,}"
        print(f"\r{self.label}: {count} {self.unit}", end="", file=sys.stderr, flush=True)
        if done == total:
            self.done()

    def done(self) -> None:
        if self.shown:
            self.shown = False
            print(file=sys.stderr, flush=True)
