"""JSON-RPC 2.0 envelopes: parsing, batches, notifications, every error code, limits, fuzz."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import trio
from hypothesis import example, given
from hypothesis import strategies as st

from node.core.errors import Reject, TxRejected
from node.rpc.jsonrpc import (
    I64_MAX,
    Dispatcher,
    EnvelopeError,
    ErrorCode,
    Limits,
    MethodTable,
    Request,
    RpcError,
    bool_param,
    check_params,
    check_structure,
    hex_param,
    int_param,
    not_found,
    parse_body,
    parse_int,
    render_int,
    str_param,
)


async def echo(params: dict[str, Any]) -> Any:
    return params


async def add(params: dict[str, Any]) -> Any:
    check_params(params, ("a", "b"))
    a = int_param(params, "a", min_value=-1000, max_value=1000)
    b = int_param(params, "b", default=0, min_value=-1000, max_value=1000)
    return render_int(a + b)


async def slow(params: dict[str, Any]) -> Any:
    await trio.sleep(3600)
    return "late"


async def boom(params: dict[str, Any]) -> Any:
    raise KeyError("secret-internal-detail")


async def rejected(params: dict[str, Any]) -> Any:
    raise TxRejected(Reject.BAD_NONCE, "nonce=7 expected 5")


async def missing(params: dict[str, Any]) -> Any:
    raise not_found("block at height 12")


async def nested_error(params: dict[str, Any]) -> Any:
    async def fail() -> None:
        raise RpcError(ErrorCode.MAINTENANCE)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fail)


async def unserializable(params: dict[str, Any]) -> Any:
    return {"value": b"bytes are not JSON"}


TABLE = MethodTable(
    {
        "echo": echo,
        "add": add,
        "slow": slow,
        "boom": boom,
        "rejected": rejected,
        "missing": missing,
        "nested_error": nested_error,
        "unserializable": unserializable,
    }
)
LIMITS = Limits(max_body_bytes=8192, max_batch=5, max_json_depth=8, deadline_ms=1000)


def dispatcher(observed: list[tuple[str, str]] | None = None) -> Dispatcher:
    observe = None
    if observed is not None:
        observe = lambda method, outcome, seconds: observed.append((method, outcome))  # noqa: E731
    return Dispatcher(TABLE, LIMITS, observe=observe)


async def call_raw(body: bytes | str) -> Any:
    raw = body.encode() if isinstance(body, str) else body
    response = await dispatcher().handle_body(raw)
    return None if response is None else json.loads(response)


async def call(payload: Any) -> Any:
    return await call_raw(json.dumps(payload))


def req(method: str, params: Any = None, id: Any = 1) -> dict[str, Any]:  # noqa: A002
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": id}
    if params is not None:
        request["params"] = params
    return request


def error_code(response: dict[str, Any]) -> int:
    assert set(response) == {"jsonrpc", "error", "id"}, response
    return int(response["error"]["code"])


# --- single requests -------------------------------------------------------------------------


async def test_single_request_returns_result_with_same_id() -> None:
    assert await call(req("echo", {"x": "1"}, id="abc")) == {
        "jsonrpc": "2.0",
        "result": {"x": "1"},
        "id": "abc",
    }


async def test_absent_params_mean_empty_object_and_null_id_is_answered() -> None:
    assert await call(req("echo", id=None)) == {"jsonrpc": "2.0", "result": {}, "id": None}


async def test_notification_runs_but_gets_no_response() -> None:
    seen: list[dict[str, Any]] = []

    async def record(params: dict[str, Any]) -> None:
        seen.append(params)

    table = MethodTable({"record": record})
    body = json.dumps({"jsonrpc": "2.0", "method": "record", "params": {"k": "v"}}).encode()
    assert await Dispatcher(table, LIMITS).handle_body(body) is None
    assert seen == [{"k": "v"}]


async def test_notification_errors_are_not_answered() -> None:
    assert await call({"jsonrpc": "2.0", "method": "boom"}) is None
    assert await call({"jsonrpc": "2.0", "method": "no_such_method"}) is None


# --- batches ---------------------------------------------------------------------------------


async def test_batch_answers_in_order_and_skips_notifications() -> None:
    batch = [
        req("add", {"a": "2", "b": "3"}, id=1),
        {"jsonrpc": "2.0", "method": "echo", "params": {}},  # notification
        {"jsonrpc": "2.0", "method": 5, "id": 2},
        req("nope", id=3),
        "not an object",
    ]
    responses = await call(batch)
    assert [r["id"] for r in responses] == [1, 2, 3, None]
    assert responses[0]["result"] == "5"
    assert [error_code(r) for r in responses[1:]] == [
        ErrorCode.INVALID_REQUEST,
        ErrorCode.METHOD_NOT_FOUND,
        ErrorCode.INVALID_REQUEST,
    ]


async def test_batch_of_only_notifications_gets_no_response() -> None:
    batch = [{"jsonrpc": "2.0", "method": "echo"}, {"jsonrpc": "2.0", "method": "add"}]
    assert await call(batch) is None


async def test_batch_runs_in_order() -> None:
    order: list[str] = []

    async def mark(params: dict[str, Any]) -> str:
        await trio.sleep(0)
        order.append(params["n"])
        return str(params["n"])

    body = json.dumps([req("mark", {"n": str(i)}, id=i) for i in range(5)]).encode()
    response = await Dispatcher(MethodTable({"mark": mark}), LIMITS).handle_body(body)
    assert order == ["0", "1", "2", "3", "4"]
    assert [r["id"] for r in json.loads(response or b"")] == [0, 1, 2, 3, 4]


async def test_prefetch_sees_the_whole_batch_once_before_any_handler_runs() -> None:
    events: list[str] = []

    async def mark(params: dict[str, Any]) -> str:
        events.append(f"run {params['n']}")
        return str(params["n"])

    table = MethodTable({"mark": mark, "echo": echo})

    @table.prefetch("mark")
    async def prefetch(batch: list[dict[str, Any]]) -> None:
        events.append("prefetch " + ",".join(p["n"] for p in batch))

    body = [req("mark", {"n": str(i)}, id=i) for i in range(3)] + [req("echo", {}, id=9)]
    body.insert(1, req("mark", ["positional"], id=8))  # answered -32602, never prefetched
    response = await Dispatcher(table, LIMITS).handle_body(json.dumps(body).encode())
    assert events == ["prefetch 0,1,2", "run 0", "run 1", "run 2"]
    answers = json.loads(response or b"")
    assert [a.get("result") for a in answers] == ["0", None, "1", "2", {}]
    assert error_code(answers[1]) == ErrorCode.INVALID_PARAMS


async def test_a_failing_or_slow_prefetch_changes_no_answer(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    for behaviour in ("fail", "hang"):
        table = MethodTable({"add": add})

        @table.prefetch("add")
        async def prefetch(batch: list[dict[str, Any]], behaviour: str = behaviour) -> None:
            if behaviour == "fail":
                raise RuntimeError("prefetch broke")
            await trio.sleep(3600)  # cut off at the request deadline

        body = json.dumps([req("add", {"a": "2", "b": "3"}, id=1), req("add", {"a": "x"}, id=2)])
        response = json.loads(await Dispatcher(table, LIMITS).handle_body(body.encode()) or b"")
        assert response[0]["result"] == "5"
        assert error_code(response[1]) == ErrorCode.INVALID_PARAMS
    assert "rpc.prefetch_failed" in caplog.text


async def test_merged_tables_keep_their_prefetches() -> None:
    table = MethodTable({"echo": echo})
    seen: list[int] = []

    @table.prefetch("echo")
    async def prefetch(batch: list[dict[str, Any]]) -> None:
        seen.append(len(batch))

    merged = table.merged({"add": add})
    await Dispatcher(merged, LIMITS).handle_body(json.dumps([req("echo", {})] * 2).encode())
    assert seen == [2]


async def test_empty_batch_is_one_invalid_request() -> None:
    response = await call([])
    assert error_code(response) == ErrorCode.INVALID_REQUEST and response["id"] is None


async def test_batch_over_the_limit_is_refused_whole() -> None:
    response = await call([req("echo", id=i) for i in range(LIMITS.max_batch + 1)])
    assert error_code(response) == ErrorCode.INVALID_REQUEST
    assert "exceeds the limit of 5" in response["error"]["message"]


# --- every error code ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc": "2.0", "method": "echo", "id": 1',  # truncated
        b"",
        b"\xff\xfe{}",  # not UTF-8
        '{"jsonrpc": "2.0", "method": "echo", "id": 1}'.encode("utf-16"),
        b'{"jsonrpc": "2.0", "method": "echo", "params": {"x": NaN}, "id": 1}',
        b'{"jsonrpc": "2.0", "method": "echo", "params": {"x": Infinity}, "id": 1}',
        b'{"jsonrpc": "2.0", "method": "echo", "method": "boom", "id": 1}',  # duplicate key
        b"[" * 9 + b"]" * 9,  # deeper than max_json_depth=8
        b'{"id": ' + b"9" * 5000 + b"}",  # over Python's int digit limit
    ],
)
async def test_parse_errors(body: bytes) -> None:
    response = await call_raw(body)
    assert error_code(response) == ErrorCode.PARSE_ERROR
    assert response["id"] is None


async def test_depth_limit_counts_every_array_and_object() -> None:
    def nested(levels: int) -> Any:
        value: Any = "x"
        for _ in range(levels):
            value = [value]
        return value

    # The request object and the params object are two levels; the lists add the rest.
    at_limit = nested(LIMITS.max_json_depth - 2)
    assert await call(req("echo", {"p": at_limit})) == req_result({"p": at_limit})
    response = await call(req("echo", {"p": nested(LIMITS.max_json_depth - 1)}))
    assert error_code(response) == ErrorCode.PARSE_ERROR
    assert "nested deeper than the limit of 8 levels" in response["error"]["message"]


def req_result(result: Any, id: Any = 1) -> dict[str, Any]:  # noqa: A002
    return {"jsonrpc": "2.0", "result": result, "id": id}


@pytest.mark.parametrize(
    ("entry", "expected_id"),
    [
        ({"jsonrpc": "1.0", "method": "echo", "id": 7}, 7),
        ({"method": "echo", "id": 7}, 7),
        ({"jsonrpc": "2.0", "method": 1, "id": 7}, 7),
        ({"jsonrpc": "2.0", "method": "", "id": 7}, 7),
        ({"jsonrpc": "2.0", "id": 7}, 7),
        ({"jsonrpc": "2.0", "method": "echo", "params": "x", "id": 7}, 7),
        ({"jsonrpc": "2.0", "method": "echo", "params": None, "id": 7}, 7),
        ({"jsonrpc": "2.0", "method": "echo", "id": 7, "extra": 1}, 7),
        ({"jsonrpc": "2.0", "method": "echo", "id": 1.5}, None),
        ({"jsonrpc": "2.0", "method": "echo", "id": True}, None),
        ({"jsonrpc": "2.0", "method": "echo", "id": [1]}, None),
        ({"jsonrpc": "2.0", "method": "echo", "id": {}}, None),
        (5, None),
        ("string", None),
        (None, None),
    ],
)
async def test_invalid_requests(entry: Any, expected_id: Any) -> None:
    response = await call(entry)
    assert error_code(response) == ErrorCode.INVALID_REQUEST
    assert response["id"] == expected_id


async def test_invalid_request_without_id_is_still_answered() -> None:
    # The spec's own example: an invalid request is answered even with no id member.
    response = await call({"jsonrpc": "2.0", "method": 1, "params": "bar"})
    assert error_code(response) == ErrorCode.INVALID_REQUEST and response["id"] is None


async def test_method_not_found() -> None:
    response = await call(req("no_such_method", id=4))
    assert error_code(response) == ErrorCode.METHOD_NOT_FOUND and response["id"] == 4
    assert "no_such_method" in response["error"]["message"]


async def test_positional_params_are_invalid_params() -> None:
    response = await call(req("echo", ["a", "b"]))
    assert error_code(response) == ErrorCode.INVALID_PARAMS
    assert "by-name" in response["error"]["message"]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({}, "missing required param 'a'"),
        ({"a": 1.0}, "a must be an integer"),
        ({"a": True}, "a must be an integer"),
        ({"a": 2000}, "between -1000 and 1000"),
        ({"a": "\u00b2"}, "not a canonical decimal"),
        ({"a": "01"}, "not a canonical decimal"),
        ({"a": "2000"}, "between -1000 and 1000"),
        ({"a": "1", "c": "2"}, "unknown param 'c'"),
    ],
)
async def test_invalid_params_say_which_and_why(params: dict[str, Any], fragment: str) -> None:
    response = await call(req("add", params))
    assert error_code(response) == ErrorCode.INVALID_PARAMS
    assert fragment in response["error"]["message"]


async def test_json_integer_params_are_taken_and_answers_stay_strings() -> None:
    assert await call(req("add", {"a": 5, "b": "-7"})) == req_result("-2")


async def test_unexpected_exception_is_internal_error_logged_once_without_leaking(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="perpchain.rpc"):
        response = await call(req("boom", id=9))
    assert response == {
        "jsonrpc": "2.0",
        "error": {"code": -32603, "message": "Internal error"},
        "id": 9,
    }
    assert "secret-internal-detail" not in json.dumps(response)
    records = [r for r in caplog.records if r.getMessage() == "rpc.internal_error"]
    assert len(records) == 1 and records[0].exc_info is not None


async def test_unserializable_result_is_internal_error() -> None:
    assert error_code(await call(req("unserializable"))) == ErrorCode.INTERNAL_ERROR


async def test_tx_rejected_maps_to_1000_plus_reject_code() -> None:
    response = await call(req("rejected"))
    assert response["error"] == {
        "code": 1000 + Reject.BAD_NONCE,
        "message": "Transaction rejected: BAD_NONCE",
        "data": {"reject": "BAD_NONCE", "reject_code": 3, "detail": "nonce=7 expected 5"},
    }


async def test_application_errors_pass_through() -> None:
    response = await call(req("missing"))
    assert response["error"] == {"code": 2003, "message": "Not found: block at height 12"}


async def test_rpc_error_inside_a_handler_nursery_is_unwrapped() -> None:
    assert error_code(await call(req("nested_error"))) == ErrorCode.MAINTENANCE


async def test_deadline_exceeded_is_a_clear_error(autojump_clock: trio.abc.Clock) -> None:
    start = trio.current_time()
    response = await call(req("slow", id=2))
    assert error_code(response) == ErrorCode.DEADLINE_EXCEEDED
    assert "longer than 1000 ms" in response["error"]["message"]
    assert trio.current_time() - start == pytest.approx(1.0)


async def test_body_over_the_limit_is_refused() -> None:
    body = json.dumps(req("echo", {"x": "y" * LIMITS.max_body_bytes})).encode()
    response = await call_raw(body)
    assert error_code(response) == ErrorCode.INVALID_REQUEST
    assert "exceeds the limit of 8192 bytes" in response["error"]["message"]


async def test_observer_sees_bounded_method_labels_and_outcomes() -> None:
    observed: list[tuple[str, str]] = []
    d = dispatcher(observed)
    for payload in (req("echo"), req("boom"), req("missing"), req("whatever-random-name"), 5):
        await d.handle_body(json.dumps(payload).encode())
    assert observed == [
        ("echo", "ok"),
        ("boom", "internal"),
        ("missing", "error"),
        ("-", "invalid"),
        ("-", "invalid"),
    ]


def test_error_codes_are_stable() -> None:
    # Published numbers: changing one breaks clients. Append new codes; never renumber.
    assert {code.name: int(code) for code in ErrorCode} == {
        "PARSE_ERROR": -32700,
        "INVALID_REQUEST": -32600,
        "METHOD_NOT_FOUND": -32601,
        "INVALID_PARAMS": -32602,
        "INTERNAL_ERROR": -32603,
        "TX_REJECTED_BASE": 1000,
        "NODE_HALTED": 2001,
        "MAINTENANCE": 2002,
        "NOT_FOUND": 2003,
        "HEIGHT_PRUNED": 2004,
        "DEADLINE_EXCEEDED": 2005,
        "SERVER_BUSY": 2006,
        "MEMPOOL_FULL": 2007,
        "NOT_PRODUCING": 2008,
        "NOT_READY": 2009,
        "SUBSCRIPTION_LIMIT": 2010,
        "UNAUTHORIZED": 2011,
        "WRONG_MODE": 2012,
        "VERIFY_FAILED": 2013,
        "ROLLBACK_REFUSED": 2014,
    }


def test_method_table_refuses_duplicates_and_reserved_names() -> None:
    with pytest.raises(ValueError, match="already registered"):
        TABLE.merged({"echo": echo})
    with pytest.raises(ValueError, match="reserved"):
        MethodTable({"rpc.discover": echo})


# --- integers as strings and typed params ----------------------------------------------------


@pytest.mark.parametrize("text", ["0", "7", "-7", "9223372036854775807", "-9223372036854775808"])
def test_parse_int_accepts_canonical_decimal(text: str) -> None:
    assert parse_int(text, name="n", min_value=-(2**63)) == int(text)


@pytest.mark.parametrize("value", [0, 7, -7, 2**53 - 1, -(2**53 - 1)])
def test_parse_int_accepts_json_integers_within_2_pow_53(value: int) -> None:
    assert parse_int(value, name="n", min_value=-(2**63)) == value


def test_parse_int_range_and_messages_name_the_param() -> None:
    with pytest.raises(RpcError, match="depth=501 must be between 1 and 500"):
        parse_int(501, name="depth", min_value=1, max_value=500)
    with pytest.raises(RpcError, match="depth must be an integer .* not a boolean"):
        parse_int(True, name="depth")
    with pytest.raises(RpcError, match="depth must be an integer .* fraction or exponent"):
        parse_int(5.0, name="depth")
    with pytest.raises(RpcError, match=r"depth: a JSON integer must lie within"):
        parse_int(2**60, name="depth")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "-0",
        "01",
        "+1",
        " 1",
        "1 ",
        "1_000",
        "0x10",
        "1e3",
        "1.0",
        "\u0661",
        "--1",
        "9223372036854775808",
        "1" * 60,
        "\u00b2",  # "²".isdigit() is true
        "\uff11",  # fullwidth 1
        "1\n",
        1.0,
        5.0,
        1e3,
        True,
        False,
        None,
        ["1"],
        {"n": "1"},
        2**53,
        -(2**53),
        10**400,
    ],
)
def test_parse_int_rejects_everything_else(value: Any) -> None:
    with pytest.raises(RpcError) as info:
        parse_int(value, name="size_atoms", min_value=-(2**63))
    assert info.value.code == ErrorCode.INVALID_PARAMS
    assert "size_atoms" in info.value.message


def test_render_int() -> None:
    assert render_int(I64_MAX) == "9223372036854775807"
    assert render_int(-5) == "-5"
    with pytest.raises(TypeError):
        render_int(True)


def test_typed_param_helpers() -> None:
    params = {"h": "0x" + "ab" * 32, "flag": True, "mode": "open", "n": None}
    assert hex_param(params, "h", length=32) == b"\xab" * 32
    assert bool_param(params, "flag") is True
    assert bool_param(params, "other", default=False) is False
    assert str_param(params, "mode", choices=("open", "halted")) == "open"
    assert int_param(params, "n", default=None) is None  # null counts as absent
    for bad in (
        lambda: hex_param(params, "h", length=31),
        lambda: hex_param({"h": "abc"}, "h"),
        lambda: hex_param({"h": "zz"}, "h"),
        lambda: bool_param({"flag": "true"}, "flag"),
        lambda: str_param(params, "mode", choices=("halted",)),
        lambda: str_param({"s": "x" * 300}, "s"),
        lambda: str_param({}, "s"),
    ):
        with pytest.raises(RpcError) as info:
            bad()
        assert info.value.code == ErrorCode.INVALID_PARAMS


def test_parse_body_shapes() -> None:
    single = parse_body(b'{"jsonrpc":"2.0","method":"m","params":{"a":1},"id":1}', LIMITS)
    assert single == parse_body(b' {"jsonrpc":"2.0","method":"m","params":{"a":1},"id":1} ', LIMITS)
    assert not single.is_batch and single.entries == (Request("m", {"a": 1}, 1, False),)
    batch = parse_body(b'[{"jsonrpc":"2.0","method":"m"}, 1]', LIMITS)
    assert batch.is_batch and batch.entries[0] == Request("m", {}, None, True)
    assert isinstance(batch.entries[1], EnvelopeError)


# --- depth scan and fuzz ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=12,
)


def reference_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    return 0


@given(json_values, st.integers(min_value=1, max_value=6))
@example(["[{", {"]": '\\"[['}], 2)
def test_depth_limit_matches_the_parsed_structure(value: Any, limit: int) -> None:
    try:
        check_structure(value, limit)
    except RpcError as error:
        assert error.code == ErrorCode.PARSE_ERROR
        assert reference_depth(value) > limit
    else:
        assert reference_depth(value) <= limit


def assert_valid_response_object(response: Any) -> None:
    assert isinstance(response, dict)
    assert response["jsonrpc"] == "2.0" and "id" in response
    assert ("result" in response) != ("error" in response)
    if "error" in response:
        assert isinstance(response["error"]["code"], int)
        assert isinstance(response["error"]["message"], str)


def assert_valid_response_body(body: bytes | None, batch_ok: bool = True) -> None:
    if body is None:
        return
    parsed = json.loads(body)
    if isinstance(parsed, list):
        assert batch_ok and parsed
        for item in parsed:
            assert_valid_response_object(item)
    else:
        assert_valid_response_object(parsed)


@given(st.binary(max_size=300))
@example(b"\x00")
@example(b"[]")
@example(b"[[]]")
@example(b'"\\ud800"')
async def test_random_bytes_never_crash_and_get_an_error_object(body: bytes) -> None:
    response = await dispatcher().handle_body(body)
    assert response is not None  # random bytes are never a valid notification
    parsed = json.loads(response)
    items = parsed if isinstance(parsed, list) else [parsed]
    for item in items:
        assert_valid_response_object(item)
        assert "error" in item


request_like = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2]),
        "method": st.sampled_from(["echo", "add", "boom", "rejected", "nope", 3]),
        "params": json_values,
        "id": st.none() | st.integers() | st.text(max_size=3) | st.floats(allow_nan=False),
    },
)


@given(request_like | st.lists(request_like | json_values, max_size=7) | json_values)
async def test_random_json_always_gets_well_formed_responses(document: Any) -> None:
    assert_valid_response_body(await dispatcher().handle_body(json.dumps(document).encode()))
