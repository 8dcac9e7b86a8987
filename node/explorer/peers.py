"""Other nodes the explorer compares itself with (`[explorer] peers`, the devnet's followers):
every second, each peer's `node_status` over its public JSON-RPC, and whether its state root at
its height is the one this node's store has there. Imports node.client and node.store.

The peers are asked from a worker thread (node.client is blocking urllib, 2 s timeout), one at
a time, by one background task: page views never wait for a peer.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from node.client import RpcCallError, RpcClient, RpcUnavailable
from node.store import HeightUnavailable, VersionedStore

POLL_S = 1.0
TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class PeerState:
    url: str
    height: int | None = None
    mode: str = "unknown"
    halt_reason: str = ""
    root: str = ""
    agrees: str = "unknown"  # "yes", "DIFFERS", "ahead" (past our head), "down", "unknown"

    def to_json(self) -> dict[str, object]:
        return {
            "url": self.url,
            "height": None if self.height is None else str(self.height),
            "mode": self.mode,
            "halt_reason": self.halt_reason,
            "root": self.root,
            "agrees": self.agrees,
        }


def parse_peers(text: str) -> list[str]:
    return [url for url in (part.strip() for part in text.split(",")) if url]


class PeerWatch:
    def __init__(self, store: VersionedStore, urls: list[str]) -> None:
        self.store = store
        self.clients = [RpcClient(url, timeout_s=TIMEOUT_S) for url in urls]
        self.states = {url: PeerState(url) for url in urls}

    def compare(self, url: str, status: dict[str, object]) -> PeerState:
        height = int(str(status.get("height", "-1")))
        root = str(status.get("state_root") or "")
        if height > self.store.height:
            agrees = "ahead"
        elif height < 0:
            agrees = "unknown"
        else:
            try:
                agrees = "yes" if self.store.root(height).hex() == root else "DIFFERS"
            except HeightUnavailable:
                agrees = "unknown"
        return PeerState(
            url=url,
            height=height,
            mode=str(status.get("mode") or "unknown"),
            halt_reason=str(status.get("halt_reason") or ""),
            root=root,
            agrees=agrees,
        )

    async def run(self) -> None:
        while True:
            for client in self.clients:
                try:
                    status = await trio.to_thread.run_sync(client.call, "node_status")
                    self.states[client.url] = self.compare(client.url, status)
                except (RpcUnavailable, RpcCallError, ValueError, TypeError):
                    self.states[client.url] = PeerState(client.url, mode="down", agrees="down")
            await trio.sleep(POLL_S)
