"""Property: whatever signed txs arrive (every kind, every numeric field over the whole int64
range, the right or a wrong signer, fresh or replayed nonces), `apply_block` never raises: each
tx applies or is rejected with a code, the invariants (the full scan: conservation, open
interest, no debt without a position, funding) hold after every block, and re-executing the
same blocks from genesis gives the same state root."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.core.crypto import SigningKey
from node.core.errors import Reject
from node.core.fixed import I64_MAX, I64_MIN
from node.core.records import MarketMode, OrderKind, Side, TimeInForce
from node.core.txs import BODY_TYPES, PlaceOrder, PricePoint, SignedTx, sign_tx
from tests.core.harness import USD, Chain

SIGNERS = [SigningKey.from_label(f"devnet/trader/{i}") for i in range(4)] + [
    SigningKey.from_label(label) for label in ("devnet/oracle", "devnet/bridge", "devnet/operator")
]
PRICES = {1: 60_000 * USD, 2: 3_000 * USD, 3: 150 * USD}


EDGES = st.sampled_from([0, 1, -1, I64_MAX, I64_MIN, I64_MAX - 1, 2**62, 2**53, 10**15])
WILD = st.one_of(EDGES, st.integers(I64_MIN, I64_MAX))


def _ints(name: str) -> st.SearchStrategy[int]:
    """Values near what the chain accepts, so orders fill, positions open and accounts get
    liquidated (`_tx` makes one field of a tx, or all of them, wild: int64 edges or anything)."""
    if name.endswith("price_quote"):
        near = st.sampled_from(list(PRICES.values())).flatmap(
            lambda p: st.integers(p * 85 // 100, p * 115 // 100).map(lambda v: v - v % USD)
        )
        plausible = st.one_of(near, st.just(0))
    elif name == "size_atoms":
        plausible = st.integers(1, 3_000).map(lambda k: k * 10_000_000)
    elif name == "market_id":
        plausible = st.integers(0, 4)
    elif name == "amount_quote":
        plausible = st.integers(1, 2_000_000).map(lambda k: k * USD)
    elif name.endswith("_ppm"):
        plausible = st.integers(0, 300_000)
    elif name == "reduce_only":
        plausible = st.sampled_from([0, 0, 1])
    elif name in ("client_id", "deposit_id"):
        plausible = st.integers(1, 10**6)
    elif name == "time_ms":
        plausible = st.integers(1_767_225_600_000, 1_767_225_600_000 + 400_000)
    else:
        plausible = st.integers(0, 1000)
    return plausible


def _field(tp: Any, name: str, wild: bool) -> st.SearchStrategy[Any]:
    if tp is Side:
        return st.sampled_from(list(Side))
    if tp is OrderKind:
        return st.sampled_from(list(OrderKind))
    if tp is TimeInForce:
        return st.sampled_from(list(TimeInForce))
    if tp is MarketMode:
        return st.sampled_from(list(MarketMode))
    if tp is bytes:
        known = st.sampled_from([k.public_key for k in SIGNERS])
        return st.one_of(known, known, st.binary(min_size=32, max_size=32))
    if typing.get_origin(tp) is tuple:
        return st.lists(
            st.tuples(st.integers(1, 4), _ints("price_quote")),
            min_size=1,
            max_size=3,
            unique_by=lambda p: p[0],
        ).map(lambda ps: tuple(PricePoint(market_id=m, price_quote=p) for m, p in sorted(ps)))
    return WILD if wild else _ints(name)


def _natural_signer(cls: type) -> st.SearchStrategy[SigningKey]:
    """The key that may send this kind (a trader for trading kinds)."""
    special = {
        "Deposit": SIGNERS[5],
        "OracleUpdate": SIGNERS[4],
        "SetMarketMode": SIGNERS[6],
        "SetMarketParams": SIGNERS[6],
        "Recovery": SIGNERS[6],
    }.get(cls.__name__)
    return st.just(special) if special else st.sampled_from(SIGNERS[:4])


@st.composite
def _tx(draw: st.DrawFn, nonces: dict[bytes, int]) -> SignedTx:
    cls = draw(st.sampled_from(sorted(BODY_TYPES.values(), key=lambda c: c.TAG)))
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "nonce"]
    if cls is PlaceOrder and draw(st.integers(0, 3)):  # a real order in 3 of 4 placements
        fields = draw(_order_fields())
        key = draw(st.sampled_from(SIGNERS[:4]))
        nonce = nonces.get(key.public_key, 0)
        nonces[key.public_key] = nonce + 1
        return sign_tx(PlaceOrder(nonce=nonce, **fields), key, b"perpchain-devnet-1")
    wild = draw(st.sampled_from([*names, "all", None, None, None, None]))
    fields = {name: draw(_field(hints[name], name, wild in (name, "all"))) for name in names}
    key = draw(st.one_of(_natural_signer(cls), _natural_signer(cls), st.sampled_from(SIGNERS)))
    fresh = nonces.get(key.public_key, 0)
    nonce = draw(st.one_of(st.just(fresh), st.just(fresh), st.integers(0, fresh + 70), WILD))
    if nonce == fresh:
        nonces[key.public_key] = fresh + 1
    return sign_tx(cls(nonce=nonce, **fields), key, b"perpchain-devnet-1")


@st.composite
def _order_fields(draw: st.DrawFn) -> dict[str, Any]:
    """An order a trader could mean: a market's price +-15% (so some fall outside the band),
    sizes up to 300 units, every kind and time in force (reduce-only too)."""
    market_id = draw(st.integers(1, 3))
    price = PRICES[market_id]
    kind = draw(st.sampled_from(list(OrderKind)))
    limit = draw(st.integers(price * 85 // 100, price * 115 // 100)) // USD * USD
    return {
        "market_id": market_id,
        "side": draw(st.sampled_from(list(Side))),
        "kind": kind,
        "tif": draw(st.sampled_from(list(TimeInForce))),
        "price_quote": draw(st.sampled_from([limit, 0])) if kind != OrderKind.LIMIT else limit,
        "size_atoms": draw(st.integers(1, 30_000)) * 10_000_000 // (1 if market_id == 3 else 10),
        "reduce_only": draw(st.sampled_from([0, 0, 1])),
        "trigger_price_quote": limit if kind in (OrderKind.STOP_LOSS, OrderKind.TAKE_PROFIT) else 0,
        "client_id": draw(st.integers(1, 10**9)),
    }


@st.composite
def _blocks(draw: st.DrawFn) -> list[tuple[int, list[SignedTx]]]:
    nonces: dict[bytes, int] = {}
    return [
        (draw(st.integers(1, 90_000)), draw(st.lists(_tx(nonces), min_size=1, max_size=8)))
        for _ in range(draw(st.integers(1, 4)))
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_blocks())
def test_any_txs_apply_or_reject_and_re_execute_to_the_same_root(
    blocks: list[tuple[int, list[SignedTx]]],
) -> None:
    chain = Chain()
    codes = set()
    for dt_ms, txs in blocks:
        for receipt in chain.block(*txs, dt_ms=dt_ms):  # raises on any invariant violation
            codes.add(receipt.code)
    assert codes <= {0} | {int(code) for code in Reject}
    assert Reject.TX_FAILED not in codes, "an unforeseen error is a bug to fix, not a code"
    again = Chain()
    for dt_ms, txs in blocks:
        again.block(*txs, dt_ms=dt_ms)
    assert again.root() == chain.root()
