"""The `perpchain` command line: argparse only, no command bodies (those are in home.py,
tx.py, ops.py and admin.py). Each flag name has one meaning in every command that takes it:
`--json` prints JSON (never a file path: files are `--json-out`, `--csv`, `--out`), `--market`
is a market symbol or id, `--home` a node home, `--rpc` the public RPC, `--admin` the admin
RPC, `--token-file` the admin bearer token (default HOME/admin.token).

Every parser has a description and an epilog of runnable examples (kept raw by
RawDescriptionHelpFormatter), and every option a help text with its unit where it has one
(tests/cli/test_cli_help.py walks them all)."""

from __future__ import annotations

import argparse
from typing import Any

from node.cli import admin, home, ops, tx
from node.cli.common import DEFAULT_ADMIN, DEFAULT_RPC

DESCRIPTION = "perpchain: a perpetual-futures app-chain node and its operator tools"
MARKET_HELP = "market symbol (BTC-USD-PERP) or id (1)"
UNITS = """\
units: prices in quote atoms per whole base unit (10^6 quote atoms = 1 USD: 60,000 USD is
60000000000); sizes in size atoms (10^8 per base unit: 0.001 BTC is 100000); amounts in
quote atoms; margins and rates in ppm (10^6 = 100%: 50000 is 5%); times in ms; heights are
block numbers. A market is named by symbol or id (BTC-USD-PERP or 1)."""
_OPTIONAL, _REQUIRED = "optional", "required"
_RAW = argparse.RawDescriptionHelpFormatter


def examples(*lines: str) -> str:
    """An epilog: `examples:` and one command a line, each runnable as written."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def subparser(
    group: Any,
    name: str,
    *,
    help: str,
    description: str,
    epilog: str,
    parents: list[argparse.ArgumentParser] | None = None,
) -> argparse.ArgumentParser:
    """One subcommand: its one-line `help` (in the parent's list), a `description` and an
    `epilog` of examples, shown with their line breaks."""
    parser: argparse.ArgumentParser = group.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        parents=parents or [],
        formatter_class=_RAW,
    )
    return parser


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
        parent.add_argument(
            "--rpc",
            default=DEFAULT_RPC,
            metavar="URL",
            help="the node's public JSON-RPC URL (default: %(default)s)",
        )
    if home is not None:
        parent.add_argument(
            "--home",
            required=home == _REQUIRED,
            metavar="DIR",
            help="the node home directory (made by `perpchain init`), e.g. /tmp/node",
        )
    if admin:
        where = (
            "default: %(default)s"
            if admin_default
            else "e.g. http://127.0.0.1:9546; without it, --home opens the stopped node's store"
        )
        parent.add_argument(
            "--admin",
            metavar="URL",
            default=admin_default,
            help=f"the running node's admin RPC listener ({where})",
        )
        parent.add_argument(
            "--token-file",
            metavar="FILE",
            help="file holding the admin bearer token (default: HOME/admin.token)",
        )
    if json:
        parent.add_argument("--json", action="store_true", help="print the result as JSON")
    return parent


def _add_tx_kinds(tx_parser: argparse.ArgumentParser) -> None:
    parent = common(rpc=True)
    parent.add_argument(
        "--key",
        required=True,
        help="the signer: a devnet label (devnet/trader/5), a seed of 64 hex digits, or @FILE "
        "(a file holding that seed, e.g. the seed printed by `perpchain keys new`)",
    )
    parent.add_argument(
        "--wait",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds to wait for the receipt (default: %(default)s); if the tx is not "
        "committed by then, its hash is printed and the exit code is 1",
    )
    kinds = tx_parser.add_subparsers(dest="kind", required=True, metavar="KIND")

    def kind(name: str, help_text: str, more: str, *lines: str) -> argparse.ArgumentParser:
        first = f"{help_text[0].upper()}{help_text[1:]}."
        description = f"{first}\n{more}\n\n{UNITS}" if more else f"{first}\n\n{UNITS}"
        p = subparser(
            kinds,
            name,
            help=help_text,
            description=description,
            epilog=examples(*lines),
            parents=[parent],
        )
        p.set_defaults(func=tx.cmd_tx)
        return p

    p = kind(
        "deposit",
        "credit an account with collateral (signed by the bridge key)",
        "A deposit id is credited once: a second deposit with the same id is rejected.",
        "perpchain tx deposit --key devnet/bridge --account devnet/trader/5 "
        "--amount 1000000000 --deposit-id 42",
    )
    p.add_argument(
        "--account",
        required=True,
        help="the account credited: an address (64 hex digits) or a devnet label",
    )
    p.add_argument(
        "--amount",
        type=int,
        required=True,
        metavar="QUOTE_ATOMS",
        help="quote atoms credited (10^6 = 1 USD: 1000000000 is 1,000 USD)",
    )
    p.add_argument(
        "--deposit-id",
        type=int,
        required=True,
        metavar="ID",
        help="the bridge's integer id of this deposit (idempotency: credited once)",
    )
    p = kind(
        "withdraw",
        "withdraw collateral from the signer's account",
        "",
        "perpchain tx withdraw --key devnet/trader/5 --amount 500000000",
    )
    p.add_argument(
        "--amount",
        type=int,
        required=True,
        metavar="QUOTE_ATOMS",
        help="quote atoms withdrawn (10^6 = 1 USD: 500000000 is 500 USD)",
    )
    p = kind(
        "order",
        "place an order for the signer's account",
        "A price is a multiple of the market's tick, a size of its step (perpchain query "
        "market M).",
        "perpchain tx order --key devnet/trader/5 --market BTC-USD-PERP --side buy "
        "--price 60000000000 --size 100000",
        "perpchain tx order --key devnet/trader/5 --market 1 --side sell --type market "
        "--tif ioc --size 100000",
    )
    p.add_argument("--market", required=True, help=MARKET_HELP)
    p.add_argument("--side", choices=["buy", "sell"], required=True, help="buy or sell")
    p.add_argument(
        "--type",
        choices=["limit", "market", "stop_loss", "take_profit"],
        default="limit",
        help="limit; market (immediate, up to --price); stop_loss or take_profit (conditional: "
        "a reduce-only market order when the price reaches --trigger) (default: %(default)s)",
    )
    p.add_argument(
        "--tif",
        choices=["gtc", "ioc", "post_only"],
        default="gtc",
        help="time in force: gtc rests until filled or cancelled, ioc fills what it can now "
        "and cancels the rest, post_only only rests (never takes) (default: %(default)s)",
    )
    p.add_argument(
        "--price",
        type=int,
        default=0,
        metavar="QUOTE_ATOMS",
        help="quote atoms per whole base unit (60,000 USD = 60000000000): a limit order's price, "
        "within the market's band around the oracle; for market, stop_loss and take_profit "
        "orders the worst price accepted, 0 = any (a fill still stays inside the band) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--size",
        type=int,
        required=True,
        metavar="SIZE_ATOMS",
        help="size atoms (10^8 per base unit: 0.001 BTC = 100000)",
    )
    p.add_argument(
        "--trigger",
        type=int,
        default=0,
        metavar="QUOTE_ATOMS",
        help="stop_loss/take_profit trigger price, quote atoms per whole base unit "
        "(default: %(default)s, for the other types)",
    )
    p.add_argument(
        "--reduce-only",
        action="store_true",
        help="the order may only reduce the signer's position, never open or grow one",
    )
    p.add_argument(
        "--client-id",
        type=int,
        metavar="ID",
        help="your integer id for the order, for `tx cancel --client-id` (default: from the clock)",
    )
    p = kind(
        "cancel",
        "cancel one order (--order-id or --client-id), or all of them (--all)",
        "",
        "perpchain tx cancel --key devnet/trader/5 --client-id 7",
        "perpchain tx cancel --key devnet/trader/5 --all --market BTC-USD-PERP",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--order-id", type=int, metavar="ID", help="the node's id of the order (in its receipt)"
    )
    which.add_argument(
        "--client-id", type=int, metavar="ID", help="the --client-id the order was placed with"
    )
    which.add_argument("--all", action="store_true", help="every open order, as tx cancel-all")
    p.add_argument("--market", help=f"with --all: only this market ({MARKET_HELP})")
    p = kind(
        "cancel-all",
        "cancel every open order, in every market unless --market is given",
        "",
        "perpchain tx cancel-all --key devnet/trader/5",
        "perpchain tx cancel-all --key devnet/trader/5 --market 1",
    )
    p.add_argument("--market", help=f"only this market ({MARKET_HELP})")
    p = kind(
        "oracle",
        "publish oracle prices (signed by the oracle key)",
        "",
        "perpchain tx oracle --key devnet/oracle --market-price BTC-USD-PERP=60000000000 "
        "--market-price ETH-USD-PERP=3000000000",
    )
    p.add_argument(
        "--market-price",
        type=tx._market_price,
        action="append",
        required=True,
        metavar="MARKET=PRICE",
        help="a market (symbol or id) and its price in quote atoms per whole base unit "
        "(BTC-USD-PERP=60000000000); repeat for more markets",
    )
    p.add_argument(
        "--time-ms",
        type=int,
        metavar="MS",
        help="the prices' time, ms since the Unix epoch (default: now)",
    )
    p = kind(
        "market-mode",
        "set a market's mode (operator key)",
        "",
        "perpchain tx market-mode --key devnet/operator --market BTC-USD-PERP --mode post_only",
    )
    p.add_argument("--market", required=True, help=MARKET_HELP)
    p.add_argument(
        "--mode",
        choices=["open", "post_only", "cancel_only", "halted"],
        required=True,
        help="open (trading), post_only (post-only limit orders and cancels), cancel_only "
        "(cancels only), halted (operator txs only)",
    )
    p = kind(
        "market-params",
        "set a market's margins and funding cap (operator key)",
        "A parameter not given keeps the market's current value (read through the RPC).",
        "perpchain tx market-params --key devnet/operator --market BTC-USD-PERP "
        "--initial-margin-ppm 100000 --maintenance-margin-ppm 60000",
    )
    p.add_argument("--market", required=True, help=MARKET_HELP)
    for flag, what in (
        ("--initial-margin-ppm", "initial margin, ppm of the notional (100000 = 10%%)"),
        ("--maintenance-margin-ppm", "maintenance margin, ppm of the notional (50000 = 5%%)"),
        (
            "--max-funding-rate-ppm",
            "the cap on the funding rate per funding period (genesis funding_period_ms), ppm "
            "(1000 = 0.1%%); applies from the next funding tick",
        ),
    ):
        p.add_argument(
            flag, type=int, metavar="PPM", help=f"{what}; default: the market's current value"
        )
    kind(
        "recovery",
        "cancel resting orders, markets CANCEL_ONLY (operator key, after a rollback)",
        "",
        "perpchain tx recovery --key devnet/operator",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perpchain",
        description=f"{DESCRIPTION}.\n`perpchain COMMAND --help` explains a command.\n\n{UNITS}",
        epilog=examples(
            "perpchain init --genesis genesis/devnet.json --home /tmp/node",
            "perpchain start --home /tmp/node",
            "perpchain query market BTC-USD-PERP",
        ),
        formatter_class=_RAW,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = subparser(
        sub,
        "init",
        help="create a node home from a genesis file",
        description="Create a node home (config, keys, data/ with block 0) from a genesis "
        "file.\nA follower home holds no keys; its block 0 comes from the node it follows.",
        epilog=examples(
            "perpchain init --genesis genesis/devnet.json --home /tmp/node",
            "perpchain init --follower --genesis genesis/devnet.json --home /tmp/follower",
        ),
        parents=[common(home=_REQUIRED)],
    )
    p.add_argument("--genesis", required=True, metavar="FILE", help="the chain's genesis JSON file")
    p.add_argument("--force", action="store_true", help="reuse an existing home directory")
    p.add_argument(
        "--follower", action="store_true", help="a follower home: no keys, block 0 from the source"
    )
    p.set_defaults(func=home.cmd_init)
    p = subparser(
        sub,
        "start",
        help="run the node (SIGINT/SIGTERM stop it cleanly)",
        description="Run the node of a home: produce blocks, or with --follow re-execute and "
        "verify\nanother node's. The flags override the home's config; SIGINT/SIGTERM stop "
        "it cleanly.",
        epilog=examples(
            "perpchain start --home /tmp/node",
            "perpchain start --home /tmp/node --admin-listen 127.0.0.1:9546 "
            "--block-interval-ms 100",
            "perpchain start --home /tmp/follower --follow http://127.0.0.1:9545 "
            "--rpc-listen 127.0.0.1:9645 --metrics-listen 127.0.0.1:9660",
            "perpchain start --home /tmp/val0 --abci tcp://127.0.0.1:26658 "
            "--comet-rpc http://127.0.0.1:26657",
        ),
        parents=[common(home=_REQUIRED, json=False)],
    )
    p.add_argument(
        "--rpc-listen",
        metavar="HOST:PORT",
        help="public JSON-RPC listen address (config rpc.listen, default 127.0.0.1:9545)",
    )
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="Prometheus metrics listen address (config metrics.listen, default 127.0.0.1:9560)",
    )
    p.add_argument(
        "--admin-listen",
        metavar="HOST:PORT",
        help="enable the admin RPC on this address (config admin.listen; off by default); "
        "its bearer token is HOME/admin.token",
    )
    p.add_argument(
        "--block-interval-ms",
        type=int,
        metavar="MS",
        help="ms between blocks, 10 to 60000 (config block_interval_ms, default 250)",
    )
    p.add_argument(
        "--follow",
        metavar="URL",
        help="follow (re-execute and verify) the node at this public RPC URL instead of producing",
    )
    p.add_argument(
        "--abci",
        metavar="ADDRESS",
        help="run as the ABCI application of a CometBFT v0.38 validator on tcp://HOST:PORT or "
        "unix://PATH instead of producing (docs/ABCI.md; needs perpchain[abci])",
    )
    p.add_argument(
        "--comet-rpc",
        metavar="URL",
        help="with --abci: the validator's CometBFT RPC, e.g. http://127.0.0.1:26657, "
        "to which tx_submit forwards (broadcast_tx_sync)",
    )
    p.add_argument(
        "--snapshot-interval",
        type=int,
        default=0,
        metavar="BLOCKS",
        help="with --abci: export a state-sync snapshot every BLOCKS heights into "
        "HOME/abci-snapshots, the newest 2 kept (default 0: none)",
    )
    p.add_argument(
        "--retain-blocks",
        type=int,
        default=0,
        metavar="BLOCKS",
        help="with --abci: let CometBFT prune its blocks older than the last BLOCKS heights "
        "(Commit's retain_height), never above the lowest checkpoint, so a rollback to a "
        "checkpoint keeps the blocks it replays (default 0: keep all)",
    )
    p.set_defaults(func=home.cmd_start)
    p = subparser(
        sub,
        "status",
        help="the node's status",
        description="Print the running node's status (node_status: chain, height, mode, ...) "
        "as JSON.",
        epilog=examples("perpchain status", "perpchain status --rpc http://127.0.0.1:9645"),
        parents=[common(rpc=True)],
    )
    p.set_defaults(func=home.cmd_status)
    p = subparser(
        sub,
        "keys",
        help="new key, or list the deterministic devnet keys",
        description="new: a random key, printed as JSON {address, seed} (keep the seed in a "
        "file for\n--key @FILE). list: the deterministic devnet keys (labels and addresses); "
        "never use\nthem for anything of value.",
        epilog=examples("perpchain keys new", "perpchain keys list --traders 4"),
        parents=[common()],
    )
    p.add_argument(
        "action", choices=["new", "list"], help="new: a random key; list: the devnet keys"
    )
    p.add_argument(
        "--traders",
        type=int,
        default=16,
        metavar="N",
        help="list: how many devnet/trader/I keys (default: %(default)s)",
    )
    p.set_defaults(func=home.cmd_keys)
    p = subparser(
        sub,
        "tx",
        help="build, sign, submit a tx of one kind and wait for its receipt",
        description="Build a tx of one KIND from its flags, sign it with --key (a free nonce), "
        "submit it\nand wait up to --wait seconds for its receipt; exit 0 if committed, 1 if "
        "rejected or\nnot committed in time. `perpchain tx KIND --help` lists a kind's "
        f"flags.\n\n{UNITS}",
        epilog=examples(
            "perpchain tx order --key devnet/trader/5 --market BTC-USD-PERP --side buy "
            "--price 60000000000 --size 100000",
            "perpchain tx cancel-all --key devnet/trader/5",
        ),
    )
    _add_tx_kinds(p)
    p = subparser(
        sub,
        "query",
        help="read chain state through the RPC",
        description="Read chain state through the public RPC; the result is the RPC's JSON.\n"
        "ARG: account: an address (64 hex digits) or devnet label; market and book: a market\n"
        "symbol or id; block: a height; proof: a state key (hex); receipt: a tx hash (hex);\n"
        "markets: none.",
        epilog=examples(
            "perpchain query book BTC-USD-PERP --depth 5",
            "perpchain query account devnet/trader/5",
            "perpchain query block 12",
        ),
        parents=[common(rpc=True)],
    )
    p.add_argument(
        "what",
        choices=["account", "market", "markets", "book", "block", "proof", "receipt"],
        help="what to read",
    )
    p.add_argument("arg", nargs="?", default="", help="what it is of (see above)")
    p.add_argument(
        "--depth",
        type=int,
        default=10,
        metavar="LEVELS",
        help="book: price levels per side, 1 to 500 (default: %(default)s)",
    )
    p.set_defaults(func=home.cmd_query)

    p = subparser(
        sub,
        "forks",
        help="list the rollbacks archived in the store (node stopped)",
        description="List the rollbacks archived in a stopped node's store: each fork's id, "
        "the heights\nit reverted and the height restored.",
        epilog=examples("perpchain forks --home /tmp/node"),
        parents=[common(home=_REQUIRED)],
    )
    p.set_defaults(func=ops.cmd_forks)
    p = subparser(
        sub,
        "report",
        help="offline reports over the store (node stopped)",
        description="Offline reports over a stopped node's store.",
        epilog=examples("perpchain report compensation --home /tmp/node --fork 1"),
    )
    reports = p.add_subparsers(dest="report", required=True)
    p = subparser(
        reports,
        "compensation",
        help="per account, what the reverted blocks of a fork did (refund list)",
        description="Per account, what the reverted blocks of a fork did (the refund list); "
        "amounts in\nquote atoms (10^6 = 1 USD). Text on stdout (JSON with --json); also to "
        "files with\n--json-out and --csv.",
        epilog=examples(
            "perpchain report compensation --home /tmp/node --fork 1",
            "perpchain report compensation --home /tmp/node --fork 1 --csv refunds.csv "
            "--json-out refunds.json",
        ),
        parents=[common(home=_REQUIRED)],
    )
    p.add_argument(
        "--fork", type=int, required=True, metavar="ID", help="fork id (see `perpchain forks`)"
    )
    p.add_argument("--json-out", metavar="FILE", help="also write the report as JSON to FILE")
    p.add_argument("--csv", metavar="FILE", help="also write one row per account as CSV to FILE")
    p.add_argument(
        "--revalued",
        action="store_true",
        help="also list accounts the blocks did not touch whose equity differs (oracle moves)",
    )
    p.set_defaults(func=ops.cmd_report)
    p = subparser(
        sub,
        "verify",
        help="replay the stored blocks and check every state root",
        description="Replay a stopped node's stored blocks from a starting height to the head "
        "and check\nevery state root and the flat state; exit 0 if valid, 3 if not (with the "
        "command\nthat restores a valid state).",
        epilog=examples(
            "perpchain verify --home /tmp/node",
            "perpchain verify --home /tmp/node --from-checkpoint pre-maintenance-120",
        ),
        parents=[common(home=_REQUIRED)],
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--from-checkpoint",
        metavar="NAME",
        help="start at this checkpoint's height (`perpchain checkpoint list`)",
    )
    group.add_argument(
        "--from-height",
        type=int,
        metavar="H",
        help="start at this height (default: the oldest height the store retains)",
    )
    p.set_defaults(func=ops.cmd_verify)
    p = subparser(
        sub,
        "rollback",
        help="restore an earlier height (node stopped; admin_rollback when running)",
        description="Restore an earlier height of a stopped node's store (a running node: "
        "admin_rollback).\nThe blocks above it are reverted and archived as a fork "
        "(`perpchain forks`), and a\nrecovery block is committed; the producer and operator "
        "keys are needed.",
        epilog=examples(
            "perpchain rollback --home /tmp/node --to-checkpoint pre-maintenance-120 --dry-run",
            "perpchain rollback --home /tmp/node --to-height 118 --reason 'bad migration'",
            "perpchain rollback --home /tmp/val0/app --cometbft-home /tmp/val0/cometbft "
            "--to-checkpoint pre-upgrade --recovery-out /tmp/recovery.json",
            "perpchain rollback --home /tmp/val0/app --submit-recovery /tmp/recovery.json "
            "--rpc http://127.0.0.1:9545",
        ),
        parents=[common(home=_REQUIRED)],
    )
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--to-height", type=int, metavar="H", help="restore this height (below the head)"
    )
    group.add_argument("--to-checkpoint", metavar="NAME", help="restore this checkpoint's height")
    group.add_argument(
        "--resume", action="store_true", help="commit the recovery block of an interrupted rollback"
    )
    group.add_argument(
        "--repair",
        action="store_true",
        help="no rollback: restore flat rows written around the writer from the history",
    )
    group.add_argument(
        "--submit-recovery",
        metavar="FILE",
        help="after a rollback under CometBFT, validators running again: submit the txs of a "
        "--recovery-out FILE in order through --rpc and wait for each one's receipt",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="with --to-height/--to-checkpoint: list what would be undone, change nothing",
    )
    p.add_argument(
        "--reason",
        default="operator rollback",
        help="recorded with the fork and its rollback notice (default: %(default)s)",
    )
    p.add_argument(
        "--cometbft-home",
        metavar="DIR",
        help="a validator under CometBFT (docs/ABCI.md, 'Operator recovery'): roll its "
        "CometBFT home back to the same height too (cometbft rollback --hard, double-sign "
        "guard and WAL reset); no recovery block, its txs go through consensus "
        "(--recovery-out); both processes stopped",
    )
    p.add_argument(
        "--cometbft",
        metavar="BIN",
        help="the cometbft binary (default: $PERPCHAIN_COMETBFT, else cometbft on PATH, "
        "else .cometbft/bin/cometbft built by scripts/cometbft)",
    )
    p.add_argument(
        "--recovery-out",
        metavar="FILE",
        help="with --cometbft-home: write the recovery txs (JSON: fork id, the operator's "
        "Recovery tx and the reverted deposits, hex, in order); needs the operator key",
    )
    p.add_argument(
        "--rpc",
        default=DEFAULT_RPC,
        metavar="URL",
        help="with --submit-recovery: a validator's public JSON-RPC URL (default: %(default)s)",
    )
    p.set_defaults(func=ops.cmd_rollback)
    p = subparser(
        sub,
        "snapshot",
        help="export or import the state of one height (node stopped)",
        description="Export the state of one height of a stopped node to a file, or create a "
        "home's\ndata/ from such a file.",
        epilog=examples(
            "perpchain snapshot export --home /tmp/node --out /tmp/state.snap",
            "perpchain snapshot import /tmp/state.snap --home /tmp/fresh",
        ),
    )
    actions = p.add_subparsers(dest="action", required=True)
    q = subparser(
        actions,
        "export",
        help="write the state at a height to a snapshot file",
        description="Write the state at a height, with its signed block and receipts, to a "
        "snapshot file\n(node stopped).",
        epilog=examples(
            "perpchain snapshot export --home /tmp/node --out /tmp/state.snap",
            "perpchain snapshot export --home /tmp/node --height 120 --out /tmp/h120.snap",
        ),
        parents=[common(home=_REQUIRED)],
    )
    q.add_argument("--height", type=int, metavar="H", help="the height (default: the head)")
    q.add_argument("--out", required=True, metavar="FILE", help="the snapshot file to write")
    q.set_defaults(func=ops.cmd_snapshot)
    q = subparser(
        actions,
        "import",
        help="create HOME/data from a snapshot (HOME from `init`, data/ removed)",
        description="Create HOME/data from a snapshot file. HOME comes from `perpchain init` "
        "with the\nchain's genesis, its data/ removed; the block's signature and the state "
        "root are\nchecked before the home is usable.",
        epilog=examples(
            "perpchain init --genesis genesis/devnet.json --home /tmp/fresh",
            "rm -r /tmp/fresh/data",
            "perpchain snapshot import /tmp/state.snap --home /tmp/fresh",
        ),
        parents=[common(home=_REQUIRED)],
    )
    q.add_argument("file", help="the snapshot file (from `perpchain snapshot export`)")
    q.set_defaults(func=ops.cmd_snapshot)

    p = subparser(
        sub,
        "checkpoint",
        help="named pins that pruning never removes: create | list | delete "
        "(--home on a stopped node, --admin on a running one)",
        description="Checkpoints: named heights that pruning never removes (rollback and "
        "verify targets).\nOn a stopped node with --home; on a running one with --admin URL "
        "(token from\n--token-file or HOME/admin.token).",
        epilog=examples(
            "perpchain checkpoint create before-upgrade --home /tmp/node --reason 'v2 upgrade'",
            "perpchain checkpoint list --admin http://127.0.0.1:9546 --home /tmp/node",
        ),
    )
    actions = p.add_subparsers(dest="action", required=True)
    parent = common(home=_OPTIONAL, admin=True)
    checkpoint_examples = {
        "create": (
            "perpchain checkpoint create before-upgrade --home /tmp/node --height 120",
            "perpchain checkpoint create before-upgrade --admin http://127.0.0.1:9546 "
            "--token-file /tmp/node/admin.token --reason 'v2 upgrade'",
        ),
        "list": (
            "perpchain checkpoint list --home /tmp/node",
            "perpchain checkpoint list --admin http://127.0.0.1:9546 --home /tmp/node --json",
        ),
        "delete": ("perpchain checkpoint delete before-upgrade --home /tmp/node",),
    }
    for action, lines in checkpoint_examples.items():
        q = subparser(
            actions,
            action,
            help=f"{action} checkpoints",
            description=f"{action.capitalize()} checkpoints: on a stopped node with --home, on "
            "a running one with\n--admin URL.",
            epilog=examples(*lines),
            parents=[parent],
        )
        if action != "list":
            q.add_argument("name", help="1 to 64 characters from A-Z a-z 0-9 . _ -")
        if action == "create":
            q.add_argument(
                "--height", type=int, metavar="H", help="the height to pin (default: the head)"
            )
            q.add_argument("--reason", default="", help="free text, up to 256 characters")
        q.set_defaults(func=admin.cmd_checkpoint)

    p = subparser(
        sub,
        "maintenance",
        help="stop producing for maintenance / verify and resume (admin RPC)",
        description="Maintenance of a running node through its admin RPC: begin (markets "
        "CANCEL_ONLY,\na pre-maintenance checkpoint, producing stops), job (e.g. compact), end "
        "(verify\nfrom the checkpoint, then resume).",
        epilog=examples(
            "perpchain maintenance begin --reason 'compaction' --home /tmp/node",
            "perpchain maintenance end --home /tmp/node",
        ),
    )
    actions = p.add_subparsers(dest="action", required=True)
    parent = common(home=_OPTIONAL, admin=True, admin_default=DEFAULT_ADMIN)
    q = subparser(
        actions,
        "begin",
        help="stop producing: markets CANCEL_ONLY, pin pre-maintenance-HEIGHT",
        description="Finish the block in flight, put every market in CANCEL_ONLY, pin the "
        "head as\ncheckpoint pre-maintenance-HEIGHT, bump the fencing epoch and stop "
        "producing.",
        epilog=examples("perpchain maintenance begin --reason 'compaction' --home /tmp/node"),
        parents=[parent],
    )
    q.add_argument(
        "--reason",
        required=True,
        help="why: kept with the maintenance window (node status) and logged",
    )
    q.set_defaults(func=admin.cmd_maintenance)
    q = subparser(
        actions,
        "job",
        help="run a maintenance job (in maintenance only)",
        description="Run a maintenance job in the writer (only in maintenance, never beside "
        "blocks).",
        epilog=examples("perpchain maintenance job compact --home /tmp/node"),
        parents=[parent],
    )
    q.add_argument(
        "kind",
        choices=["compact"],
        help="compact: LevelDB compaction of the whole keyspace, run by the writer",
    )
    q.set_defaults(func=admin.cmd_maintenance)
    q = subparser(
        actions,
        "end",
        help="verify from the pre-maintenance checkpoint and resume producing",
        description="Verify the state (flat state, replay from the pre-maintenance checkpoint) "
        "and resume\nproducing; exit 3 if the state is invalid. Markets stay CANCEL_ONLY until "
        "reopened.",
        epilog=examples(
            "perpchain maintenance end --home /tmp/node",
            "perpchain maintenance end --home /tmp/node --expect-root " + "ab" * 32,
        ),
        parents=[parent],
    )
    q.add_argument(
        "--expect-root",
        metavar="HEX",
        help="resume only if the head state root is this (64 hex digits)",
    )
    q.set_defaults(func=admin.cmd_maintenance)
    return parser


def all_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser, the root and each subcommand's (runnable or not), with its words."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += all_parsers(child, (*path, name))
    return found


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
