"""Operator checkpoints: named pins of (height, state root) that pruning never removes
(`VersionedStore.checkpoint`). Validated names, a reason and a creation time, listing as JSON.
Used by `perpchain checkpoint` on a stopped node (the CLI opens the store) and by the writer of a
running node (admin RPC `admin_checkpoint*`, node.app.WriterCommands). Imports node.store.

The store's pin row holds (height, root, reason text). The creation time has no field of its
own there yet, so a checkpoint made here stores its reason text as a small JSON document,
`{"created_ms": ..., "reason": ..., "v": 1}`; a pin whose text is not such a document (made by
other code, e.g. maintenance) is listed with that text as its reason and no creation time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from node.store import HeightUnavailable, VersionedStore, schema

NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
MAX_REASON_CHARS = 256


class CheckpointError(ValueError):
    """A refused checkpoint command; `kind` says which rule, for the RPC error code:
    invalid (name, reason, height above the head), exists, not_found, unavailable (pruned or
    rolled-back height)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class CheckpointInfo:
    name: str
    height: int
    root: bytes
    reason: str
    created_ms: int | None  # None: not made through this module

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "height": str(self.height),
            "state_root": self.root.hex(),
            "reason": self.reason,
            "created_ms": None if self.created_ms is None else str(self.created_ms),
        }


def check_name(name: object) -> str:
    if not isinstance(name, str) or NAME_PATTERN.match(name) is None:
        raise CheckpointError(
            "invalid",
            f"checkpoint name {name!r}: 1 to 64 characters from A-Z a-z 0-9 . _ -",
        )
    return name


def encode_reason(reason: str, created_ms: int) -> str:
    return json.dumps({"created_ms": created_ms, "reason": reason, "v": 1}, sort_keys=True)


def decode_reason(text: str) -> tuple[str, int | None]:
    """(reason, created_ms) from a pin's stored text; plain text is a reason without a time."""
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            return text, None
        if (
            isinstance(doc, dict)
            and doc.get("v") == 1
            and isinstance(doc.get("reason"), str)
            and type(doc.get("created_ms")) is int
        ):
            return doc["reason"], doc["created_ms"]
    return text, None


def _stored_text(store: VersionedStore, name: str, checkpoint: Any) -> str:
    text = getattr(checkpoint, "reason", None)  # when the store's Checkpoint carries it
    if isinstance(text, str):
        return text
    # The pin row holds the reason but Checkpoint does not expose it yet: read the row the way
    # the store does (its seal is checked by _decode_checkpoint).
    raw = store._db.get(schema.checkpoint_key(name.encode()))
    if raw is None:
        return ""
    return str(store._decode_checkpoint(raw)[2])


def list_checkpoints(store: VersionedStore) -> list[CheckpointInfo]:
    """Every pin, ordered by height then name."""
    out = []
    for checkpoint in store.checkpoints():
        reason, created_ms = decode_reason(_stored_text(store, checkpoint.name, checkpoint))
        out.append(
            CheckpointInfo(checkpoint.name, checkpoint.height, checkpoint.root, reason, created_ms)
        )
    return out


def get_checkpoint(store: VersionedStore, name: str) -> CheckpointInfo:
    """The pin named `name`. An existing pin is found whatever its name (other code may pin
    under names this module would refuse, e.g. with a `/`); a missing one with a name outside
    the rule is refused as invalid, not reported as missing."""
    for info in list_checkpoints(store):
        if info.name == name:
            return info
    check_name(name)
    raise CheckpointError("not_found", f"no checkpoint named {name!r}")


def create_checkpoint(
    store: VersionedStore,
    name: str,
    *,
    created_ms: int,
    height: int | None = None,
    reason: str = "",
) -> CheckpointInfo:
    """Pin `height` (default: the head) under `name`. Checks everything before writing."""
    check_name(name)
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise CheckpointError("invalid", f"the reason is limited to {MAX_REASON_CHARS} characters")
    if any(info.name == name for info in list_checkpoints(store)):
        raise CheckpointError("exists", f"checkpoint {name!r} exists; delete it first")
    if store.height < 0:
        raise CheckpointError("unavailable", "an empty store has nothing to checkpoint")
    target = store.height if height is None else height
    if target < 0 or target > store.height:
        raise CheckpointError(
            "invalid", f"height {target} is not committed (the head is {store.height})"
        )
    try:
        store.root(target)
        store.checkpoint(name, height=target, reason=encode_reason(reason, created_ms))
    except HeightUnavailable as error:
        raise CheckpointError(
            "unavailable", f"height {target} is not retained (pruned or rolled back): {error}"
        ) from None
    return get_checkpoint(store, name)


def delete_checkpoint(store: VersionedStore, name: str) -> CheckpointInfo:
    """Unpin `name`; its height becomes prunable again. Returns what was deleted."""
    info = get_checkpoint(store, name)
    store.delete_checkpoint(name)
    return info
