"""Per client address of one listener (docs/SECURITY.md): TCP connections open at once, checked
at accept before a byte is read (over it, node.rpc.listener answers a canned 503), and a request
rate (HTTP 429; a WebSocket's next message is read only when the rate allows). Also the accepted
connection as the apps see it, with the reset that frees a writer stuck on a client that stopped
reading. Imports trio, the stdlib and node.rpc.asgi.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import Final

import trio

from node.rpc.asgi import Scope

# The key in the ASGI scope's "state" under which serve_asgi hands the app its ClientConnection.
CLIENT_STATE_KEY: Final = "perpchain.client"


class ClientConnection:
    """One accepted TCP connection, as the app sees it (scope["state"][CLIENT_STATE_KEY])."""

    def __init__(self, limits: ClientLimits, host: str, stream: trio.SocketStream) -> None:
        self.limits = limits
        self.host = host
        self.stream = stream
        self.aborted = False
        self.cancel_scope = trio.CancelScope()  # around hypercorn's handling of it

    def end_within(self, seconds: float) -> None:
        """The app is done with this connection (a WebSocket ended): hypercorn gets `seconds`
        for the closing handshake, then its tasks are cancelled. Without this a closed
        WebSocket's connection lingers until hypercorn's ping task next wakes (up to the ping
        interval, 20 s), counted against its address all that time."""
        deadline = trio.current_time() + seconds
        self.cancel_scope.deadline = min(self.cancel_scope.deadline, deadline)

    def request_wait_s(self) -> float:
        """0 if this client address may make a request now (a token is taken), else how long
        until it may."""
        return self.limits.take_token(self.host)

    def abort(self) -> None:
        """Reset the connection (RST, kernel buffers freed): a write blocked on it fails at
        once with ClosedResourceError, which hypercorn treats as the client gone."""
        if self.aborted:
            return
        self.aborted = True
        sock = self.stream.socket
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # trio notifies every task waiting on it (notify_closing)


class ClientLimits:
    """Per client address (the peer IP, loopback included) of one listener: TCP connections
    open at once, checked at accept, and a request rate, a token bucket refilled continuously
    that holds one second's worth (`requests_per_s`, 0 = unlimited)."""

    # Buckets of addresses with no open connection are forgotten once this many exist (a full
    # bucket is the same as no bucket; a partial one is kept, so reconnecting does not refill).
    MAX_IDLE_BUCKETS: Final = 10_000

    def __init__(self, *, connections_per_client: int, requests_per_s: int) -> None:
        self.connections_per_client = connections_per_client
        self.requests_per_s = requests_per_s
        self.open: dict[str, int] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # host -> (tokens, at time s)
        self.refused_connections = 0
        self.limited_requests = 0

    @classmethod
    def unlimited(cls) -> ClientLimits:
        return cls(connections_per_client=1 << 30, requests_per_s=0)

    def admit(self, stream: trio.SocketStream) -> ClientConnection | None:
        """The connection, counted against its address; None if the address is at its limit
        (or the peer is already gone)."""
        try:
            host = str(stream.socket.getpeername()[0])
        except OSError:
            return None
        count = self.open.get(host, 0)
        if count >= self.connections_per_client:
            self.refused_connections += 1
            return None
        self.open[host] = count + 1
        return ClientConnection(self, host, stream)

    def release(self, connection: ClientConnection) -> None:
        count = self.open.get(connection.host, 0) - 1
        if count > 0:
            self.open[connection.host] = count
        else:
            self.open.pop(connection.host, None)
            if len(self._buckets) > self.MAX_IDLE_BUCKETS:
                self._forget_full_buckets()

    def take_token(self, host: str) -> float:
        if self.requests_per_s <= 0:
            return 0.0
        now = trio.current_time()
        capacity = float(self.requests_per_s)
        tokens, then = self._buckets.get(host, (capacity, now))
        tokens = min(capacity, tokens + (now - then) * self.requests_per_s)
        if tokens >= 1:
            self._buckets[host] = (tokens - 1, now)
            return 0.0
        self._buckets[host] = (tokens, now)
        self.limited_requests += 1
        return (1 - tokens) / self.requests_per_s

    def _forget_full_buckets(self) -> None:
        now = trio.current_time()
        for host, (tokens, then) in list(self._buckets.items()):
            if host not in self.open and tokens + (now - then) * self.requests_per_s >= (
                self.requests_per_s
            ):
                del self._buckets[host]


def client_of(scope: Scope) -> ClientConnection | None:
    state = scope.get("state") or {}
    client = state.get(CLIENT_STATE_KEY)
    return client if isinstance(client, ClientConnection) else None
