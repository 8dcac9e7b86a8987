"""Writes genesis/devnet.json: the local devnet's chain id, parameters, markets and funded dev
accounts. Keys are derived from fixed labels (SigningKey.from_label), as local devnets of other
chains do, so anyone can sign as a devnet trader: never use them for anything of value.

    .venv/bin/python scripts/gen_genesis.py [--traders 16] [--out genesis/devnet.json]
"""

from __future__ import annotations

import argparse
import json
import pathlib

from node.core.crypto import SigningKey

USD = 10**6  # quote atoms
UNIT = 10**8  # size atoms


def key(label: str) -> str:
    return SigningKey.from_label(label).public_key.hex()


def devnet(traders: int) -> dict[str, object]:
    def s(value: int) -> str:
        return str(value)

    return {
        "chain_id": "perpchain-devnet-1",
        "genesis_time_ms": s(1_767_225_600_000),  # 2026-01-01T00:00:00Z
        "keys": {
            "producer": key("devnet/producer"),
            "oracle": key("devnet/oracle"),
            "bridge": key("devnet/bridge"),
            "operator": key("devnet/operator"),
        },
        "params": {
            "funding_interval_ms": s(60_000),  # a tick per minute on the devnet
            "funding_period_ms": s(3_600_000),  # rates are per hour
            "max_funding_gap_ms": s(300_000),  # a longer gap accrues nothing
            "oracle_stale_ms": s(30_000),
            "oracle_max_jump_ppm": s(100_000),  # 10% per update
            "maker_fee_ppm": s(200),
            "taker_fee_ppm": s(500),
            "liquidation_penalty_ppm": s(10_000),
            "max_open_orders": s(256),
            "max_order_size_atoms": s(1_000_000 * UNIT),
            "max_deposit_quote": s(100_000_000 * USD),
            "breaker_liquidations": s(50),
            "breaker_move_ppm": s(10_000),
            "nonce_window": s(64),
        },
        "markets": [
            {
                "id": "1",
                "symbol": "BTC-USD-PERP",
                "tick_quote": s(USD),
                "step_atoms": s(UNIT // 1000),
                "initial_margin_ppm": "50000",
                "maintenance_margin_ppm": "30000",
                "max_funding_rate_ppm": "1000",
                "oracle_price_quote": s(60_000 * USD),
            },
            {
                "id": "2",
                "symbol": "ETH-USD-PERP",
                "tick_quote": s(USD // 10),
                "step_atoms": s(UNIT // 100),
                "initial_margin_ppm": "50000",
                "maintenance_margin_ppm": "30000",
                "max_funding_rate_ppm": "1000",
                "oracle_price_quote": s(3_000 * USD),
            },
            {
                "id": "3",
                "symbol": "SOL-USD-PERP",
                "tick_quote": s(USD // 100),
                "step_atoms": s(UNIT // 10),
                "initial_margin_ppm": "100000",
                "maintenance_margin_ppm": "50000",
                "max_funding_rate_ppm": "2000",
                "oracle_price_quote": s(150 * USD),
            },
        ],
        "insurance_fund_quote": s(1_000_000 * USD),
        "liquidator": {
            "label": "devnet/liquidator",
            "address": key("devnet/liquidator"),
            "collateral_quote": s(10_000_000 * USD),
        },
        "accounts": [
            {
                "label": f"devnet/trader/{i}",
                "address": key(f"devnet/trader/{i}"),
                "collateral_quote": s(1_000_000 * USD),
            }
            for i in range(traders)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traders", type=int, default=16)
    parser.add_argument("--out", default="genesis/devnet.json")
    args = parser.parse_args()
    text = json.dumps(devnet(args.traders), indent=2) + "\n"
    pathlib.Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
