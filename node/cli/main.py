"""`perpchain`: init | start | status | keys | tx | query | snapshot | checkpoint | verify |
rollback | forks | report. Expected errors print one line and exit non-zero (2 usage, 1 failure,
3 `verify` found the state invalid); tracebacks are for bugs only."""

from __future__ import annotations

import argparse
import json
import pathlib
import signal
import sys
import time
from typing import Any

from node.client import RpcCallError, RpcClient, RpcUnavailable
from node.core.crypto import SigningKey
from node.core.records import OrderKind, Side, TimeInForce
from node.core.txs import CancelAll, CancelOrder, Deposit, PlaceOrder, Withdraw, sign_tx
from node.store.errors import StoreError, StoreLocked

DEFAULT_RPC = "http://127.0.0.1:9545"
DEFAULT_ADMIN = "http://127.0.0.1:9546"


class CliError(Exception):
    pass


def _key(text: str) -> SigningKey:
    """`devnet/trader/0` (a label), or a 64-hex-digit seed, or @FILE holding the seed."""
    if text.startswith("@"):
        text = pathlib.Path(text[1:]).read_text().strip()
    if len(text) == 64:
        try:
            return SigningKey(bytes.fromhex(text))
        except ValueError:
            pass
    return SigningKey.from_label(text)


def cmd_init(args: argparse.Namespace) -> int:
    from node.app import init_home

    doc = json.loads(pathlib.Path(args.genesis).read_text())
    result = init_home(pathlib.Path(args.home), doc, overwrite=args.force, follower=args.follower)
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

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                nursery.start_soon(run_node, config)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)
    return 0


def _client(args: argparse.Namespace) -> RpcClient:
    return RpcClient(args.rpc)


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2))


def cmd_status(args: argparse.Namespace) -> int:
    _print(_client(args).call("node_status"))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    if args.action == "new":
        import os

        seed = os.urandom(32)
        key = SigningKey(seed)
        print(json.dumps({"address": key.public_key.hex(), "seed": seed.hex()}))
        return 0
    labels = ["devnet/producer", "devnet/oracle", "devnet/bridge", "devnet/operator"]
    labels += [f"devnet/trader/{i}" for i in range(args.traders)]
    for label in labels:
        print(f"{label:22} {SigningKey.from_label(label).public_key.hex()}")
    return 0


def _next_nonce(client: RpcClient, key: SigningKey) -> int:
    return int(client.call("perp_getNonce", address=key.public_key.hex())["next_nonce"])


def _submit(args: argparse.Namespace, body: Any, key: SigningKey) -> int:
    client = _client(args)
    status = client.call("node_status")
    tx = sign_tx(body, key, status["chain_id"].encode())
    tx_hash = client.call("tx_submit", tx=tx.raw.hex())["tx_hash"]
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        result = client.call("tx_status", tx_hash=tx_hash)
        if result["status"] in ("committed", "rejected"):
            _print(result)
            return 0 if result["status"] == "committed" else 1
        time.sleep(0.1)
    print(f"submitted {tx_hash}; not committed within {args.wait} s")
    return 1


def cmd_tx(args: argparse.Namespace) -> int:
    key = _key(args.key)
    nonce = _next_nonce(_client(args), key)
    if args.kind == "deposit":
        body: Any = Deposit(
            nonce=nonce,
            account=bytes.fromhex(args.account),
            amount_quote=args.amount,
            deposit_id=args.deposit_id,
        )
    elif args.kind == "withdraw":
        body = Withdraw(nonce=nonce, amount_quote=args.amount)
    elif args.kind == "order":
        body = PlaceOrder(
            nonce=nonce,
            market_id=args.market,
            side=Side[args.side.upper()],
            kind=OrderKind[args.type.upper()],
            tif=TimeInForce[args.tif.upper()],
            price_quote=args.price,
            size_atoms=args.size,
            reduce_only=int(args.reduce_only),
            trigger_price_quote=args.trigger,
            client_id=args.client_id or time.time_ns() % (1 << 62),
        )
    elif args.kind == "cancel":
        if args.all:
            body = CancelAll(nonce=nonce, market_id=args.market or 0)
        else:
            body = CancelOrder(nonce=nonce, order_id=args.order_id, client_id=args.client_id)
    else:
        raise CliError(f"unknown tx kind {args.kind}")
    return _submit(args, body, key)


def cmd_query(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.what == "account":
        address = args.arg if len(args.arg) == 64 else _key(args.arg).public_key.hex()
        _print(client.call("perp_getAccount", address=address))
    elif args.what == "market":
        _print(client.call("perp_getMarket", market=args.arg))
    elif args.what == "markets":
        _print(client.call("perp_getMarkets"))
    elif args.what == "book":
        _print(client.call("perp_getOrderBook", market=args.arg, depth=str(args.depth)))
    elif args.what == "block":
        _print(client.call("chain_getBlock", height=args.arg, full_txs=True))
    elif args.what == "proof":
        _print(client.call("chain_getProof", key=args.arg))
    elif args.what == "receipt":
        _print(client.call("chain_getReceipt", tx_hash=args.arg))
    return 0


def _open_store(home: str, *, verify_on_open: bool = True, locked: str | None = None) -> Any:
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


def cmd_forks(args: argparse.Namespace) -> int:
    with _open_store(args.home) as store:
        forks = store.forks()
        if not forks:
            print("no forks: nothing was ever rolled back")
        for fork in forks:
            reason = f": {fork.reason}" if fork.reason else ""
            print(
                f"fork {fork.fork_id}: heights {fork.to_height + 1}..{fork.from_height} reverted, "
                f"restored height {fork.to_height}{reason}"
            )
    return 0


class _Progress:
    """`verify: 150/1000 blocks` on stderr, at most every half second."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last >= 0.5 or done == total:
            self.last = now
            end = "\n" if done == total else ""
            print(f"\r{self.what}: {done}/{total} blocks", end=end, file=sys.stderr, flush=True)


def cmd_verify(args: argparse.Namespace) -> int:
    from node.app import load_genesis
    from node.ops.verify import verify_chain

    genesis = load_genesis(pathlib.Path(args.home))
    with _open_store(args.home, verify_on_open=False) as store:
        try:
            report = verify_chain(
                store,
                genesis,
                from_height=args.from_height,
                from_checkpoint=args.from_checkpoint,
                progress=None if args.json else _Progress("verify"),
            )
        except KeyError as error:
            raise CliError(error.args[0] if error.args else str(error)) from None
    if args.json:
        _print(report.to_json())
    else:
        print(report.text())
        if not report.ok:
            print(_restore_hint(args.home, report))
    return 0 if report.ok else 3


def _restore_hint(home: str, report: Any) -> str:
    from node.ops.restore import RestoreRefused, restore_command

    with _open_store(home, verify_on_open=False) as store:
        try:
            return f"to restore: {restore_command(store, report, home)[0]}"
        except RestoreRefused as refused:
            return str(refused)


def cmd_rollback(args: argparse.Namespace) -> int:
    from node.app import OPERATOR_KEY_FILE, PRODUCER_KEY_FILE, load_genesis, load_key
    from node.ops.rollback import apply_rollback, complete_recovery, plan_rollback

    home = pathlib.Path(args.home)
    genesis = load_genesis(home)
    with _open_store(args.home, verify_on_open=False) as store:
        if args.repair:
            repaired = store.repair_flat()
            print(f"restored {len(repaired)} flat rows from the history; root {store.root().hex()}")
            return 0
        producer = load_key(home, PRODUCER_KEY_FILE, "PERPCHAIN_PRODUCER_KEY")
        operator = load_key(home, OPERATOR_KEY_FILE, "PERPCHAIN_OPERATOR_KEY")
        now_ms = time.time_ns() // 1_000_000
        if args.resume:
            if producer is None or operator is None:
                raise CliError("the producer and operator keys are needed (home or environment)")
            outcome = complete_recovery(
                store, genesis, producer=producer, operator=operator, time_ms=now_ms
            )
            print(outcome.text() if outcome else "no rollback is waiting for its recovery block")
            return 0
        plan = plan_rollback(store, to_height=args.to_height, to_checkpoint=args.to_checkpoint)
        if args.dry_run:
            if args.json:
                _print(plan.to_json())
            else:
                print(plan.text())
            return 0
        if producer is None or operator is None:
            raise CliError("the producer and operator keys are needed (home or environment)")
        outcome = apply_rollback(
            store,
            genesis,
            plan,
            producer=producer,
            operator=operator,
            time_ms=now_ms,
            reason=args.reason,
        )
    if args.json:
        _print(outcome.to_json())
    else:
        print(outcome.text())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from node.ops.incident import compensation_report

    with _open_store(args.home) as store:
        report = compensation_report(store, args.fork, revalued=args.revalued)
    if args.json:
        document = json.dumps(report.to_json(), indent=2, sort_keys=True)
        pathlib.Path(args.json).write_text(document + "\n")
    if args.csv:
        pathlib.Path(args.csv).write_text(report.to_csv())
    print(report.text())
    return 0


class _ProgressLine:
    """`snapshot: N pairs` on stderr, at most once a second, for long exports and imports."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.last = time.monotonic()
        self.shown = False

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last >= 1.0:
            self.last = now
            self.shown = True
            print(f"\rsnapshot: {self.verb} {done:,} pairs", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.shown:
            print(file=sys.stderr)


def cmd_snapshot(args: argparse.Namespace) -> int:
    from node.app import DATA_DIR, load_genesis
    from node.ops.snapshot import export_snapshot, import_snapshot
    from node.store import VersionedStore

    home = pathlib.Path(args.home)
    if args.action == "export":
        if not (home / DATA_DIR).is_dir():
            raise CliError(f"{home} holds no store ({DATA_DIR}/ is missing)")
        try:
            store = VersionedStore.open(home / DATA_DIR)
        except StoreLocked:
            raise CliError(
                f"the store in {home} is in use (is the node running?): stop the node first"
            ) from None
        progress = _ProgressLine("exported")
        with store:
            info = export_snapshot(store, args.height, args.out, progress)
        progress.done()
        print(
            f"exported height {info.height} of chain {info.chain_id.decode()}: {info.pairs:,} "
            f"pairs in {info.chunks} chunks, {info.file_bytes:,} bytes, state root "
            f"{info.state_root.hex()} -> {args.out}"
        )
        return 0
    if not (home / "genesis.json").exists():
        raise CliError(
            f"{home} has no genesis.json: create the home with `perpchain init --genesis FILE "
            f"--home {home}`, remove {home / DATA_DIR}, then import"
        )
    progress = _ProgressLine("imported")
    info = import_snapshot(
        args.file, home / DATA_DIR, genesis=load_genesis(home), progress=progress
    )
    progress.done()
    print(
        f"imported height {info.height} of chain {info.chain_id.decode()}: {info.pairs:,} pairs, "
        f"state root {info.state_root.hex()}, block {info.block_hash.hex()} into {home / DATA_DIR}"
    )
    return 0


def _checkpoint_client(args: argparse.Namespace) -> RpcClient | None:
    """The admin RPC client when --admin is given (running node), else None (open the store)."""
    if not args.admin:
        if not args.home:
            raise CliError("give --home DIR (node stopped) or --admin URL (running node)")
        return None
    token_file = args.token_file or (
        str(pathlib.Path(args.home) / "admin.token") if args.home else None
    )
    if token_file is None:
        raise CliError("--admin needs --token-file FILE (the node home's admin.token)")
    token = pathlib.Path(token_file).read_text().strip()
    return RpcClient(args.admin, token=token, timeout_s=30)


def _checkpoint_line(info: dict[str, Any]) -> str:
    return f"checkpoint {info['name']} at height {info['height']}, state root {info['state_root']}"


def _created_text(created_ms: str | None) -> str:
    if created_ms is None:
        return "-"
    import datetime

    moment = datetime.datetime.fromtimestamp(int(created_ms) / 1000, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_checkpoint(args: argparse.Namespace) -> int:
    """create | list | delete, through the admin RPC (--admin) or on the stopped node's store."""
    client = _checkpoint_client(args)
    if client is not None:
        if args.action == "create":
            params: dict[str, Any] = {"name": args.name, "reason": args.reason}
            if args.height is not None:
                params["height"] = str(args.height)
            result: Any = client.call("admin_checkpointCreate", **params)
        elif args.action == "list":
            result = client.call("admin_checkpointList")["checkpoints"]
        else:
            result = client.call("admin_checkpointDelete", name=args.name)
    else:
        from node.ops import checkpoints

        locked = (
            f"the node is running (it holds {args.home}/data): use --admin URL --token-file "
            "FILE (admin RPC) instead"
        )
        with _open_store(args.home, locked=locked) as store:
            try:
                if args.action == "create":
                    result = checkpoints.create_checkpoint(
                        store,
                        args.name,
                        created_ms=time.time_ns() // 1_000_000,
                        height=args.height,
                        reason=args.reason,
                    ).to_json()
                elif args.action == "list":
                    result = [info.to_json() for info in checkpoints.list_checkpoints(store)]
                else:
                    result = checkpoints.delete_checkpoint(store, args.name).to_json()
            except checkpoints.CheckpointError as error:
                raise CliError(str(error)) from None
    if args.json:
        print(json.dumps(result, sort_keys=True))
    elif args.action == "create":
        print(f"created {_checkpoint_line(result)}")
    elif args.action == "delete":
        print(f"deleted {_checkpoint_line(result)}")
    elif not result:
        print("no checkpoints")
    else:
        rows = [
            (c["name"], c["height"], c["state_root"], _created_text(c["created_ms"]), c["reason"])
            for c in result
        ]
        header = ("NAME", "HEIGHT", "STATE ROOT", "CREATED (UTC)", "REASON")
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(4)]
        for row in [header, *rows]:
            cells = [str(cell).ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
            print("  ".join([*cells, row[4]]).rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perpchain", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", help="create a node home from a genesis file")
    p.add_argument("--genesis", required=True)
    p.add_argument("--home", required=True)
    p.add_argument("--force", action="store_true", help="reuse an existing home directory")
    p.add_argument(
        "--follower", action="store_true", help="a follower home: no keys, block 0 from the source"
    )
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("start", help="run the node (SIGINT/SIGTERM stop it cleanly)")
    p.add_argument("--home", required=True)
    p.add_argument("--rpc-listen")
    p.add_argument("--metrics-listen")
    p.add_argument("--admin-listen")
    p.add_argument("--block-interval-ms", type=int)
    p.add_argument("--follow", metavar="URL", help="follow (re-execute and verify) this node")
    p.set_defaults(func=cmd_start)
    for name, func in (("status", cmd_status),):
        p = sub.add_parser(name, help="the node's status")
        p.add_argument("--rpc", default=DEFAULT_RPC)
        p.set_defaults(func=func)
    p = sub.add_parser("keys", help="new key, or list the deterministic devnet keys")
    p.add_argument("action", choices=["new", "list"])
    p.add_argument("--traders", type=int, default=16)
    p.set_defaults(func=cmd_keys)
    p = sub.add_parser("tx", help="build, sign, submit a tx and wait for its receipt")
    p.add_argument("kind", choices=["deposit", "withdraw", "order", "cancel"])
    p.add_argument("--key", required=True, help="devnet label, hex seed, or @FILE")
    p.add_argument("--rpc", default=DEFAULT_RPC)
    p.add_argument("--wait", type=float, default=10.0)
    p.add_argument("--account", default="")
    p.add_argument("--amount", type=int, default=0, help="quote atoms")
    p.add_argument("--deposit-id", type=int, default=0)
    p.add_argument("--market", type=int, default=1)
    p.add_argument("--side", choices=["buy", "sell"], default="buy")
    p.add_argument(
        "--type", choices=["limit", "market", "stop_loss", "take_profit"], default="limit"
    )
    p.add_argument("--tif", choices=["gtc", "ioc", "post_only"], default="gtc")
    p.add_argument("--price", type=int, default=0, help="quote atoms per base unit")
    p.add_argument("--size", type=int, default=0, help="size atoms")
    p.add_argument("--trigger", type=int, default=0)
    p.add_argument("--reduce-only", action="store_true")
    p.add_argument("--client-id", type=int, default=0)
    p.add_argument("--order-id", type=int, default=0)
    p.add_argument("--all", action="store_true", help="cancel: every open order")
    p.set_defaults(func=cmd_tx)
    p = sub.add_parser("query", help="read chain state through the RPC")
    p.add_argument(
        "what", choices=["account", "market", "markets", "book", "block", "proof", "receipt"]
    )
    p.add_argument("arg", nargs="?", default="")
    p.add_argument("--depth", type=int, default=10)
    p.add_argument("--rpc", default=DEFAULT_RPC)
    p.set_defaults(func=cmd_query)
    p = sub.add_parser("forks", help="list the rollbacks archived in the store (node stopped)")
    p.add_argument("--home", required=True)
    p.set_defaults(func=cmd_forks)
    p = sub.add_parser("report", help="offline reports over the store (node stopped)")
    reports = p.add_subparsers(dest="report", required=True)
    p = reports.add_parser(
        "compensation", help="per account, what the reverted blocks of a fork did (refund list)"
    )
    p.add_argument("--home", required=True)
    p.add_argument("--fork", type=int, required=True, help="fork id (see `perpchain forks`)")
    p.add_argument("--json", help="write the report as JSON to this file")
    p.add_argument("--csv", help="write one row per account as CSV to this file")
    p.add_argument(
        "--revalued",
        action="store_true",
        help="also list accounts the blocks did not touch whose equity differs (oracle moves)",
    )
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("verify", help="replay the stored blocks and check every state root")
    p.add_argument("--home", required=True)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--from-checkpoint", metavar="NAME")
    group.add_argument("--from-height", type=int, metavar="H")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser(
        "rollback", help="restore an earlier height (node stopped; admin_rollback when running)"
    )
    p.add_argument("--home", required=True)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--to-height", type=int, metavar="H")
    group.add_argument("--to-checkpoint", metavar="NAME")
    group.add_argument(
        "--resume", action="store_true", help="commit the recovery block of an interrupted rollback"
    )
    group.add_argument(
        "--repair",
        action="store_true",
        help="no rollback: restore flat rows written around the writer from the history",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would be undone")
    p.add_argument("--reason", default="operator rollback")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rollback)
    p = sub.add_parser("snapshot", help="export or import the state of one height (node stopped)")
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("export", help="write the state at a height to a snapshot file")
    q.add_argument("--home", required=True)
    q.add_argument("--height", type=int, help="default: the head")
    q.add_argument("--out", required=True)
    q.set_defaults(func=cmd_snapshot)
    q = actions.add_parser(
        "import", help="create HOME/data from a snapshot (HOME from `init`, data/ removed)"
    )
    q.add_argument("file")
    q.add_argument("--home", required=True)
    q.set_defaults(func=cmd_snapshot)

    p = sub.add_parser(
        "checkpoint",
        help="named pins that pruning never removes: create | list | delete "
        "(--home on a stopped node, --admin on a running one)",
    )
    actions = p.add_subparsers(dest="action", required=True)
    for action in ("create", "list", "delete"):
        p = actions.add_parser(action, help=f"{action} checkpoints")
        if action != "list":
            p.add_argument("name", help="1 to 64 characters from A-Z a-z 0-9 . _ -")
        if action == "create":
            p.add_argument("--height", type=int, help="the height to pin (default: the head)")
            p.add_argument("--reason", default="", help="free text, up to 256 characters")
        p.add_argument("--home", help="node home: open its store directly (node stopped)")
        p.add_argument("--admin", metavar="URL", help="the running node's admin RPC listener")
        p.add_argument("--token-file", help="admin bearer token file (default: HOME/admin.token)")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(func=cmd_checkpoint)

    p = sub.add_parser(
        "maintenance", help="stop producing for maintenance / verify and resume (admin RPC)"
    )
    actions = p.add_subparsers(dest="action", required=True)
    for action in ("begin", "job", "end"):
        q = actions.add_parser(action)
        if action == "begin":
            q.add_argument("--reason", required=True)
        elif action == "job":
            q.add_argument("kind", choices=["compact"], help="run by the writer")
        else:
            q.add_argument("--expect-root", help="resume only if the head root is this (hex)")
        q.add_argument("--admin", metavar="URL", default=DEFAULT_ADMIN)
        q.add_argument("--home", help="node home (its admin.token)")
        q.add_argument("--token-file", help="admin bearer token file (default: HOME/admin.token)")
        q.set_defaults(func=cmd_maintenance)
    return parser


def cmd_maintenance(args: argparse.Namespace) -> int:
    """maintenance begin | end through the running node's admin RPC."""
    if not args.token_file and not args.home:
        raise CliError("give --home DIR (for its admin.token) or --token-file FILE")
    token_file = pathlib.Path(args.token_file or pathlib.Path(args.home) / "admin.token")
    client = RpcClient(args.admin, token=token_file.read_text().strip(), timeout_s=600)
    if args.action == "begin":
        result = client.call("admin_maintenanceBegin", reason=args.reason)
        print(
            f"maintenance: producing stopped at height {result['height']}, markets CANCEL_ONLY, "
            f"checkpoint {result['checkpoint']} (root {result['state_root']}), "
            f"fencing epoch {result['epoch']}"
        )
        return 0
    if args.action == "job":
        result = client.call("admin_maintenanceJob", kind=args.kind)
        print(f"maintenance job {result['job']} done in {result['seconds']} s")
        return 0
    params = {"expect_root": args.expect_root} if args.expect_root else {}
    try:
        result = client.call("admin_maintenanceEnd", **params)
    except RpcCallError as error:
        print(f"perpchain: {error.message}", file=sys.stderr)
        for line in (error.data or {}).get("differences", []):
            print(f"  {line}", file=sys.stderr)
        if isinstance(error.data, dict) and error.data.get("restore"):
            print(f"to restore: {error.data['restore']}", file=sys.stderr)
        return 3
    print(
        f"maintenance ended: verified, producing from height {result['height']} "
        f"(root {result['state_root']}); markets stay CANCEL_ONLY until reopened: "
        "admin_setMarketMode POST_ONLY, then OPEN"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    """The command; an error that a trio nursery wrapped alone in an ExceptionGroup (the node's
    startup errors: a token file with a wrong mode, a missing key) comes out unwrapped, so it
    is reported as one line like any other expected error."""
    try:
        return int(args.func(args))
    except BaseExceptionGroup as group:
        leaves: list[BaseException] = []
        stack: list[BaseException] = [group]
        while stack:
            current = stack.pop()
            if isinstance(current, BaseExceptionGroup):
                stack.extend(current.exceptions)
            else:
                leaves.append(current)
        if len(leaves) != 1:
            raise
        raise leaves[0] from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except RpcUnavailable as error:
        print(f"perpchain: {error} (is the node running? --rpc)", file=sys.stderr)
    except RpcCallError as error:
        print(
            f"perpchain: RPC error {error.code}: {error.message} {error.data or ''}",
            file=sys.stderr,
        )
    except (CliError, ValueError, OSError, StoreError) as error:
        print(f"perpchain: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
