"""Fault injection for the incident drill: TEST-ONLY, refused unless PERPCHAIN_FAULT_INJECTION=1
is set in the node's environment (never in the Docker image or a production config). Imports
node.core and node.store.

`zero_funding_indices` plays the migration of the incident: it rewrites every market record with
its cumulative funding index set to zero straight into the database rows, around the writer (no
block, no diff, no version, no root). `bypass_checks` is the second hook of the drill: the
producer stops checking invariants before commit, so blocks are built on the damaged state.
"""

from __future__ import annotations

import os
from dataclasses import replace

from node.core import codec, keys
from node.core.records import Market
from node.store import VersionedStore, schema

ENV = "PERPCHAIN_FAULT_INJECTION"


class FaultInjectionDisabled(RuntimeError):
    pass


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


def require_enabled() -> None:
    if not enabled():
        raise FaultInjectionDisabled(f"fault injection is off (test-only; set {ENV}=1)")


def zero_funding_indices(store: VersionedStore) -> list[int]:
    """Zero every market's funding index in the flat rows, around the writer; the market ids."""
    require_enabled()
    ops: list[tuple[bytes, bytes | None]] = []
    touched = []
    for key, raw in store.iter_prefix(keys.MARKET):
        if len(key) != len(keys.market(0)):
            continue
        market = codec.decode_state(raw, Market)
        if market.funding_index_quote == 0:
            continue
        ops.append((schema.flat_key(key), codec.encode(replace(market, funding_index_quote=0))))
        touched.append(market.market_id)
    store._db.write(ops, sync=True)  # noqa: SLF001 - the point: a write around the writer
    return touched
