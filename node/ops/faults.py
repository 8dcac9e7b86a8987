"""Fault injection for the incident drill: TEST-ONLY. Imports node.core and node.store.

A node reaches this module only through node.commands.FaultCommands, which node.app builds
only when `[testing] fault_injection = true` (or PERPCHAIN_FAULT_INJECTION=1) and NodeConfig
has checked that the genesis chain id is a devnet/test chain (node.config.fault_injection_
refusal); a normal node never imports it and has no admin_injectFault method. Tests call
`zero_funding_indices` directly on a store they built (tests/e2e/chain.py damaged_chain).

`zero_funding_indices` plays the migration of the incident: it rewrites every market record with
its cumulative funding index set to zero straight into the database rows, around the writer (no
block, no diff, no version, no root). `bypass_checks` (node.commands.FaultCommands) is the second
hook of the drill: the producer stops checking invariants before commit, so blocks are built on
the damaged state.
"""

from __future__ import annotations

from dataclasses import replace

from node.core import codec, keys
from node.core.records import Market, MarketId
from node.store import VersionedStore, schema

ENV = "PERPCHAIN_FAULT_INJECTION"  # the environment form of testing.fault_injection


def zero_funding_indices(store: VersionedStore) -> list[MarketId]:
    """Zero every market's funding index in the flat rows, around the writer; the market ids."""
    ops: list[tuple[bytes, bytes | None]] = []
    touched: list[MarketId] = []
    for key, raw in store.iter_prefix(keys.MARKET):
        if len(key) != len(keys.market(MarketId(0))):
            continue
        market = codec.decode_state(raw, Market)
        if market.funding_index_quote == 0:
            continue
        ops.append((schema.flat_key(key), codec.encode(replace(market, funding_index_quote=0))))
        touched.append(market.market_id)
    store._db.write(ops, sync=True)  # noqa: SLF001 - the point: a write around the writer
    return touched
