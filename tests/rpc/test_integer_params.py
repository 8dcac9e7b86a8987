"""Every integer param of the public RPC, both ways a user writes it (issue 13 §2): a JSON
number and a canonical decimal string give the same answer; a float, a boolean or a number
past +-(2^53 - 1) is -32602 naming the param. Through a real node over HTTP."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from node.client import RpcCallError
from node.core import keys
from node.core.crypto import SigningKey
from tests.e2e.chain import call, make_chain, running_node, wait_for

KEY = keys.account(SigningKey.from_label("devnet/trader/0").public_key).hex()
# (method, the other params, the integer param, a value it takes)
CASES: list[tuple[str, dict[str, Any], str, int]] = [
    ("chain_getBlock", {}, "height", 2),
    ("chain_getRawBlocks", {"count": 2}, "from_height", 1),
    ("chain_getRawBlocks", {"from_height": 1}, "count", 2),
    ("chain_getProof", {"key": KEY}, "height", 2),
    ("perp_getMarket", {}, "market", 1),
    ("perp_getOrderBook", {"market": "BTC-USD-PERP"}, "depth", 3),
    ("perp_getOrderBook", {"depth": 3}, "market", 1),
    ("perp_getFundingHistory", {"market": 1}, "limit", 5),
    ("perp_getFundingHistory", {"limit": 5}, "market", 2),
]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    home = tmp_path_factory.mktemp("ints") / "home"
    make_chain(home, 3, oracle=True)
    return home


async def test_every_integer_param_takes_a_json_number_and_a_decimal_string(
    home: pathlib.Path,
) -> None:
    async with running_node(home, block_interval_ms=60_000) as (url, _):
        # The chain's head is old, so the node produces one block at once, then none for a
        # minute: wait for it, or a block between the two calls changes the answers (CI saw
        # chain_getRawBlocks' head move).
        await wait_for(url, lambda status: int(status["height"]) >= 4, timeout_s=20)
        for method, others, name, value in CASES:
            as_number = await call(url, method, **others, **{name: value})
            as_string = await call(url, method, **others, **{name: str(value)})
            assert as_number == as_string, (method, name)


@pytest.mark.parametrize("bad", [2.0, 1e3, True, False, 2**53, -(2**53), "1.0", "0x10", " 1"])
async def test_floats_booleans_and_big_numbers_are_refused_naming_the_param(
    home: pathlib.Path, bad: Any
) -> None:
    async with running_node(home, block_interval_ms=60_000) as (url, _):
        for method, others, name, _ in CASES:
            if name == "market" and isinstance(bad, str):
                continue  # a string market is a symbol: an unknown one is "not found"
            with pytest.raises(RpcCallError) as refused:
                await call(url, method, **others, **{name: bad})
            assert refused.value.code == -32602, (method, name, bad, refused.value)
            assert name in refused.value.message, (method, name, refused.value.message)
