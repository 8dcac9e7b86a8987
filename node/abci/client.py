"""The CometBFT side of the ABCI socket, for the tests, the benchmark and operators' probes:
framed Requests, each synchronous call followed by a Flush as CometBFT's socket client does,
responses read in order. Imports trio and node.abci.codec."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from node.abci import codec


class AbciClient:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.frames = codec.FrameBuffer()

    @classmethod
    async def connect(cls, address: str) -> AbciClient:
        if address.startswith("unix://"):
            stream: trio.abc.Stream = await trio.open_unix_socket(address[len("unix://") :])
        else:
            host, port = address[len("tcp://") :].rsplit(":", 1)
            stream = await trio.open_tcp_stream(host, int(port))
        return cls(stream)

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def read_response(self) -> codec.Response | None:
        """The next response; None when the server closed the connection."""
        while True:
            payload = self.frames.next_frame()
            if payload is not None:
                return codec.decode_response(payload)
            data = await self.stream.receive_some(1 << 16)
            if not data:
                return None
            self.frames.feed(data)

    async def call(self, kind: str, fill: Callable[[Any], None] | None = None) -> Any:
        """One request and a Flush; the request's own response (its oneof sub-message), or
        the Response itself when it is an exception."""
        request = codec.request_of(kind, fill)
        await self.send_raw(
            codec.encode_request(request) + codec.encode_request(codec.request_of("flush"))
        )
        response = await self.read_response()
        flushed = await self.read_response()
        assert response is not None and flushed is not None
        assert flushed.WhichOneof("value") == "flush", flushed
        if response.WhichOneof("value") == "exception":
            return response
        assert response.WhichOneof("value") == kind, response
        return getattr(response, kind)

    async def pipeline(self, requests: list[codec.Request]) -> list[codec.Response]:
        """Send `requests` back to back and one Flush (as CometBFT's asynchronous CheckTx
        stream does); their responses in order."""
        data = b"".join(codec.encode_request(r) for r in requests)
        await self.send_raw(data + codec.encode_request(codec.request_of("flush")))
        out = []
        for _ in range(len(requests) + 1):
            response = await self.read_response()
            assert response is not None, "the server closed the connection"
            out.append(response)
        assert out[-1].WhichOneof("value") == "flush"
        return out[:-1]
