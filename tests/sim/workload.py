"""A seeded random exchange workload over the real core and the real store (memory backend):
thousands of accounts, random limit/market/conditional orders, cancels, deposits, withdrawals
and a random-walk oracle, invariants checked by apply_block after every block.

    python -m tests.sim.workload --seed 7 --blocks 60 --accounts 2000   # prints the root digest
"""

from __future__ import annotations

import argparse
import hashlib
import random
from dataclasses import dataclass, field

from node.core.blocks import BlockEnv
from node.core.crypto import SigningKey
from node.core.genesis import genesis_writes, parse_genesis
from node.core.records import EventKind, OrderKind, Side, TimeInForce
from node.core.transition import apply_block
from node.core.txs import (
    CancelAll,
    CancelOrder,
    Deposit,
    OracleUpdate,
    PlaceOrder,
    PricePoint,
    Withdraw,
    sign_tx,
)
from node.store import MemoryBackend, VersionedStore
from tests.core.harness import USD, devnet_doc

UNIT = 10**8


@dataclass
class Stats:
    blocks: int = 0
    txs: int = 0
    rejected: int = 0
    fills: int = 0
    liquidations: int = 0
    funding_ticks: int = 0
    roots: list[bytes] = field(default_factory=list)

    def digest(self) -> str:
        return hashlib.sha256(b"".join(self.roots)).hexdigest()


def sim_genesis(accounts: int) -> tuple[dict[str, object], list[SigningKey]]:
    doc = devnet_doc(breaker_notional_quote=10**18)
    keys = [SigningKey(hashlib.sha256(b"sim/%d" % i).digest()) for i in range(accounts)]
    doc["accounts"] = [
        {
            "address": k.public_key.hex(),
            "collateral_quote": str(random.Random(i).choice([2_000, 20_000, 200_000]) * USD),
        }
        for i, k in enumerate(keys)
    ]
    return doc, keys


def run(seed: int, blocks: int, accounts: int, txs_per_block: int) -> Stats:
    rng = random.Random(seed)
    doc, traders = sim_genesis(accounts)
    genesis = parse_genesis(doc)
    store = VersionedStore(MemoryBackend())
    store.commit(dict(genesis_writes(genesis)))
    chain_id = genesis.chain_id
    oracle = SigningKey.from_label("devnet/oracle")
    bridge = SigningKey.from_label("devnet/bridge")
    nonces: dict[bytes, int] = {}
    prices = {m.market_id: m.oracle_price_quote for m in genesis.markets}
    ticks = {m.market_id: m.tick_quote for m in genesis.markets}
    steps = {m.market_id: m.step_atoms for m in genesis.markets}
    time_ms = genesis.genesis_time_ms
    stats = Stats()
    client = 0
    deposit_id = 0

    def sign(body_cls: type, key: SigningKey, **fields: object):  # type: ignore[no-untyped-def]
        nonce = nonces.get(key.public_key, 0)
        nonces[key.public_key] = nonce + 1
        return sign_tx(body_cls(nonce=nonce, **fields), key, chain_id)

    for height in range(1, blocks + 1):
        time_ms += rng.choice([250, 1000, 5000, 20_000])
        txs = []
        for market_id in prices:  # random walk, within the oracle jump bound
            move = rng.randint(-20_000, 20_000)
            prices[market_id] = max(ticks[market_id], prices[market_id] * (10**6 + move) // 10**6)
        txs.append(
            sign(
                OracleUpdate,
                oracle,
                time_ms=time_ms,
                prices=tuple(
                    PricePoint(market_id=m, price_quote=p) for m, p in sorted(prices.items())
                ),
            )
        )
        for _ in range(txs_per_block):
            key = rng.choice(traders)
            market_id = rng.choice(sorted(prices))
            tick, step = ticks[market_id], steps[market_id]
            roll = rng.random()
            price = prices[market_id] * (10**6 + rng.randint(-5_000, 5_000)) // 10**6 // tick * tick
            size = rng.randint(1, 2_000) * step
            side = rng.choice([Side.BUY, Side.SELL])
            client += 1
            if roll < 0.6:
                txs.append(
                    sign(
                        PlaceOrder,
                        key,
                        market_id=market_id,
                        side=side,
                        kind=OrderKind.LIMIT,
                        tif=rng.choice(
                            [
                                TimeInForce.GTC,
                                TimeInForce.GTC,
                                TimeInForce.IOC,
                                TimeInForce.POST_ONLY,
                            ]
                        ),
                        price_quote=max(tick, price),
                        size_atoms=size,
                        reduce_only=0,
                        trigger_price_quote=0,
                        client_id=client,
                    )
                )
            elif roll < 0.8:
                txs.append(
                    sign(
                        PlaceOrder,
                        key,
                        market_id=market_id,
                        side=side,
                        kind=OrderKind.MARKET,
                        tif=TimeInForce.IOC,
                        price_quote=0,
                        size_atoms=size,
                        reduce_only=int(rng.random() < 0.3),
                        trigger_price_quote=0,
                        client_id=client,
                    )
                )
            elif roll < 0.86:
                kind = rng.choice([OrderKind.STOP_LOSS, OrderKind.TAKE_PROFIT])
                txs.append(
                    sign(
                        PlaceOrder,
                        key,
                        market_id=market_id,
                        side=side,
                        kind=kind,
                        tif=TimeInForce.IOC,
                        price_quote=0,
                        size_atoms=size,
                        reduce_only=1,
                        trigger_price_quote=max(tick, price),
                        client_id=client,
                    )
                )
            elif roll < 0.93:
                txs.append(
                    sign(CancelOrder, key, order_id=rng.randint(1, max(1, client)), client_id=0)
                )
            elif roll < 0.95:
                txs.append(sign(CancelAll, key, market_id=rng.choice([0, market_id])))
            elif roll < 0.975:
                deposit_id += 1
                txs.append(
                    sign(
                        Deposit,
                        bridge,
                        account=key.public_key,
                        amount_quote=rng.randint(1, 50_000) * USD,
                        deposit_id=deposit_id,
                    )
                )
            else:
                txs.append(sign(Withdraw, key, amount_quote=rng.randint(1, 50_000) * USD))
        env = BlockEnv(chain_id=chain_id, height=height, time_ms=time_ms)
        result = apply_block(store, env, txs)  # raises InvariantViolation on a bad post-state
        stats.roots.append(store.commit(dict(result.writes)))
        stats.blocks += 1
        stats.txs += len(txs)
        for receipt in result.receipts:
            stats.rejected += receipt.code != 0
            stats.fills += sum(e.kind == EventKind.FILL for e in receipt.events)
        for e in result.events:
            stats.fills += e.kind == EventKind.FILL
            stats.liquidations += e.kind == EventKind.LIQUIDATION and e.size_atoms != 0
            stats.funding_ticks += e.kind == EventKind.FUNDING_TICK
    store.verify()
    return stats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--blocks", type=int, default=60)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--txs", type=int, default=100)
    args = parser.parse_args()
    stats = run(args.seed, args.blocks, args.accounts, args.txs)
    print(
        stats.digest(),
        stats.blocks,
        stats.txs,
        stats.fills,
        stats.liquidations,
        stats.funding_ticks,
    )


if __name__ == "__main__":
    main()
