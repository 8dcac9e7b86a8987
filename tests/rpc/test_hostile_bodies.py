"""Issue 20, part A: no request body can freeze the event loop.

Each hostile 1 MiB shape is parsed in one linear pass (node.rpc.parsing) and answered with a
JSON-RPC error, in-process within a loose bound, and through a real node on real sockets while
another client's `node_status` polls keep being answered. Precise figures (best of several
runs on the 2-core VM) are in docs/PERFORMANCE.md, "Hostile bodies"; run with `-s` to print
this machine's.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import pytest
import trio

from node.rpc.jsonrpc import Dispatcher, ErrorCode, Limits, MethodTable
from tests.e2e.chain import make_chain, running_node
from tests.rpc.client import http_request

MIB = 1 << 20
STATUS = json.dumps({"jsonrpc": "2.0", "method": "node_status", "id": 7}).encode()


def _fill(prefix: bytes, unit: bytes, suffix: bytes = b"") -> bytes:
    count = (MIB - len(prefix) - len(suffix)) // len(unit)
    return prefix + unit * count + suffix


# name -> (body of at most 1 MiB, the error code it must get)
HOSTILE: dict[str, tuple[bytes, int]] = {
    # Froze the loop ~12 s at 64 KB under the old regex pre-scan (quadratic backtracking).
    'unterminated string of \\"': (_fill(b'{"jsonrpc":"2.0","method":"', b'\\"'), -32700),
    "[ x 1 MiB": (b"[" * MIB, -32700),
    '{"a": nested': (_fill(b"", b'{"a":'), -32700),
    "long number": (b"1" * MIB, -32700),
    "long fraction": (_fill(b"0.", b"1"), -32600),
    "lone surrogates": (_fill(b'{"jsonrpc":"2.0","id":"', b"\\ud800", b'"}'), -32700),
    "deep under the recursion limit": (b"[" * 900 + b"]" * 900, -32700),
    "wide params array": (
        _fill(b'{"jsonrpc":"2.0","method":"echo","id":1,"params":{"a":[', b"1,", b"1]}}"),
        0,  # a valid request: echo answers it
    ),
}
for _name, (_body, _) in HOSTILE.items():
    assert len(_body) <= MIB, _name


async def echo(params: dict[str, Any]) -> Any:
    return len(params.get("a", ()))


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_body_is_answered_quickly_in_process(name: str) -> None:
    body, code = HOSTILE[name]
    dispatcher = Dispatcher(MethodTable({"echo": echo}), Limits())
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        response = await dispatcher.handle_body(body)
        best = min(best, time.perf_counter() - started)
    assert response is not None
    answer = json.loads(response)
    if code:
        assert answer["error"]["code"] == code, answer
    else:
        assert "result" in answer, answer
    print(f"\n{name}: {len(body)} bytes, handled in {best * 1000:.2f} ms")
    # 100 ms is the aim (docs/PERFORMANCE.md); a loose bound here for a loaded shared VM.
    assert best < 0.5, f"{name}: {best * 1000:.1f} ms"


async def test_hostile_bodies_do_not_stall_a_real_node(tmp_path: pathlib.Path) -> None:
    home = tmp_path / "node"
    make_chain(home, 2)
    latencies: list[float] = []
    async with running_node(home) as (url, _cancel):
        port = int(url.rsplit(":", 1)[1])

        async def poll_status(stop: trio.Event) -> None:
            while not stop.is_set():
                started = time.perf_counter()
                response = await http_request(port, "POST", "/", STATUS)
                latencies.append(time.perf_counter() - started)
                assert response.status == 200 and "result" in response.json()
                await trio.sleep(0.005)

        timings: dict[str, float] = {}
        async with trio.open_nursery() as nursery:
            stop = trio.Event()
            nursery.start_soon(poll_status, stop)
            await trio.sleep(0.05)
            for name, (body, code) in HOSTILE.items():
                if not code:
                    continue  # `echo` is not a node method
                started = time.perf_counter()
                response = await http_request(port, "POST", "/", body)
                timings[name] = time.perf_counter() - started
                assert response.status == 200, (name, response.status, response.body[:200])
                assert response.json()["error"]["code"] == code, name
            await trio.sleep(0.05)
            stop.set()
    print("\nround trips (1 MiB sent over loopback):")
    for name, seconds in timings.items():
        print(f"  {name}: {seconds * 1000:.1f} ms")
    print(f"node_status polls: {len(latencies)}, slowest {max(latencies) * 1000:.1f} ms")
    assert len(latencies) >= len(timings)
    assert max(latencies) < 1.0
    assert max(timings.values()) < 2.0
    assert ErrorCode.PARSE_ERROR == -32700
