"""The `perpchain` command line: argparse only, no command bodies (those are in home.py,
tx.py, ops.py and admin.py). Each flag name has one meaning in every command that takes it:
`--json` prints JSON (never a file path: files are `--json-out`, `--csv`, `--out`), `--market`
is a market symbol or id, `--home` a node home, `--rpc` the public RPC, `--admin` the admin
RPC, `--token-file` the admin bearer token (default HOME/admin.token)."""

from __future__ import annotations

import argparse

from node.cli import admin, home, ops, tx
from node.cli.common import DEFAULT_ADMIN, DEFAULT_RPC

DESCRIPTION = "perpchain: a perpetual-futures app-chain node and its operator tools"
MARKET_HELP = "market symbol (BTC-USD-PERP) or id"
_OPTIONAL, _REQUIRED = "optional", "required"


def common(
    *,
    rpc: bool = False,
    home: str | None = None,
    admin: bool = False,
    admin_default: str | None = None,
    json: bool = True,
) -> argparse.ArgumentParser:
    """The parent parser of the flags commands share, each spelled and explained once.
    `home`: None (not taken), "optional" or "required"; `admin` takes --admin (default
    `admin_default`; without one a command may open the stopped node's store instead) and
    --token-file; `json`: --json, taken by every command that prints a result."""
    parent = argparse.ArgumentParser(add_help=False)
    if rpc:
        parent.add_argument("--rpc", default=DEFAULT_RPC, metavar="URL", help="the public RPC")
    if home is not None:
        parent.add_argument(
            "--home", required=home == _REQUIRED, metavar="DIR", help="the node home"
        )
    if admin:
        parent.add_argument(
            "--admin",
            metavar="URL",
            default=admin_default,
            help="the running node's admin RPC listener",
        )
        parent.add_argument(
            "--token-file", metavar="FILE", help="admin bearer token (default: HOME/admin.token)"
        )
    if json:
        parent.add_argument("--json", action="store_true", help="print JSON")
    return parent


def _add_tx_kinds(tx_parser: argparse.ArgumentParser) -> None:
    parent = common(rpc=True)
    parent.add_argument("--key", required=True, help="signer: devnet label, hex seed, or @FILE")
    parent.add_argument("--wait", type=float, default=10.0, metavar="S", help="receipt wait")
    kinds = tx_parser.add_subparsers(dest="kind", required=True, metavar="KIND")

    def kind(name: str, help_text: str) -> argparse.ArgumentParser:
        p = kinds.add_parser(name, parents=[parent], help=help_text, description=help_text)
        p.set_defaults(func=tx.cmd_tx)
        return p

    p = kind("deposit", "credit an account (signed by the bridge key)")
    p.add_argument("--account", required=True, help="address (64 hex) or devnet label")
    p.add_argument("--amount", type=int, required=True, help="quote atoms")
    p.add_argument("--deposit-id", type=int, required=True, help="bridge id (idempotency)")
    p = kind("withdraw", "withdraw collateral")
    p.add_argument("--amount", type=int, required=True, help="quote atoms")
    p = kind("order", "place an order")
    p.add_argument("--market", required=True, help=MARKET_HELP)
    p.add_argument("--side", choices=["buy", "sell"], required=True)
    p.add_argument(
        "--type", choices=["limit", "market", "stop_loss", "take_profit"], default="limit"
    )
    p.add_argument("--tif", choices=["gtc", "ioc", "post_only"], default="gtc")
    p.add_argument(
        "--price", type=int, default=0, help="quote atoms per base unit (market: worst, 0 = any)"
    )
    p.add_argument("--size", type=int, required=True, help="size atoms")
    p.add_argument("--trigger", type=int, default=0, help="stop_loss/take_profit trigger price")
    p.add_argument("--reduce-only", action="store_true")
    p.add_argument("--client-id", type=int, help="your id for the order (default: from the clock)")
    p = kind("cancel", "cancel one order (--order-id or --client-id), or all of them (--all)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--order-id", type=int)
    which.add_argument("--client-id", type=int)
    which.add_argument("--all", action="store_true", help="every open order, as tx cancel-all")
    p.add_argument("--market", help=f"with --all: only this market ({MARKET_HELP})")
    p = kind("cancel-all", "cancel every open order, in every market unless --market is given")
    p.add_argument("--market", help=f"only this market ({MARKET_HELP})")
    p = kind("oracle", "publish oracle prices (signed by the oracle key)")
    p.add_argument(
        "--market-price",
        type=tx._market_price,
        action="append",
        required=True,
        metavar="MARKET=PRICE",
        help="quote atoms per base unit; repeat for more markets",
    )
    p.add_argument("--time-ms", type=int, help="price time (default: now)")
    p = kind("market-mode", "set a market's mode (operator key)")
    p.add_argument("--market", required=True, help=MARKET_HELP)
    p.add_argument("--mode", choices=["open", "post_only", "cancel_only", "halted"], required=True)
    p = kind("market-params", "set a market's margins and funding cap (operator key)")
    p.add_argument("--market", required=True, help=MARKET_HELP)
    for flag in ("--initial-margin-ppm", "--maintenance-margin-ppm", "--max-funding-rate-ppm"):
        p.add_argument(flag, type=int, help="default: the market's current value")
    kind("recovery", "cancel resting orders, markets CANCEL_ONLY (operator key, after a rollback)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perpchain", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "init", help="create a node home from a genesis file", parents=[common(home=_REQUIRED)]
    )
    p.add_argument("--genesis", required=True, metavar="FILE")
    p.add_argument("--force", action="store_true", help="reuse an existing home directory")
    p.add_argument(
        "--follower", action="store_true", help="a follower home: no keys, block 0 from the source"
    )
    p.set_defaults(func=home.cmd_init)
    p = sub.add_parser(
        "start",
        help="run the node (SIGINT/SIGTERM stop it cleanly)",
        parents=[common(home=_REQUIRED, json=False)],
    )
    p.add_argument("--rpc-listen", metavar="HOST:PORT")
    p.add_argument("--metrics-listen", metavar="HOST:PORT")
    p.add_argument("--admin-listen", metavar="HOST:PORT")
    p.add_argument("--block-interval-ms", type=int)
    p.add_argument("--follow", metavar="URL", help="follow (re-execute and verify) this node")
    p.set_defaults(func=home.cmd_start)
    p = sub.add_parser("status", help="the node's status", parents=[common(rpc=True)])
    p.set_defaults(func=home.cmd_status)
    p = sub.add_parser(
        "keys", help="new key, or list the deterministic devnet keys", parents=[common()]
    )
    p.add_argument("action", choices=["new", "list"])
    p.add_argument("--traders", type=int, default=16)
    p.set_defaults(func=home.cmd_keys)
    p = sub.add_parser("tx", help="build, sign, submit a tx of one kind and wait for its receipt")
    _add_tx_kinds(p)
    p = sub.add_parser("query", help="read chain state through the RPC", parents=[common(rpc=True)])
    p.add_argument(
        "what", choices=["account", "market", "markets", "book", "block", "proof", "receipt"]
    )
    p.add_argument("arg", nargs="?", default="")
    p.add_argument("--depth", type=int, default=10)
    p.set_defaults(func=home.cmd_query)

    p = sub.add_parser(
        "forks",
        help="list the rollbacks archived in the store (node stopped)",
        parents=[common(home=_REQUIRED)],
    )
    p.set_defaults(func=ops.cmd_forks)
    p = sub.add_parser("report", help="offline reports over the store (node stopped)")
    reports = p.add_subparsers(dest="report", required=True)
    p = reports.add_parser(
        "compensation",
        help="per account, what the reverted blocks of a fork did (refund list)",
        parents=[common(home=_REQUIRED)],
    )
    p.add_argument("--fork", type=int, required=True, help="fork id (see `perpchain forks`)")
    p.add_argument("--json-out", metavar="FILE", help="also write the report as JSON to FILE")
    p.add_argument("--csv", metavar="FILE", help="also write one row per account as CSV to FILE")
    p.add_argument(
        "--revalued",
        action="store_true",
        help="also list accounts the blocks did not touch whose equity differs (oracle moves)",
    )
    p.set_defaults(func=ops.cmd_report)
    p = sub.add_parser(
        "verify",
        help="replay the stored blocks and check every state root",
        parents=[common(home=_REQUIRED)],
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument("--from-checkpoint", metavar="NAME")
    group.add_argument("--from-height", type=int, metavar="H")
    p.set_defaults(func=ops.cmd_verify)
    p = sub.add_parser(
        "rollback",
        help="restore an earlier height (node stopped; admin_rollback when running)",
        parents=[common(home=_REQUIRED)],
    )
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
    p.set_defaults(func=ops.cmd_rollback)
    p = sub.add_parser("snapshot", help="export or import the state of one height (node stopped)")
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser(
        "export",
        help="write the state at a height to a snapshot file",
        parents=[common(home=_REQUIRED)],
    )
    q.add_argument("--height", type=int, help="default: the head")
    q.add_argument("--out", required=True, metavar="FILE")
    q.set_defaults(func=ops.cmd_snapshot)
    q = actions.add_parser(
        "import",
        help="create HOME/data from a snapshot (HOME from `init`, data/ removed)",
        parents=[common(home=_REQUIRED)],
    )
    q.add_argument("file")
    q.set_defaults(func=ops.cmd_snapshot)

    p = sub.add_parser(
        "checkpoint",
        help="named pins that pruning never removes: create | list | delete "
        "(--home on a stopped node, --admin on a running one)",
    )
    actions = p.add_subparsers(dest="action", required=True)
    parent = common(home=_OPTIONAL, admin=True)
    for action in ("create", "list", "delete"):
        q = actions.add_parser(action, help=f"{action} checkpoints", parents=[parent])
        if action != "list":
            q.add_argument("name", help="1 to 64 characters from A-Z a-z 0-9 . _ -")
        if action == "create":
            q.add_argument("--height", type=int, help="the height to pin (default: the head)")
            q.add_argument("--reason", default="", help="free text, up to 256 characters")
        q.set_defaults(func=admin.cmd_checkpoint)

    p = sub.add_parser(
        "maintenance", help="stop producing for maintenance / verify and resume (admin RPC)"
    )
    actions = p.add_subparsers(dest="action", required=True)
    parent = common(home=_OPTIONAL, admin=True, admin_default=DEFAULT_ADMIN)
    for action in ("begin", "job", "end"):
        q = actions.add_parser(action, parents=[parent])
        if action == "begin":
            q.add_argument("--reason", required=True)
        elif action == "job":
            q.add_argument("kind", choices=["compact"], help="run by the writer")
        else:
            q.add_argument("--expect-root", help="resume only if the head root is this (hex)")
        q.set_defaults(func=admin.cmd_maintenance)
    return parser


def leaf_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every runnable command's parser with its words (`("tx", "order")`), for tests and help."""
    found: list[tuple[tuple[str, ...], argparse.ArgumentParser]] = []
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [(path, parser)]
    for action in subs:
        for name, child in action.choices.items():
            found += leaf_parsers(child, (*path, name))
    return found
