"""ABCI socket framing and message codec (CometBFT v0.38). Imports the generated protobuf
modules (node.abci.proto, runtime: the `protobuf` package of the `abci` extra) only.

On the socket every Request and Response is a protobuf message preceded by its length as an
unsigned varint (CometBFT v0.38 `abci/types/messages.go` writes with
`protoio.NewDelimitedWriter`: `binary.PutUvarint`, not the zigzag varint of v0.34). A frame
whose length prefix is not a valid uvarint (more than 10 bytes, or beyond 64 bits) or is
larger than `max_frame_bytes` cannot be resynchronised: the reader raises FrameError and the
server answers one exception and closes that connection. A frame that decodes but is not a
Request we serve (unknown or empty `value` oneof, undecodable bytes) raises RequestError:
the server answers an exception and goes on reading that connection.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import DecodeError

from node.abci.proto.tendermint.abci import types_pb2 as pb

MAX_VARINT_BYTES = 10  # a uint64 in base 128
# CometBFT reads up to 2 GB; a block of 20,000 txs of 4 KiB is ~80 MiB, far below this.
DEFAULT_MAX_FRAME_BYTES = 256 << 20

Request = pb.Request
Response = pb.Response


class FrameError(ValueError):
    """The byte stream is broken (bad length prefix, oversize frame): the connection ends."""


class RequestError(ValueError):
    """A well-framed message that is not a Request this server serves."""


def encode_uvarint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"uvarint of {value} < 0")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_uvarint(data: bytes | bytearray, start: int = 0) -> tuple[int, int] | None:
    """(value, end offset) of the uvarint at `start`, None when `data` ends inside it;
    FrameError when it is longer than 10 bytes or beyond 64 bits."""
    value = 0
    shift = 0
    for index in range(start, min(len(data), start + MAX_VARINT_BYTES)):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if value >> 64:
                raise FrameError("length prefix beyond 64 bits")
            return value, index + 1
        shift += 7
    if len(data) - start >= MAX_VARINT_BYTES:
        raise FrameError(f"length prefix longer than {MAX_VARINT_BYTES} bytes")
    return None


def frame(message: bytes) -> bytes:
    return encode_uvarint(len(message)) + message


class FrameBuffer:
    """Bytes received on one connection, cut into frames as they complete."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._data = bytearray()
        self._start = 0
        self.max_frame_bytes = max_frame_bytes

    def feed(self, data: bytes | bytearray) -> None:
        if self._start and self._start >= len(self._data) // 2:
            del self._data[: self._start]
            self._start = 0
        self._data += data

    def next_frame(self) -> bytes | None:
        """The next complete frame's payload, None until one is complete; FrameError when
        the stream is broken (checked as soon as the prefix is readable, before the body)."""
        decoded = decode_uvarint(self._data, self._start)
        if decoded is None:
            return None
        length, body = decoded
        if length > self.max_frame_bytes:
            raise FrameError(f"frame of {length} bytes > max {self.max_frame_bytes}")
        end = body + length
        if end > len(self._data):
            return None
        payload = bytes(self._data[body:end])
        self._start = end
        return payload


def decode_request(payload: bytes) -> Request:
    """A Request; RequestError for bytes that do not decode or carry no request we know
    (a oneof field this schema lacks is kept as an unknown field: `value` is unset)."""
    request = Request()
    try:
        request.ParseFromString(payload)
    except DecodeError as error:
        raise RequestError(f"undecodable request: {error}") from None
    if request.WhichOneof("value") is None:
        raise RequestError("unknown or empty request type")
    return request


def encode_response(response: Response) -> bytes:
    return frame(response.SerializeToString())


def exception_response(error: str) -> Response:
    response = Response()
    response.exception.error = error
    return response


def encode_request(request: Request) -> bytes:
    """The client side (tests, the benchmark): a framed Request."""
    return frame(request.SerializeToString())


def decode_response(payload: bytes) -> Response:
    response = Response()
    response.ParseFromString(payload)
    return response


def request_of(kind: str, fill: Callable[[object], None] | None = None) -> Request:
    """A Request whose oneof is `kind` (e.g. "flush"), filled by `fill(sub_message)`."""
    request = Request()
    sub = getattr(request, kind)
    sub.SetInParent()
    if fill is not None:
        fill(sub)
    return request
