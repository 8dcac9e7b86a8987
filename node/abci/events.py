"""Our block and tx events as ABCI events (type `perp.<kind>`, string attributes: the fields
of the JSON-RPC event objects, so an indexer sees what `perp_*` reads show, less those that
are zero or empty; `account` and `market_id` are indexed). Imports
node.chain.producer (event_json) and the generated protobuf modules."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from node.abci.proto.tendermint.abci import types_pb2 as pb
from node.chain.producer import event_json
from node.core.records import Event


def abci_events(events: Iterable[Event]) -> list[Any]:
    out = []
    for item in events:
        fields = event_json(item)
        kind = fields.pop("kind")
        out.append(
            pb.Event(
                type=f"perp.{kind}",
                attributes=[
                    pb.EventAttribute(key=key, value=value, index=key in ("account", "market_id"))
                    for key, value in fields.items()
                    if value not in ("", "0")  # left out: zero or empty (none of this kind)
                ],
            )
        )
    return out
