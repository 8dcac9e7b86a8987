"""tx_submit on a validator: forward to CometBFT's RPC `broadcast_tx_sync` (CheckTx on that
validator, then gossip). Imports trio, h11 (a dependency of hypercorn), node.core.errors and
node.chain.remote (the follower's forwarding errors, which tx_submit already maps).

The answer mirrors a producing node's tx_submit: `{"tx_hash", "accepted": "cometbft"}` when
CheckTx passed (CometBFT's mempool holds it; "already in the cache" is the same answer, as a
resubmission is idempotent on a producing node), our CheckTx code as the JSON-RPC error
1000 + Reject code (or 2007 for a sender's full share), CometBFT's own refusals (mempool
full) as 2007, and an unreachable CometBFT as RemoteUnavailable (2009 NOT_READY).
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from typing import Any

import h11
import trio

from node.chain.remote import RemoteCallError, RemoteUnavailable
from node.core.errors import Reject
from node.core.txs import tx_hash

TIMEOUT_S = 10.0
MAX_RESPONSE_BYTES = 1 << 20
TX_REJECTED_BASE = 1000
MEMPOOL_FULL = 2007


class CometRpc:
    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"--comet-rpc {url!r}: expected http://HOST:PORT")
        self.url = url
        self.host = parsed.hostname
        self.port = parsed.port or 80
        self.path = parsed.path or "/"

    async def call(self, method: str, params: dict[str, Any]) -> Any:
        """One JSON-RPC call over a fresh HTTP/1.1 connection: its result, RemoteCallError
        for a JSON-RPC error, RemoteUnavailable when CometBFT cannot be reached."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        try:
            with trio.fail_after(TIMEOUT_S):
                raw = await self._post(body.encode())
        except (OSError, trio.TooSlowError, h11.ProtocolError) as error:
            raise RemoteUnavailable(f"CometBFT RPC {self.url}: {error!r}") from None
        try:
            answer = json.loads(raw)
        except ValueError:
            raise RemoteUnavailable(f"CometBFT RPC {self.url}: not JSON") from None
        if answer.get("error"):
            failure = answer["error"]
            raise RemoteCallError(
                int(failure.get("code", -32603)),
                str(failure.get("message", "")),
                failure.get("data"),
            )
        return answer.get("result")

    async def _post(self, body: bytes) -> bytes:
        stream = await trio.open_tcp_stream(self.host, self.port)
        async with stream:
            conn = h11.Connection(h11.CLIENT)
            request = h11.Request(
                method="POST",
                target=self.path,
                headers=[
                    ("Host", f"{self.host}:{self.port}"),
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                    ("Connection", "close"),
                ],
            )
            await stream.send_all(conn.send(request) + conn.send(h11.Data(data=body)))
            await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
            chunks: list[bytes] = []
            size = 0
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(1 << 16))
                    continue
                if isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > MAX_RESPONSE_BYTES:
                        raise OSError("response too large")
                    chunks.append(bytes(event.data))
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    return b"".join(chunks)

    async def broadcast_tx(self, raw_hex: str) -> dict[str, Any]:
        raw = bytes.fromhex(raw_hex)
        try:
            result = await self.call("broadcast_tx_sync", {"tx": base64.b64encode(raw).decode()})
        except RemoteCallError as error:
            text = f"{error.message} {error.data or ''}"
            if "already exists in cache" in text:
                return {"tx_hash": tx_hash(raw).hex(), "accepted": "cometbft"}
            if "mempool is full" in text or "full" in text.lower():
                raise RemoteCallError(MEMPOOL_FULL, f"CometBFT: {text.strip()}") from None
            raise
        code = int(result.get("code", 0))
        if code == 0:
            return {"tx_hash": tx_hash(raw).hex(), "accepted": "cometbft"}
        log = str(result.get("log", ""))
        if result.get("codespace") == "perp" and code in Reject._value2member_map_:
            name = Reject(code).name
            data = {"reject": name, "reject_code": code, "detail": log}
            raise RemoteCallError(TX_REJECTED_BASE + code, f"Transaction rejected: {name}", data)
        if code == MEMPOOL_FULL:
            raise RemoteCallError(MEMPOOL_FULL, log)
        raise RemoteCallError(MEMPOOL_FULL, f"CometBFT CheckTx code {code}: {log}")
