"""Issue 20, part B: every bad input gets the right JSON-RPC error, never HTTP 500 or -32603.

hypothesis builds requests for every public and admin method of a real node context (store,
mempool, producer, writer commands on a tmp home): params of random JSON shapes, the known
param names with integers (huge, negative, 2^53, 2^63, 2^64), integer strings (canonical, with
unicode digits such as "²", "١٢" or "１", leading zeros, signs), floats, booleans, hex of any
length (a 257-byte proof key, a tx whose fields are in uint64 range), strings with lone
surrogates, nested values; ids of every shape. The bulk runs in-process through the
dispatcher; a few hundred go through a real node over HTTP (public and admin listeners).
Counts are printed (`-s`) for docs/PERFORMANCE.md.
"""

from __future__ import annotations

import collections
import json
import pathlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.app import init_home, reconcile, run_node
from node.chain.clock import ManualClock
from node.chain.mempool import Mempool
from node.chain.producer import ChainStatus, Producer
from node.commands import WriterCommands
from node.config import MempoolSettings
from node.core.crypto import SigningKey
from node.core.genesis import parse_genesis
from node.core.records import MarketMode, OrderKind, Side, TimeInForce
from node.core.txs import PlaceOrder, sign_tx
from node.rpc.jsonrpc import Dispatcher, Limits
from node.rpc.methods import NodeContext, build_tables
from node.rpc.server import BoundListeners
from node.store import VersionedStore
from tests.e2e.chain import CHAIN_ID, genesis_doc, node_config
from tests.rpc.client import WsClient, http_request

# Every method and the param names it takes (test_every_method_is_fuzzed keeps this complete).
PARAMS: dict[str, tuple[str, ...]] = {
    "node_status": (),
    "chain_getBlock": ("height", "hash", "full_txs"),
    "chain_getRawBlocks": ("from_height", "count"),
    "chain_getReceipt": ("tx_hash",),
    "chain_getProof": ("key", "height"),
    "chain_getRollbacks": (),
    "perp_getMarkets": (),
    "perp_getMarket": ("market",),
    "perp_getAccount": ("address",),
    "perp_getNonce": ("address",),
    "perp_getOrderBook": ("market", "depth"),
    "perp_getFundingHistory": ("market", "limit"),
    "tx_submit": ("tx",),
    "tx_status": ("tx_hash",),
    "admin_halt": ("reason",),
    "admin_resume": (),
    "admin_setMarketMode": ("market", "mode"),
    "admin_maintenanceBegin": ("reason",),
    "admin_maintenanceEnd": ("expect_root",),
    "admin_maintenanceJob": ("kind",),
    "admin_rollback": ("to_height", "to_checkpoint", "dry_run", "reason"),
    "admin_checkpointCreate": ("name", "reason", "height"),
    "admin_checkpointList": (),
    "admin_checkpointDelete": ("name",),
}
# What a malformed request may get: the envelope codes, and the application codes a
# well-formed request may meet (NOT_FOUND, TX_REJECTED + n, WRONG_MODE...). Never -32603.
INTERNAL_ERROR = -32603
TRADER = SigningKey.from_label("devnet/trader/0")


def _order(**overrides: Any) -> PlaceOrder:
    fields: dict[str, Any] = {
        "nonce": 0,
        "market_id": 1,
        "side": Side.BUY,
        "kind": OrderKind.LIMIT,
        "tif": TimeInForce.GTC,
        "price_quote": 60_000 * 10**6,
        "size_atoms": 10**6,
        "reduce_only": 0,
        "trigger_price_quote": 0,
        "client_id": 1,
    }
    fields.update(overrides)
    return PlaceOrder(**fields)


def _with_body_field(raw: bytes, index: int, value: int) -> bytes:
    """A signed tx whose body field `index` is replaced (uint64 range, say): re-packed
    canonically, so only the value's range is wrong."""
    envelope = msgpack.unpackb(raw, raw=False)
    body = msgpack.unpackb(envelope[2], raw=False)
    body[index] = value
    envelope[2] = msgpack.packb(body, use_bin_type=True)
    return bytes(msgpack.packb(envelope, use_bin_type=True))


def _tx_hexes() -> list[str]:
    valid = sign_tx(_order(), TRADER, CHAIN_ID).raw
    out = [valid.hex(), "0x" + valid.hex(), valid[:-1].hex(), (valid + b"\x00").hex()]
    for index in range(1, 11):  # every field of the body, in uint64 range and beyond i64
        out.append(_with_body_field(valid, index, 2**64 - 1).hex())
        out.append(_with_body_field(valid, index, 2**63).hex())
        out.append(_with_body_field(valid, index, -(2**63)).hex())
    return out


_INTS = st.sampled_from(
    [0, 1, -1, 7, 2**31, 2**32, 2**53 - 1, 2**53, -(2**53), 2**63 - 1, 2**63, 2**64, -(2**63) - 1]
) | st.integers(min_value=-(10**30), max_value=10**30)
_INT_STRINGS = _INTS.map(str) | st.sampled_from(
    [
        "\u00b2",
        "\u0661\u0662",
        "\uff11",
        "1\u00b2",
        "01",
        "-0",
        "+1",
        " 1",
        "1 ",
        "1e3",
        "1.0",
        "0x10",
        "9" * 41,
        "",
        "-",
        "1_000",
        "\u0967",
    ]
)
_FLOATS = st.sampled_from([5.0, 1e3, 0.5, -0.0, 1e308, -1.5]) | st.floats(
    allow_nan=False, allow_infinity=False
)
_SURROGATES = st.sampled_from(["\ud800", "a\udfff", "\udbff\ud800", "\ud83d\ude00", "x\ud800y"])
_HEX = (
    st.binary(max_size=300).map(bytes.hex)
    | st.binary(max_size=40).map(lambda b: "0x" + b.hex())
    | st.sampled_from(
        [
            "00" * 256,  # the longest proof key
            "00" * 257,  # one byte too long: was -32603
            "ff" * 32,
            "0x" + "ab" * 32,
            "abc",
            "zz",
            "0X" + "00" * 32,
            TRADER.public_key.hex(),
            *_tx_hexes(),
        ]
    )
)
_WORDS = st.sampled_from(
    [
        "BTC-USD-PERP",
        "ETH-USD-PERP",
        "1",
        "2",
        "0",
        "nope",
        "compact",
        "zero_funding_indices",
        "pre-maintenance-0",
        "cp",
        "OPEN",
        "CANCEL_ONLY",
        "HALTED",
        *[m.name for m in MarketMode],
    ]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | _INTS
    | _INT_STRINGS
    | _FLOATS
    | st.text(max_size=12)
    | _SURROGATES
    | _HEX
    | _WORDS
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=4) | _SURROGATES, children, max_size=3)
    ),
    max_leaves=6,
)
_PARAM_VALUES = st.one_of(
    _INT_STRINGS,
    _INT_STRINGS,
    _INTS,
    _HEX,
    _HEX,
    _WORDS,
    _WORDS,
    _FLOATS,
    st.booleans(),
    st.none(),
    st.text(max_size=12),
    _SURROGATES,
    _VALUES,
)
_BAD_IDS = _SURROGATES | _FLOATS | st.booleans() | _VALUES


@st.composite
def requests(
    draw: st.DrawFn, extra: tuple[tuple[str, tuple[str, ...]], ...] = ()
) -> dict[str, Any]:
    table = {**PARAMS, **dict(extra)}
    method = draw(st.sampled_from([*table, "nope", "rpc.discover", ""]))
    names = table.get(method, ("x",))
    shape = draw(st.integers(min_value=0, max_value=9))
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if shape == 0:
        pass  # no params
    elif shape == 1:
        request["params"] = draw(_VALUES)  # any shape: array, scalar, object
    else:
        params = {name: draw(_PARAM_VALUES) for name in names if draw(st.booleans())}
        if draw(st.integers(min_value=0, max_value=9)) == 0:
            params[draw(st.text(max_size=5) | _SURROGATES)] = draw(_VALUES)
        request["params"] = params
    kind = draw(st.integers(min_value=0, max_value=19))
    if kind == 0:
        pass  # a notification: runs, answers nothing
    elif kind == 1:
        request["id"] = draw(_BAD_IDS)
    else:
        request["id"] = draw(st.integers() | st.text(max_size=6) | st.none())
    if draw(st.integers(min_value=0, max_value=30)) == 0:
        request["jsonrpc"] = draw(_VALUES)
    return request


def encode(request: dict[str, Any]) -> bytes:
    """ASCII JSON: a lone surrogate travels as its `\\ud800` escape, as a hostile client
    would send it."""
    return json.dumps(request).encode()


@dataclass
class Tally:
    requests: int = 0
    seconds: float = 0.0
    codes: collections.Counter[Any] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.codes = collections.Counter()

    def record(self, request: dict[str, Any], response: bytes | None) -> None:
        self.requests += 1
        if response is None:
            self.codes["(notification)"] += 1
            return
        answer = json.loads(response)
        assert isinstance(answer, dict), answer
        if "error" in answer:
            code = answer["error"]["code"]
            assert code != INTERNAL_ERROR, (request, answer)
            self.codes[code if code < 1000 or code > 1999 else "1000+n"] += 1
        else:
            self.codes["ok"] += 1


@dataclass
class Node:
    public: Dispatcher
    admin: Dispatcher
    admin_names: frozenset[str]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """The fuzzed node: its state changes as the requests go (halts, maintenance...)."""
    yield from _node(tmp_path_factory.mktemp("fuzz") / "node")


@pytest.fixture(scope="module")
def clean_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A node only the known-input cases use (none of them changes its mode)."""
    yield from _node(tmp_path_factory.mktemp("known") / "node")


def _node(home: pathlib.Path) -> Iterator[Node]:
    init_home(home, genesis_doc())
    genesis = parse_genesis(genesis_doc())
    store = VersionedStore.open(home / "data")
    try:
        status = ChainStatus(head=reconcile(store, genesis))
        status.mode = "producing"  # as the producer sets it when it starts
        mempool = Mempool(genesis.chain_id, MempoolSettings(), store, genesis.params.nonce_window)
        producer = Producer(
            store,
            SigningKey.from_label("devnet/producer"),
            mempool,
            ManualClock(genesis.genesis_time_ms + 1_000),
            interval_ms=250,
            status=status,
        )
        operator = SigningKey.from_label("devnet/operator")
        commands = WriterCommands(producer, operator, genesis)
        public, admin = build_tables(NodeContext(store, genesis, status, mempool, commands))
        limits = Limits(deadline_ms=5_000)
        yield Node(Dispatcher(public, limits), Dispatcher(admin, limits), frozenset(admin.names()))
    finally:
        store.close()


TALLY = Tally()


def test_every_method_is_fuzzed(node: Node) -> None:
    public = set(node.public.table.names())
    assert public | node.admin_names == set(PARAMS)


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(st.lists(requests(), min_size=20, max_size=20))
async def test_no_input_reaches_an_internal_error_in_process(
    node: Node, batch: list[dict[str, Any]]
) -> None:
    started = time.perf_counter()
    for request in batch:
        method = request["method"]
        dispatcher = node.admin if method in node.admin_names else node.public
        TALLY.record(request, await dispatcher.handle_body(encode(request)))
    TALLY.seconds += time.perf_counter() - started


def test_in_process_counts() -> None:
    print(f"\nin-process: {TALLY.requests} requests in {TALLY.seconds:.1f} s of dispatch")
    print(f"  codes: {dict(sorted(TALLY.codes.items(), key=str))}")
    assert TALLY.requests >= 10_000


_VALID_TX = sign_tx(_order(), TRADER, CHAIN_ID).raw


# The inputs issue 20 saw answered with HTTP 500 or -32603, and their neighbours.
@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        (b'{"jsonrpc":"2.0","method":"node_status","id":"\\ud800"}', -32700, "surrogate"),
        (b'{"jsonrpc":"2.0","method":"node_status","id":"\\udfff","params":{}}', -32700, ""),
        (b'{"jsonrpc":"2.0","method":"perp_getMarket","params":{"\\ud800":1},"id":1}', -32700, ""),
        (
            b'{"jsonrpc":"2.0","method":"chain_getBlock","params":{"height":1e400},"id":1}',
            -32700,
            "",
        ),
        (b'{"jsonrpc":"2.0","method":"node_status","id":"\\ud83d\\ude00"}', 0, ""),
        ({"method": "perp_getMarket", "params": {"market": "\u00b2"}}, 2003, "market"),
        ({"method": "perp_getMarket", "params": {"market": "\u0661"}}, 2003, "market"),
        ({"method": "perp_getMarket", "params": {"market": "1"}}, 0, ""),
        ({"method": "perp_getMarket", "params": {"market": 1}}, 0, ""),
        ({"method": "perp_getMarket", "params": {"market": 2**63}}, -32602, "market"),
        (
            {"method": "perp_getMarket", "params": {"market": "99999999999999999999"}},
            -32602,
            "market",
        ),
        ({"method": "perp_getMarket", "params": {"market": 1.0}}, -32602, "market"),
        ({"method": "perp_getMarket", "params": {"market": True}}, -32602, "market"),
        ({"method": "chain_getProof", "params": {"key": "00" * 257}}, -32602, "key"),
        ({"method": "chain_getProof", "params": {"key": "00" * 256}}, 0, ""),
        ({"method": "chain_getProof", "params": {"key": "01", "height": "9" * 18}}, 2004, ""),
        ({"method": "chain_getBlock", "params": {"height": 0}}, 0, ""),
        ({"method": "chain_getBlock", "params": {"height": 5.0}}, -32602, "height"),
        ({"method": "chain_getBlock", "params": {"height": 1e3}}, -32602, "height"),
        ({"method": "chain_getBlock", "params": {"height": False}}, -32602, "height"),
        ({"method": "chain_getBlock", "params": {"height": 2**53}}, -32602, "height"),
        ({"method": "chain_getBlock", "params": {"height": str(2**63 - 1)}}, 2003, ""),
        ({"method": "perp_getOrderBook", "params": {"market": 1, "depth": 5}}, 0, ""),
        ({"method": "tx_submit", "params": {"tx": _VALID_TX.hex()}}, 0, ""),
        *[
            (
                {"method": "tx_submit", "params": {"tx": _with_body_field(_VALID_TX, i, v).hex()}},
                1001,  # Reject.MALFORMED
                "",
            )
            for i in (1, 2, 6, 7, 10)
            for v in (2**64 - 1, 2**63)
        ],
    ],
)
async def test_known_bad_inputs_get_the_right_error(
    clean_node: Node, body: Any, code: int, fragment: str
) -> None:
    if isinstance(body, dict):
        body = encode({"jsonrpc": "2.0", "id": 1, **body})
    response = await clean_node.public.handle_body(body)
    assert response is not None
    answer = json.loads(response)
    if code == 0:
        assert "result" in answer, answer
        return
    assert answer["error"]["code"] == code, answer
    assert fragment in answer["error"]["message"], answer


async def test_a_second_maintenance_at_the_same_height_keeps_its_pin(
    tmp_path: pathlib.Path,
) -> None:
    """Found by the fuzz: begin, end, begin again before the next block raised ValueError
    (the pre-maintenance checkpoint existed), answered -32603."""
    for node in _node(tmp_path / "node"):
        for method in ("admin_maintenanceBegin", "admin_maintenanceEnd", "admin_maintenanceBegin"):
            body = encode({"jsonrpc": "2.0", "id": 1, "method": method})
            answer = json.loads(await node.admin.handle_body(body) or b"null")
            assert "result" in answer, (method, answer)
        assert answer["result"]["checkpoint"] == "pre-maintenance-1"


WS_METHODS = (("subscribe", ("topic",)), ("unsubscribe", ("subscription",)))


def _generate(count: int, **options: Any) -> list[dict[str, Any]]:
    """`count` requests from the same strategy (hypothesis as a generator only: a failure over
    HTTP shows its request in the assertion, shrinking happens in-process)."""
    out: list[dict[str, Any]] = []

    @settings(max_examples=count, deadline=None, database=None)
    @given(requests(**options))
    def collect(request: dict[str, Any]) -> None:
        out.append(request)

    collect()
    return out


async def test_no_input_reaches_http_500_or_an_internal_error_over_http(
    tmp_path: pathlib.Path,
) -> None:
    home = tmp_path / "node"
    init_home(home, genesis_doc())
    generated = _generate(300)
    tally = Tally()
    config = node_config(home, **{"admin.enabled": True, "admin.listen": "127.0.0.1:0"})
    async with trio.open_nursery() as nursery:
        bound: BoundListeners = await nursery.start(run_node, config)
        assert bound.admin is not None
        token = ("authorization", f"Bearer {config.admin_token_path.read_text().strip()}")
        for request in generated:
            if request["method"].startswith("admin_"):
                port, headers = bound.admin.port, [token]
            else:
                port, headers = bound.rpc.port, []
            response = await http_request(port, "POST", "/", encode(request), headers)
            assert response.status in (200, 204), (request, response.status, response.body)
            tally.record(request, response.body if response.status == 200 else None)
        nursery.cancel_scope.cancel()
    codes = dict(sorted(tally.codes.items(), key=str))
    print(f"\nover HTTP: {tally.requests} requests; codes: {codes}")
    assert tally.requests == len(generated) >= 250


async def test_no_input_reaches_an_internal_error_over_websocket(tmp_path: pathlib.Path) -> None:
    """The WebSocket adds subscribe/unsubscribe; each request gets id i so its answer (they
    come in order) is told from notifications."""
    home = tmp_path / "node"
    init_home(home, genesis_doc())
    generated = _generate(150, extra=WS_METHODS)
    for position, request in enumerate(generated):
        request["id"] = position
    generated += [
        {"jsonrpc": "2.0", "id": "s", "method": "subscribe", "params": {"topic": "new_heads"}},
        {"jsonrpc": "2.0", "id": "u", "method": "unsubscribe", "params": {"subscription": "x"}},
    ]
    tally = Tally()
    async with trio.open_nursery() as nursery:
        bound: BoundListeners = await nursery.start(run_node, node_config(home))
        client = await WsClient.connect(bound.rpc.port)
        try:
            for request in generated:
                await client.send(encode(request).decode())
                while True:
                    message = await client.recv()
                    if isinstance(message, dict) and message.get("method") == "subscription":
                        continue
                    break
                tally.record(request, json.dumps(message).encode())
        finally:
            await client.aclose()
        nursery.cancel_scope.cancel()
    codes = dict(sorted(tally.codes.items(), key=str))
    print(f"\nover WebSocket: {tally.requests} requests; codes: {codes}")
    assert tally.requests == len(generated)
