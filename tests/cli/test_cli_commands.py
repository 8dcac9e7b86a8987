"""The `perpchain` command line (issue 20 §6): one `tx` subcommand per kind with only its
flags, a market named by symbol or id, one meaning per flag name (`--json` prints JSON), and a
closed stdout pipe ends a command quietly."""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest

from node.cli import tx
from node.cli.main import EXIT_BROKEN_PIPE, main
from node.cli.parser import build_parser, leaf_parsers
from node.core.crypto import SigningKey
from node.core.records import MarketMode, OrderKind, Side, TimeInForce
from node.core.txs import (
    CancelAll,
    CancelOrder,
    Deposit,
    OracleUpdate,
    PlaceOrder,
    PricePoint,
    Recovery,
    SetMarketMode,
    SetMarketParams,
    TxKind,
    Withdraw,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEY = ("--key", "devnet/trader/1")
MARKETS = {"BTC-USD-PERP": 1, "ETH-USD-PERP": 2}


class FakeNode:
    """The two reads a builder may make: perp_getMarket by symbol or id."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def call(self, method: str, **params: Any) -> Any:
        self.calls.append((method, params))
        assert method == "perp_getMarket", method
        market = params["market"]
        market_id = MARKETS.get(market) or int(market)
        return {
            "market": next(s for s, i in MARKETS.items() if i == market_id),
            "market_id": str(market_id),
            "initial_margin_ppm": "50000",
            "maintenance_margin_ppm": "30000",
            "max_funding_rate_ppm": "1000",
        }


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def body_of(*argv: str, node: FakeNode | None = None) -> Any:
    args = parse("tx", *argv, *KEY)
    assert args.func is tx.cmd_tx
    return tx.BUILDERS[args.kind](args, node or FakeNode())  # type: ignore[arg-type]


TRADER_2 = SigningKey.from_label("devnet/trader/2").public_key

# (argv after `tx`, the body it builds): one or more per kind.
BODIES: list[tuple[tuple[str, ...], Any]] = [
    (
        ("deposit", "--account", TRADER_2.hex(), "--amount", "5000000", "--deposit-id", "7"),
        Deposit(nonce=0, account=TRADER_2, amount_quote=5_000_000, deposit_id=7),
    ),
    (
        ("deposit", "--account", "devnet/trader/2", "--amount", "1", "--deposit-id", "8"),
        Deposit(nonce=0, account=TRADER_2, amount_quote=1, deposit_id=8),
    ),
    (("withdraw", "--amount", "250"), Withdraw(nonce=0, amount_quote=250)),
    (
        (
            "order",
            "--market",
            "BTC-USD-PERP",
            "--side",
            "sell",
            "--price",
            "61000000000",
            "--size",
            "100000",
            "--client-id",
            "9",
        ),
        PlaceOrder(
            nonce=0,
            market_id=1,
            side=Side.SELL,
            kind=OrderKind.LIMIT,
            tif=TimeInForce.GTC,
            price_quote=61_000_000_000,
            size_atoms=100_000,
            reduce_only=0,
            trigger_price_quote=0,
            client_id=9,
        ),
    ),
    (
        (
            "order",
            "--market",
            "2",
            "--side",
            "buy",
            "--type",
            "stop_loss",
            "--tif",
            "ioc",
            "--size",
            "3",
            "--trigger",
            "2900000000",
            "--reduce-only",
            "--client-id",
            "4",
        ),
        PlaceOrder(
            nonce=0,
            market_id=2,
            side=Side.BUY,
            kind=OrderKind.STOP_LOSS,
            tif=TimeInForce.IOC,
            price_quote=0,
            size_atoms=3,
            reduce_only=1,
            trigger_price_quote=2_900_000_000,
            client_id=4,
        ),
    ),
    (("cancel", "--order-id", "12"), CancelOrder(nonce=0, order_id=12, client_id=0)),
    (("cancel", "--client-id", "5"), CancelOrder(nonce=0, order_id=0, client_id=5)),
    (("cancel", "--all"), CancelAll(nonce=0, market_id=0)),
    (("cancel", "--all", "--market", "ETH-USD-PERP"), CancelAll(nonce=0, market_id=2)),
    (("cancel-all",), CancelAll(nonce=0, market_id=0)),
    (("cancel-all", "--market", "BTC-USD-PERP"), CancelAll(nonce=0, market_id=1)),
    (("cancel-all", "--market", "2"), CancelAll(nonce=0, market_id=2)),
    (
        (
            "oracle",
            "--market-price",
            "ETH-USD-PERP=3000000000",
            "--market-price",
            "1=60000000000",
            "--time-ms",
            "1700000000000",
        ),
        OracleUpdate(
            nonce=0,
            time_ms=1_700_000_000_000,
            prices=(
                PricePoint(market_id=1, price_quote=60_000_000_000),
                PricePoint(market_id=2, price_quote=3_000_000_000),
            ),
        ),
    ),
    (
        ("market-mode", "--market", "BTC-USD-PERP", "--mode", "cancel_only"),
        SetMarketMode(nonce=0, market_id=1, mode=MarketMode.CANCEL_ONLY),
    ),
    (
        ("market-params", "--market", "ETH-USD-PERP", "--initial-margin-ppm", "60000"),
        SetMarketParams(
            nonce=0,
            market_id=2,
            initial_margin_ppm=60_000,
            maintenance_margin_ppm=30_000,
            max_funding_rate_ppm=1_000,
        ),
    ),
    (("recovery",), Recovery(nonce=0)),
]


@pytest.mark.parametrize(("argv", "expected"), BODIES, ids=[" ".join(a)[:40] for a, _ in BODIES])
def test_each_tx_subcommand_builds_its_body(argv: tuple[str, ...], expected: Any) -> None:
    assert body_of(*argv) == expected


def test_every_tx_kind_has_a_subcommand() -> None:
    built = {type(expected).TAG for _, expected in BODIES}
    assert built == set(TxKind)
    tx_words = {words[1] for words, _ in leaf_parsers(build_parser()) if words[0] == "tx"}
    assert tx_words == set(tx.BUILDERS)


# A flag of another kind, given to each kind: a usage error (exit 2), never silently ignored.
FOREIGN_FLAGS = [
    ("deposit", "--account", "ab" * 32, "--amount", "1", "--deposit-id", "1", "--price", "5"),
    ("deposit", "--account", "ab" * 32, "--amount", "1", "--deposit-id", "1", "--market", "1"),
    ("withdraw", "--amount", "1", "--side", "buy"),
    ("withdraw", "--amount", "1", "--deposit-id", "3"),
    ("order", "--market", "1", "--side", "buy", "--size", "1", "--amount", "5"),
    ("order", "--market", "1", "--side", "buy", "--size", "1", "--all"),
    ("order", "--market", "1", "--side", "buy", "--size", "1", "--order-id", "3"),
    ("cancel", "--order-id", "1", "--price", "5"),
    ("cancel", "--all", "--size", "5"),
    ("cancel-all", "--order-id", "1"),
    ("cancel-all", "--all"),
    ("oracle", "--market-price", "1=5", "--amount", "5"),
    ("oracle", "--market-price", "1=5", "--price", "5"),
    ("market-mode", "--market", "1", "--mode", "open", "--size", "1"),
    ("market-params", "--market", "1", "--mode", "open"),
    ("recovery", "--market", "1"),
]


@pytest.mark.parametrize("argv", FOREIGN_FLAGS, ids=lambda v: " ".join(v)[:48])
def test_a_tx_subcommand_refuses_another_kinds_flag(
    argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse("tx", *argv, *KEY)
    assert exit_info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_cancel_needs_one_target_and_market_only_with_all() -> None:
    for argv in (("cancel",), ("cancel", "--order-id", "1", "--all")):
        with pytest.raises(SystemExit):
            parse("tx", *argv, *KEY)
    with pytest.raises(tx.CliError, match="applies to `tx cancel --all` only"):
        body_of("cancel", "--order-id", "1", "--market", "1")


def test_cancel_all_without_a_market_names_no_market_and_asks_the_node_nothing() -> None:
    node = FakeNode()
    assert body_of("cancel-all", node=node) == CancelAll(nonce=0, market_id=0)
    assert body_of("cancel", "--all", node=node) == CancelAll(nonce=0, market_id=0)
    assert node.calls == []


def test_a_market_symbol_is_resolved_through_the_node_and_an_id_is_not() -> None:
    node = FakeNode()
    assert body_of("cancel-all", "--market", "ETH-USD-PERP", node=node).market_id == 2
    assert node.calls == [("perp_getMarket", {"market": "ETH-USD-PERP"})]
    node.calls.clear()
    assert body_of("cancel-all", "--market", "2", node=node).market_id == 2
    assert node.calls == []


def test_json_is_an_output_flag_in_every_command() -> None:
    """`--json` takes no value anywhere (a file is --json-out / --csv / --out), and every
    command that prints a result takes it."""
    leaves = leaf_parsers(build_parser())
    assert len(leaves) > 20
    for words, parser in leaves:
        flags = {s: a for a in parser._actions for s in a.option_strings}
        if words == ("start",):  # runs the node; prints logs, not a result
            assert "--json" not in flags
            continue
        action = flags.get("--json")
        assert action is not None, f"{' '.join(words)} has no --json"
        assert action.nargs == 0 and action.const is True, f"{' '.join(words)}: --json"


def test_each_flag_name_has_one_meaning() -> None:
    """The same flag takes the same kind of value in every command (type, arity, choices)."""
    seen: dict[str, tuple[Any, ...]] = {}
    for words, parser in leaf_parsers(build_parser()):
        for action in parser._actions:
            for flag in action.option_strings:
                shape = (type(action).__name__, action.type, action.nargs, action.choices)
                first = seen.setdefault(flag, (*shape, words))
                assert first[:4] == shape, f"{flag}: {first[4]} vs {words}"


def test_report_compensation_writes_json_to_json_out() -> None:
    args = parse("report", "compensation", "--home", "h", "--fork", "1", "--json-out", "r.json")
    assert args.json_out == "r.json" and args.json is False
    args = parse("report", "compensation", "--home", "h", "--fork", "1", "--json")
    assert args.json is True and args.json_out is None


def test_keys_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["keys", "list", "--traders", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[-1] == {
        "label": "devnet/trader/0",
        "address": SigningKey.from_label("devnet/trader/0").public_key.hex(),
    }


def test_keys_list_into_a_closed_pipe_exits_quietly() -> None:
    """`perpchain keys list | head -1`: the reader goes away after one line; the command ends
    with 141 (as a Unix tool killed by SIGPIPE) and prints nothing on stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "node.cli.main", "keys", "list", "--traders", "3000"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith(b"devnet/producer")
    process.stdout.close()  # `head` exits
    err = process.stderr.read()
    assert process.wait(timeout=60) == EXIT_BROKEN_PIPE
    assert err == b""
