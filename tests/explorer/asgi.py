"""Call the explorer's ASGI app in process (no sockets): one GET, its status, headers, body."""

from __future__ import annotations

import pathlib
import re
from typing import Any

from node.app import load_genesis
from node.chain.producer import ChainStatus
from node.explorer import Explorer, build_explorer
from node.rpc.methods import NodeContext, build_tables
from node.store import VersionedStore, blocks_db

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
HANDLER_ATTRIBUTE = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)
STYLE_ATTRIBUTE = re.compile(r"<[^>]+\sstyle\s*=", re.IGNORECASE)


class Response:
    def __init__(self, status: int, headers: dict[bytes, bytes], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    @property
    def text(self) -> str:
        return self.body.decode()

    def links(self, prefix: str) -> list[str]:
        return sorted(set(re.findall(rf'href="({re.escape(prefix)}[^"]*)"', self.text)))


async def get(
    app: Any,
    path: str,
    *,
    method: str = "GET",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Response:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": headers or [],
    }
    await app(scope, receive, send)
    start, body = sent
    return Response(start["status"], dict(start["headers"]), body["body"])


def explorer_on(
    store: VersionedStore, home: pathlib.Path, status: ChainStatus | None = None
) -> tuple[Explorer, NodeContext]:
    genesis = load_genesis(home)
    head = blocks_db.get_block(store, store.height)
    assert head is not None
    status = status or ChainStatus(mode="producing", head=head.header)
    context = NodeContext(store, genesis, status, None, None)
    public, _ = build_tables(context)
    explorer, _ = build_explorer(public, store=store, genesis=genesis, status=status)
    return explorer, context
