"""The real engine (issue 21): 4 CometBFT v0.38 validators, each with its perpchain application
process, on loopback (node.testnet, what ./scripts/testnet runs).

One network, in order: trades and one tx through each validator's JSON-RPC are committed on
all four with the same state roots, past height 20; a kill -9 of one validator (its CometBFT and
its application) leaves the other three committing, and the restarted validator block-syncs to
the same roots; with two of four stopped no block is committed (1/2 of the power < 2/3), and
the chain resumes when they come back. The bots trade throughout.

Skips without Go (no engine to build) unless PERPTEST_REQUIRE_COMETBFT=1 (.ci/run), which
makes the skip a failure.
"""

from __future__ import annotations

import json
import pathlib
import threading
import time

from node.client import RpcCallError, RpcUnavailable
from node.cometbft import TestnetError
from node.core.crypto import SigningKey
from node.core.records import OrderKind, Side, TimeInForce
from node.core.txs import CancelAll, OracleUpdate, PlaceOrder, PricePoint
from node.devnet import Bots
from node.testnet import ORACLE_LAG_MS, Testnet, Validator, running
from tests.e2e.cometbft import Sender, equal_roots, heights, make_testnet, wait_committed

ALL = [0, 1, 2, 3]


class BotThread(threading.Thread):
    """The devnet's oracle feeder and traders (devnet/trader/0-7), sending to a live validator."""

    def __init__(self, net: Testnet) -> None:
        super().__init__(daemon=True)
        self.net = net
        self.bots = Bots(
            net.validators[0].client, net.genesis, 8, seed=7, oracle_lag_ms=ORACLE_LAG_MS
        )
        self.halt = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        turn = 0
        while not self.halt.is_set():
            try:
                self.bots.feed_oracle()
                self.bots.trade(10)
            except RpcUnavailable:
                turn += 1
                self.bots.client = self.net.validators[turn % len(self.net.validators)].client
            except Exception as error:  # noqa: BLE001 - reported by the test, not swallowed
                self.errors.append(repr(error))
            self.halt.wait(0.3)


def switched_heights(validator: Validator) -> list[int]:
    """The heights at which the validator's CometBFT switched from block sync to consensus."""
    log = (validator.home / "cometbft.log").read_text(errors="replace")
    return [
        int(line.rsplit("height=", 1)[1].split()[0])
        for line in log.splitlines()
        if "Time to switch to consensus reactor!" in line
    ]


def test_four_validators_commit_trades_survive_a_kill_and_halt_without_quorum(
    tmp_path: pathlib.Path,
) -> None:
    net = make_testnet(tmp_path / "net")
    started = time.monotonic()
    with running(net):
        net.wait_height(2, timeout_s=90)
        market = net.genesis["markets"][0]
        price = int(market["oracle_price_quote"])
        sender = Sender(net)
        oracle = SigningKey.from_label("devnet/oracle")
        maker = SigningKey.from_label("devnet/trader/12")
        taker = SigningKey.from_label("devnet/trader/13")
        order = {
            "market_id": int(market["id"]),
            "tif": TimeInForce.GTC,
            "reduce_only": 0,
            "trigger_price_quote": 0,
        }

        # A tx submitted to any validator's JSON-RPC is committed on all four.
        sent = [
            sender.submit(
                net.validators[0].client,
                oracle,
                OracleUpdate,
                time_ms=time.time_ns() // 1_000_000 - ORACLE_LAG_MS,
                prices=(PricePoint(market_id=int(market["id"]), price_quote=price),),
            ),
            sender.submit(
                net.validators[1].client,
                maker,
                PlaceOrder,
                side=Side.SELL,
                kind=OrderKind.LIMIT,
                price_quote=price,
                size_atoms=50 * int(market["step_atoms"]),
                client_id=1,
                **order,
            ),
        ]
        for tx in sent:
            statuses = wait_committed(net, tx, ALL)
            assert {s["status"] for s in statuses.values()} == {"committed"}, json.dumps(
                statuses[0]
            )
        fill = sender.submit(
            net.validators[2].client,
            taker,
            PlaceOrder,
            side=Side.BUY,
            kind=OrderKind.MARKET,
            price_quote=0,
            size_atoms=20 * int(market["step_atoms"]),
            client_id=2,
            **{**order, "tif": TimeInForce.IOC},
        )
        receipts = wait_committed(net, fill, ALL)
        assert {s["status"] for s in receipts.values()} == {"committed"}, receipts
        assert len({s["height"] for s in receipts.values()}) == 1, receipts
        cancel = sender.submit(net.validators[3].client, maker, CancelAll, market_id=0)
        assert {s["status"] for s in wait_committed(net, cancel, ALL).values()} == {"committed"}

        # The bots trade throughout; past height 20 every application has the same roots.
        bots = BotThread(net)
        bots.start()
        try:
            net.wait_height(20, timeout_s=90)
            equal_roots(net, ALL, 20)
            markets = {
                i: [m["open_interest"] for m in net.validators[i].client.call("perp_getMarkets")]
                for i in ALL
            }
            assert len({tuple(oi) for oi in markets.values()}) == 1, markets
            assert int(markets[0][0]) > 0, markets
            assert bots.bots.submitted > 0

            # kill -9 one validator (CometBFT and application): the other three commit on.
            killed_at = net.validators[3].height()
            net.validators[3].kill()
            top = max(heights(net, [0, 1, 2]))
            net.wait_height(top + 4, [0, 1, 2], timeout_s=60)
            equal_roots(net, [0, 1, 2], top + 3)
            # Restarted, it block-syncs to the others and agrees.
            net.validators[3].start()
            target = max(heights(net, [0, 1, 2])) + 2
            net.wait_height(target, ALL, timeout_s=90)
            equal_roots(net, ALL, target)
            # It fetched the blocks it missed by block sync before rejoining consensus. Block
            # sync may already have applied the target height while its once-a-second check
            # has not yet switched to consensus, so the log line is waited for.
            deadline = time.monotonic() + 30
            switched = switched_heights(net.validators[3])
            while not (switched and switched[-1] > killed_at + 2) and time.monotonic() < deadline:
                time.sleep(0.5)
                switched = switched_heights(net.validators[3])
            assert switched and switched[-1] > killed_at + 2, (killed_at, switched)

            # Two of four stopped: 1/2 of the voting power, no block can be committed.
            net.validators[2].stop()
            net.validators[3].stop()
            time.sleep(2.0)  # a height the two took part in may still reach both
            held = max(heights(net, [0, 1]))
            time.sleep(4.0)
            assert max(heights(net, [0, 1])) == held, "a block was committed without a quorum"
            app_heights = [
                int(net.validators[i].client.call("node_status")["height"]) for i in [0, 1]
            ]
            assert max(app_heights) == held, (app_heights, held)
            # Back: the chain resumes.
            net.validators[2].start()
            net.validators[3].start()
            net.wait_height(held + 3, ALL, timeout_s=90)
            equal_roots(net, ALL, held + 2)
        finally:
            bots.halt.set()
            bots.join(timeout=10)
        assert not bots.errors, bots.errors[:5]
        assert bots.bots.submitted > 50, (bots.bots.submitted, bots.bots.refused)
        for i in ALL:
            try:
                status = net.validators[i].client.call("node_status")
            except (RpcUnavailable, RpcCallError) as error:
                raise TestnetError(f"validator {i}: {error}") from None
            assert status["mode"] != "halted", status
    print(f"cometbft testnet scenario: {time.monotonic() - started:.1f} s")
