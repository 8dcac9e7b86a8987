"""`perpchain init | start | keys | status | query`: a node home, the node itself, keys, and
reads through the public RPC."""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import signal
import sys
from typing import Any

from node.cli.common import address, print_json, rpc_client
from node.core.crypto import SigningKey

DEVNET_LABELS = ("devnet/producer", "devnet/oracle", "devnet/bridge", "devnet/operator")


def cmd_init(args: argparse.Namespace) -> int:
    from node.app import init_home

    doc = json.loads(pathlib.Path(args.genesis).read_text())
    result = init_home(pathlib.Path(args.home), doc, overwrite=args.force, follower=args.follower)
    if args.json:
        print_json(
            {
                "home": str(result.home),
                "chain_id": result.chain_id,
                "follower": bool(args.follower),
                "genesis_hash": None if args.follower else result.genesis_hash,
                "state_root": result.state_root,
            }
        )
        return 0
    print(f"initialised {result.home} for chain {result.chain_id}")
    if args.follower:
        print(f"follower home; block 0 must carry state root {result.state_root}")
    else:
        print(f"genesis block {result.genesis_hash}, state root {result.state_root}")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    import trio

    from node.app import run_node
    from node.config import NodeConfig
    from node.log import setup_logging

    overrides: dict[str, Any] = {}
    if args.rpc_listen:
        overrides["rpc.listen"] = args.rpc_listen
    if args.metrics_listen:
        overrides["metrics.listen"] = args.metrics_listen
    if args.admin_listen:
        overrides["admin.listen"] = args.admin_listen
        overrides["admin.enabled"] = True
    if args.block_interval_ms:
        overrides["block_interval_ms"] = args.block_interval_ms
    if args.follow:
        overrides["follow_url"] = args.follow
    config = NodeConfig.load(args.home, overrides=overrides)
    setup_logging(config.log.level, config.log.format)

    runner: Any = run_node
    if args.abci:
        if args.follow:
            raise SystemExit("perpchain start: --abci and --follow exclude each other")
        from node.abci.node import run_abci_node

        runner = functools.partial(
            run_abci_node,
            abci_address=args.abci,
            comet_rpc=args.comet_rpc,
            snapshot_interval=args.snapshot_interval,
            retain_blocks=args.retain_blocks,
        )
    elif args.comet_rpc or args.snapshot_interval or args.retain_blocks:
        raise SystemExit(
            "perpchain start: --comet-rpc, --snapshot-interval and --retain-blocks need --abci"
        )
    if args.retain_blocks < 0:
        raise SystemExit(f"perpchain start: --retain-blocks {args.retain_blocks}: must be >= 0")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                nursery.start_soon(runner, config)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    if args.action == "new":
        seed = os.urandom(32)
        key = SigningKey(seed)
        print(json.dumps({"address": key.public_key.hex(), "seed": seed.hex()}))
        return 0
    labels = [*DEVNET_LABELS, *(f"devnet/trader/{i}" for i in range(args.traders))]
    rows = [(label, SigningKey.from_label(label).public_key.hex()) for label in labels]
    if args.json:
        print_json([{"label": label, "address": hex_key} for label, hex_key in rows])
        return 0
    for label, hex_key in rows:
        print(f"{label:22} {hex_key}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """node_status as JSON on stdout; a node in maintenance is also named on stderr (the window
    survives restarts: only `maintenance end` or a rollback closes it)."""
    status = rpc_client(args).call("node_status")
    print_json(status)
    window = status.get("maintenance") if isinstance(status, dict) else None
    if window and status.get("mode") == "maintenance":
        print(
            f"in maintenance since height {window['height']} (checkpoint {window['checkpoint']}, "
            f"epoch {window['epoch']}): {window['reason'] or '-'}; "
            "`perpchain maintenance end` resumes producing",
            file=sys.stderr,
        )
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    """Results are the RPC's JSON (with or without --json)."""
    client = rpc_client(args)
    if args.what == "account":
        result = client.call("perp_getAccount", address=address(args.arg).hex())
    elif args.what == "market":
        result = client.call("perp_getMarket", market=args.arg)
    elif args.what == "markets":
        result = client.call("perp_getMarkets")
    elif args.what == "book":
        result = client.call("perp_getOrderBook", market=args.arg, depth=str(args.depth))
    elif args.what == "block":
        result = client.call("chain_getBlock", height=args.arg, full_txs=True)
    elif args.what == "proof":
        result = client.call("chain_getProof", key=args.arg)
    else:
        result = client.call("chain_getReceipt", tx_hash=args.arg)
    print_json(result)
    return 0
