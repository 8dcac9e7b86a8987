"""Genesis: the JSON document (integers as decimal strings, keys as hex) parsed into records,
and the state of block 0. Imports node.core.{codec,crypto,fixed,keys,records}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from node.core import codec, keys
from node.core.crypto import check_public_key
from node.core.fixed import I64_MAX, MAX_PRICE_QUOTE, PPM
from node.core.records import (
    Account,
    AccountId,
    ChainParams,
    Market,
    MarketId,
    MarketMode,
    Totals,
)

DEFAULT_PRICE_BAND_PPM = 100_000  # 10%: orders and fills within oracle x (1 +- 10%)
DEFAULT_IMPACT_NOTIONAL_QUOTE = 10_000 * 10**6  # the funding premium's depth: 10,000 USD


class GenesisError(ValueError):
    """The genesis document is malformed; the message names the field."""


@dataclass(frozen=True, slots=True)
class Genesis:
    chain_id: bytes
    genesis_time_ms: int
    params: ChainParams
    markets: tuple[Market, ...]
    accounts: tuple[Account, ...]  # sorted by id; includes the liquidator
    insurance_fund_quote: int

    @property
    def producer_key(self) -> bytes:
        return self.params.producer_key

    @property
    def oracle_keys(self) -> tuple[bytes, ...]:
        return (self.params.oracle_key,)

    @property
    def bridge_key(self) -> bytes:
        return self.params.bridge_key

    @property
    def operator_key(self) -> bytes:
        return self.params.operator_key


def _int(doc: dict[str, Any], name: str, *, low: int = 0, high: int = I64_MAX) -> int:
    if name not in doc:
        raise GenesisError(f"missing field {name!r}")
    value = doc[name]
    if type(value) is not str or not value.lstrip("-").isdigit():
        raise GenesisError(f"{name} must be an integer as a decimal string, got {value!r}")
    number = int(value)
    if not low <= number <= high:
        raise GenesisError(f"{name}={number} outside [{low}, {high}]")
    return number


def _opt(doc: dict[str, Any], name: str, default: int, *, low: int = 0, high: int = I64_MAX) -> int:
    """An optional integer field: its default when absent, else checked as `_int` does."""
    return _int(doc, name, low=low, high=high) if name in doc else default


def _key(doc: dict[str, Any], name: str) -> bytes:
    value = doc.get(name)
    try:
        raw = bytes.fromhex(value) if type(value) is str else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise GenesisError(f"{name} must be a 32-byte key in hex, got {value!r}")
    if not check_public_key(raw):  # not a point, non-canonical, or small order (issue 20)
        raise GenesisError(f"{name} is not a valid Ed25519 public key: {value!r}")
    return raw


def parse_genesis(doc: dict[str, Any]) -> Genesis:
    if type(doc) is not dict:
        raise GenesisError("genesis must be a JSON object")
    chain_id = doc.get("chain_id")
    if type(chain_id) is not str or not 0 < len(chain_id) <= 64 or not chain_id.isascii():
        raise GenesisError(f"chain_id must be 1..64 ASCII characters, got {chain_id!r}")
    time_ms = _int(doc, "genesis_time_ms", low=1)
    keys_doc = doc.get("keys") or {}
    p = doc.get("params") or {}
    liquidator_doc = doc.get("liquidator") or {}
    params = ChainParams(
        chain_id=chain_id.encode(),
        bridge_key=_key(keys_doc, "bridge"),
        oracle_key=_key(keys_doc, "oracle"),
        operator_key=_key(keys_doc, "operator"),
        producer_key=_key(keys_doc, "producer"),
        liquidator=AccountId(_key(liquidator_doc, "address")),
        funding_interval_ms=_int(p, "funding_interval_ms", low=1),
        funding_period_ms=_int(p, "funding_period_ms", low=1),
        max_funding_gap_ms=_int(p, "max_funding_gap_ms", low=1),
        oracle_stale_ms=_int(p, "oracle_stale_ms", low=1),
        oracle_max_jump_ppm=_int(p, "oracle_max_jump_ppm", low=1, high=PPM),
        maker_fee_ppm=_int(p, "maker_fee_ppm", high=PPM),
        taker_fee_ppm=_int(p, "taker_fee_ppm", high=PPM),
        liquidation_penalty_ppm=_int(p, "liquidation_penalty_ppm", high=PPM),
        max_open_orders=_int(p, "max_open_orders", low=1, high=10_000),
        max_order_size_atoms=_int(p, "max_order_size_atoms", low=1),
        max_deposit_quote=_int(p, "max_deposit_quote", low=1),
        breaker_notional_quote=_int(p, "breaker_notional_quote", low=1),
        breaker_move_ppm=_int(p, "breaker_move_ppm", high=PPM),
        breaker_min_notional_quote=_opt(p, "breaker_min_notional_quote", 0),
        nonce_window=_int(p, "nonce_window", low=1, high=64),
    )
    markets = []
    for index, m in enumerate(doc.get("markets") or []):
        symbol = m.get("symbol")
        if type(symbol) is not str or not 0 < len(symbol) <= 32 or not symbol.isascii():
            raise GenesisError(f"markets[{index}].symbol must be 1..32 ASCII characters")
        imf = _int(m, "initial_margin_ppm", low=1, high=PPM)
        mmf = _int(m, "maintenance_margin_ppm", low=1, high=PPM)
        if mmf >= imf:
            raise GenesisError(f"markets[{index}]: maintenance margin must be below initial")
        band = _opt(m, "price_band_ppm", DEFAULT_PRICE_BAND_PPM, low=1, high=PPM // 2)
        if band <= mmf:
            # Inside a band narrower than the maintenance margin a fill could not even close a
            # position an oracle move had put under maintenance margin at its bankruptcy side.
            raise GenesisError(
                f"markets[{index}]: price_band_ppm={band} must exceed maintenance_margin_ppm={mmf}"
            )
        markets.append(
            Market(
                market_id=MarketId(_int(m, "id", low=1, high=2**32 - 1)),
                symbol=symbol.encode(),
                tick_quote=_int(m, "tick_quote", low=1),
                step_atoms=_int(m, "step_atoms", low=1),
                initial_margin_ppm=imf,
                maintenance_margin_ppm=mmf,
                max_funding_rate_ppm=_int(m, "max_funding_rate_ppm", high=PPM),
                oracle_price_quote=_int(m, "oracle_price_quote", low=1, high=MAX_PRICE_QUOTE),
                oracle_time_ms=time_ms,
                funding_index_quote=0,
                last_funding_ms=time_ms,
                funding_ticks=0,
                open_interest_atoms=0,
                mode=MarketMode.OPEN,
                price_band_ppm=band,
                impact_notional_quote=_opt(
                    m, "impact_notional_quote", DEFAULT_IMPACT_NOTIONAL_QUOTE, low=1
                ),
            )
        )
    ids = [m.market_id for m in markets]
    if not markets or len(set(ids)) != len(ids):
        raise GenesisError("markets must be non-empty with unique ids")
    accounts: dict[bytes, Account] = {}
    for a in [liquidator_doc, *(doc.get("accounts") or [])]:
        account_id = AccountId(_key(a, "address"))
        if account_id in accounts:
            raise GenesisError(f"account {account_id.hex()} listed twice")
        accounts[account_id] = Account(
            account_id=account_id,
            collateral_quote=_int(a, "collateral_quote"),
            open_orders=0,
            markets=(),
        )
    return Genesis(
        chain_id=params.chain_id,
        genesis_time_ms=time_ms,
        params=params,
        markets=tuple(sorted(markets, key=lambda m: m.market_id)),
        accounts=tuple(accounts[k] for k in sorted(accounts)),
        insurance_fund_quote=_insurance_fund(doc, params),
    )


def _insurance_fund(doc: dict[str, Any], params: ChainParams) -> int:
    """The insurance fund must be funded: it covers bankruptcies before deleveraging does, and
    a chain that starts with 0 deleverages its users at the first bankruptcy."""
    fund = _int(doc, "insurance_fund_quote", low=1)
    if params.breaker_min_notional_quote > params.breaker_notional_quote:
        raise GenesisError("breaker_min_notional_quote must not exceed breaker_notional_quote")
    if params.funding_interval_ms > params.max_funding_gap_ms:
        raise GenesisError("max_funding_gap_ms must be at least funding_interval_ms")
    return fund


def genesis_writes(genesis: Genesis) -> tuple[tuple[bytes, bytes], ...]:
    """The state of block 0, sorted by key."""
    deposits = genesis.insurance_fund_quote + sum(a.collateral_quote for a in genesis.accounts)
    totals = Totals(
        net_deposits_quote=deposits,
        fee_pool_quote=0,
        insurance_fund_quote=genesis.insurance_fund_quote,
        next_order_id=1,
        last_block_time_ms=genesis.genesis_time_ms,
    )
    writes = [(keys.PARAMS, codec.encode(genesis.params)), (keys.TOTALS, codec.encode(totals))]
    writes += [(keys.market(m.market_id), codec.encode(m)) for m in genesis.markets]
    writes += [(keys.account(a.account_id), codec.encode(a)) for a in genesis.accounts]
    return tuple(sorted(writes))
