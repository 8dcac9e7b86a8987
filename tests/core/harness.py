"""A tiny in-memory chain for core tests: genesis -> MemoryState, blocks applied with the real
apply_block, deterministic dev keys and automatic nonces."""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass, field
from typing import Any

from node.core import codec, keys, merkle, queries
from node.core.blocks import BlockEnv, Receipt
from node.core.crypto import SigningKey
from node.core.genesis import genesis_writes, parse_genesis
from node.core.records import Account, Market, OrderKind, Position, Side, TimeInForce, Totals
from node.core.transition import BlockResult, apply_block
from node.core.txs import (
    Deposit,
    OracleUpdate,
    PlaceOrder,
    PricePoint,
    SignedTx,
    sign_tx,
)
from node.core.view import MemoryState, Overlay, get_totals

DEVNET = pathlib.Path(__file__).resolve().parents[2] / "genesis" / "devnet.json"
USD = 10**6
UNIT = 10**8
BTC, ETH, SOL = 1, 2, 3


def devnet_doc(**params: int) -> dict[str, Any]:
    doc = json.loads(DEVNET.read_text())
    for name, value in params.items():
        doc["params"][name] = str(value)
    return doc


@dataclass
class Chain:
    doc: dict[str, Any] = field(default_factory=devnet_doc)
    state: MemoryState = field(init=False)
    time_ms: int = field(init=False)
    height: int = 0
    nonces: dict[bytes, int] = field(default_factory=dict)
    client_ids: int = 0
    last: BlockResult | None = None

    def __post_init__(self) -> None:
        self.genesis = parse_genesis(self.doc)
        self.state = MemoryState(genesis_writes(self.genesis))
        self.time_ms = self.genesis.genesis_time_ms
        self.chain_id = self.genesis.chain_id

    # ---- keys and txs
    @staticmethod
    def key(label: str) -> SigningKey:
        return SigningKey.from_label(label)

    def trader(self, i: int) -> SigningKey:
        return self.key(f"devnet/trader/{i}")

    def sign(self, body_cls: type, key: SigningKey, **fields: Any) -> SignedTx:
        nonce = self.nonces.get(key.public_key, 0)
        self.nonces[key.public_key] = nonce + 1
        return sign_tx(body_cls(nonce=nonce, **fields), key, self.chain_id)

    def order(
        self,
        key: SigningKey,
        side: Side,
        size_atoms: int,
        price_quote: int,
        *,
        market_id: int = BTC,
        kind: OrderKind = OrderKind.LIMIT,
        tif: TimeInForce = TimeInForce.GTC,
        reduce_only: int = 0,
        trigger_price_quote: int = 0,
        client_id: int | None = None,
    ) -> SignedTx:
        self.client_ids += 1
        return self.sign(
            PlaceOrder,
            key,
            market_id=market_id,
            side=side,
            kind=kind,
            tif=tif,
            price_quote=price_quote,
            size_atoms=size_atoms,
            reduce_only=reduce_only,
            trigger_price_quote=trigger_price_quote,
            client_id=self.client_ids if client_id is None else client_id,
        )

    def oracle(self, prices: dict[int, int], time_ms: int | None = None) -> SignedTx:
        points = tuple(PricePoint(market_id=m, price_quote=p) for m, p in sorted(prices.items()))
        return self.sign(
            OracleUpdate,
            self.key("devnet/oracle"),
            time_ms=time_ms or self.time_ms + 1,
            prices=points,
        )

    def deposit(self, account: bytes, amount_quote: int, deposit_id: int) -> SignedTx:
        return self.sign(
            Deposit,
            self.key("devnet/bridge"),
            account=account,
            amount_quote=amount_quote,
            deposit_id=deposit_id,
        )

    # ---- blocks
    def block(self, *txs: SignedTx, dt_ms: int = 1000) -> list[Receipt]:
        self.time_ms += dt_ms
        self.height += 1
        env = BlockEnv(chain_id=self.chain_id, height=self.height, time_ms=self.time_ms)
        result = apply_block(self.state, env, txs)
        self.state.apply(result.writes)
        self.last = result
        return list(result.receipts)

    def root(self) -> bytes:
        return merkle.reference_root(self.state.items())

    # ---- reads
    def view(self) -> Overlay:
        return Overlay(self.state)

    def account(self, key: SigningKey | bytes) -> Account:
        address = key.public_key if isinstance(key, SigningKey) else key
        raw = self.state.get(keys.account(address))
        assert raw is not None
        return codec.decode(raw, Account)

    def position(self, key: SigningKey, market_id: int = BTC) -> int:
        raw = self.state.get(keys.position(key.public_key, market_id))
        return 0 if raw is None else codec.decode(raw, Position).size_atoms

    def market(self, market_id: int = BTC) -> Market:
        raw = self.state.get(keys.market(market_id))
        assert raw is not None
        return codec.decode(raw, Market)

    def totals(self) -> Totals:
        return get_totals(self.view())

    def summary(self, key: SigningKey) -> dict[str, Any]:
        summary = queries.account_summary(self.state, key.public_key)
        assert summary is not None
        return summary
