"""The explorer's HTTP routes without a browser: every page answers 200 on a fresh chain, unknown
things are 404 and malformed ones 400, hostile strings come back escaped, no page carries an
inline script, and nothing on it can write (it holds only read handlers; the listener's
per-address rate limit applies to pages like to JSON-RPC calls)."""

from __future__ import annotations

import pathlib
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from node.app import PRODUCER_KEY_FILE, load_key
from node.chain.producer import ChainStatus
from node.client import direct_opener
from node.core.crypto import SigningKey
from node.core.errors import Reject
from node.core.txs import Withdraw, sign_tx
from node.core.view import Overlay, get_nonces
from node.explorer import build_explorer
from node.explorer.app import CSP
from node.explorer.views import READ_METHODS, ReadOnlyRpc
from node.lane import WorkLane
from node.rpc.jsonrpc import MethodTable
from node.rpc.methods import build_tables
from node.store import VersionedStore, blocks_db
from tests.e2e.chain import CHAIN_ID, USD, commit_txs, make_chain, running_node
from tests.explorer.asgi import (
    HANDLER_ATTRIBUTE,
    INLINE_SCRIPT,
    STYLE_ATTRIBUTE,
    explorer_on,
    get,
)

HOSTILE = "<script>alert('x')</script>\"&<img src=x onerror=alert(1)>"
ESCAPED = (
    "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&#34;&amp;&lt;img src=x onerror=alert(1)&gt;"
)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """12 blocks of a devnet chain, 20 s apart, with oracle updates (funding ticks) and fills,
    and a checkpoint whose reason is hostile markup."""
    home = tmp_path_factory.mktemp("explorer") / "node"
    make_chain(home, 12, block_ms=20_000, oracle=True)
    with VersionedStore.open(home / "data") as store:
        store.checkpoint("safe-1", height=6, reason=HOSTILE)
        yield {"home": home, "store": store}


async def test_every_page_answers_200_on_a_fresh_chain(fresh: dict[str, Any]) -> None:
    app, _ = explorer_on(fresh["store"], fresh["home"])
    overview = await get(app, "/")
    assert overview.status == 200
    block_links = overview.links("/block/")
    assert "/block/12" in block_links and any(len(link) == 7 + 64 for link in block_links)
    block = await get(app, "/block/12")
    tx_links, account_links = block.links("/tx/"), block.links("/account/")
    assert tx_links and account_links
    market = await get(app, "/market/BTC-USD-PERP")
    assert "/account/" in market.text  # its recent fills name the accounts
    pages = [
        "/",
        "/blocks",
        "/blocks?below=5",
        "/block/0",
        *block_links[:3],
        tx_links[0],
        "/markets",
        "/market/BTC-USD-PERP",
        "/market/ETH-USD-PERP",
        "/market/1",
        account_links[0],
        "/ops",
        "/peers.json",
        "/blocks.json",
        "/favicon.ico",
        "/static/explorer.js",
        "/static/explorer.css",
        "/static/uPlot.iife.min.js",
        "/static/uPlot.min.css",
        "/static/uPlot.LICENSE.txt",
    ]
    for path in pages:
        page, _, query = path.partition("?")
        response = await get(app, page, query=query.encode())
        assert response.status == 200, (path, response.text[:300])
        assert response.headers[b"content-security-policy"] == CSP.encode()
        assert response.headers[b"x-content-type-options"] == b"nosniff"
        if response.headers[b"content-type"].startswith(b"text/html"):
            assert not INLINE_SCRIPT.search(response.text), path
            assert not HANDLER_ATTRIBUTE.search(response.text), path
            assert not STYLE_ATTRIBUTE.search(response.text), path
    head = await get(app, "/", method="HEAD")
    assert head.status == 200 and head.body == b"" and int(head.headers[b"content-length"]) > 0


async def test_pages_show_what_the_rpc_says(fresh: dict[str, Any]) -> None:
    app, context = explorer_on(fresh["store"], fresh["home"])
    store = fresh["store"]
    root = store.root(12).hex()
    assert root in (await get(app, "/block/12")).text
    tx_link = (await get(app, "/block/12")).links("/tx/")[0]
    tx = await get(app, tx_link)
    assert "committed" in tx.text and "PlaceOrder" in tx.text and "price_quote" in tx.text
    market = (await get(app, "/market/BTC-USD-PERP")).text
    assert "funding index" in market and 'id="book-asks"' in market
    ops = (await get(app, "/ops")).text
    assert "safe-1" in ops and "No rollback on this chain" in ops


async def test_search_finds_heights_hashes_addresses_and_markets(fresh: dict[str, Any]) -> None:
    app, _ = explorer_on(fresh["store"], fresh["home"])
    block = await get(app, "/block/12")
    block_hash = block.text.split('<td class="mono">', 1)[1][:64]
    tx_hash = block.links("/tx/")[0].removeprefix("/tx/")
    trader = SigningKey.from_label("devnet/trader/3").public_key.hex()
    expected = {
        "7": "/block/7",
        block_hash: f"/block/{block_hash}",
        block_hash.upper(): f"/block/{block_hash}",
        tx_hash: f"/tx/{tx_hash}",
        trader: f"/account/{trader}",
        "btc-usd-perp": "/market/BTC-USD-PERP",
    }
    for query, target in expected.items():
        response = await get(app, "/search", query=f"q={query}".encode())
        assert response.status == 303, (query, response.text[:200])
        assert response.headers[b"location"] == target.encode()
    for query in ("99999", "f" * 64, "NOPE-PERP", "", "%00"):
        response = await get(app, "/search", query=f"q={query}".encode())
        assert response.status == 404, query


async def test_unknown_is_404_and_malformed_is_400(fresh: dict[str, Any]) -> None:
    app, _ = explorer_on(fresh["store"], fresh["home"])
    for path in (
        "/nope",
        "/block/99999",
        "/block/" + "ab" * 32,
        "/tx/" + "cd" * 32,
        "/account/" + "ef" * 32,
        "/market/DOGE-USD-PERP",
        "/market/77",
        "/fork/1",
        "/fork/1/compensation.csv",
        "/static/nope.js",
        "/static/../app.py",
        "/block/1/extra",
    ):
        assert (await get(app, path)).status == 404, path
    for path in ("/block/zz", "/block/-1", "/tx/xyz", "/account/00", "/market/a%20b"):
        assert (await get(app, path)).status == 400, path
    for header in ((b"content-length", b"10"), (b"transfer-encoding", b"chunked")):
        refused = await get(app, "/", headers=[header])  # a GET with a body is never read
        assert refused.status == 400 and refused.headers[b"connection"] == b"close"
    assert (await get(app, "/blocks", query=b"below=x")).status == 400
    assert (await get(app, "/search", query=b"q=" + b"a" * 2000)).status == 414


async def test_hostile_strings_are_escaped(fresh: dict[str, Any]) -> None:
    status = ChainStatus(mode="halted", halt_reason=HOSTILE)
    app, _ = explorer_on(fresh["store"], fresh["home"], status)
    for path, query in (("/ops", b""), ("/", b""), ("/search", b"q=" + HOSTILE.encode())):
        response = await get(app, path, query=query)
        assert "<script>alert" not in response.text and "<img src=x" not in response.text
        assert ESCAPED in response.text, path
    # the halt reason is in the red banner, shown (not hidden) on a halted node
    overview = (await get(app, "/")).text
    banner = overview.split('id="banner-halted"', 1)[1].split("</div>", 1)[0]
    assert "hidden" not in banner.split(">", 1)[0] and ESCAPED in banner
    for path in ("/market/<script>", "/block/<b>", "/account/\"'><"):
        response = await get(app, path)
        assert response.status in (400, 404) and "<script>" not in response.text.split("<main>")[1]


async def test_no_write_method_is_reachable(fresh: dict[str, Any]) -> None:
    assert not {"tx_submit", "subscribe", "unsubscribe"} & READ_METHODS
    assert not any(name.startswith("admin_") for name in READ_METHODS)
    # Built on a table whose every other method would fail the test, every page renders.
    app, context = explorer_on(fresh["store"], fresh["home"])
    real = app.views.rpc.handlers
    table = MethodTable()
    for name in ("tx_submit", "admin_halt", "admin_rollback", "chain_getRawBlocks"):

        async def forbidden(params: dict[str, Any], name: str = name) -> Any:
            raise AssertionError(f"the explorer called {name}")

        table.add(name, forbidden)
    for name, handler in real.items():
        assert handler is not None, f"{name} is not a public method"
        table.add(name, handler)
    app.views.rpc = ReadOnlyRpc(table)
    assert sorted(app.views.rpc.handlers) == sorted(READ_METHODS)
    with pytest.raises(PermissionError):
        await app.views.rpc.call("tx_submit", tx="00")
    for path in ("/", "/blocks", "/block/3", "/markets", "/market/1", "/ops"):
        assert (await get(app, path)).status == 200
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = await get(app, "/", method=method)
        assert response.status == 405 and response.headers[b"allow"] == b"GET, HEAD"


def _http(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, data=data)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with direct_opener().open(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def test_through_the_public_listener_with_its_limits(tmp_path: pathlib.Path) -> None:
    """Pages are served by the public listener next to JSON-RPC, POST / is still JSON-RPC,
    other verbs on page paths write nothing, and the per-address rate limit counts pages."""
    make_chain(tmp_path / "node", 3)
    overrides = {"rpc.max_requests_per_s_per_client": 20, "block_interval_ms": 60_000}
    async with running_node(tmp_path / "node", **overrides) as (url, _):

        def run() -> list[tuple[int, bytes]]:
            out = [_http(url + "/"), _http(url + "/block/1")]
            body = b'{"jsonrpc":"2.0","id":1,"method":"node_status","params":{}}'
            out.append(_http(url + "/", "POST", body))
            out.append(_http(url + "/block/1", "POST", b"{}"))
            out.append(_http(url + "/health"))
            out += [_http(url + "/markets") for _ in range(40)]
            return out

        answers = await trio.to_thread.run_sync(run)
    (page, _), (block, _), (rpc, rpc_body), (post, _), (health, _) = answers[:5]
    assert page == block == 200 and health == 200
    assert rpc == 200 and b'"result"' in rpc_body
    assert post == 404  # not a page, not JSON-RPC: nothing runs
    statuses = [status for status, _ in answers[5:]]
    assert 429 in statuses and statuses.count(200) < 40


async def test_explorer_can_be_switched_off(tmp_path: pathlib.Path) -> None:
    make_chain(tmp_path / "node", 1)
    async with running_node(tmp_path / "node", **{"explorer.enabled": False}) as (url, _):
        status, _ = await trio.to_thread.run_sync(lambda: _http(url + "/markets"))
    assert status == 404


async def test_a_failing_page_is_500_and_a_slow_one_503(
    fresh: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = explorer_on(fresh["store"], fresh["home"])

    async def broken() -> Any:
        raise RuntimeError("a bug")

    async def slow() -> Any:
        await trio.sleep(5)

    monkeypatch.setattr(app.views, "overview", broken)
    monkeypatch.setattr(app.views, "markets", slow)
    monkeypatch.setattr(app, "deadline_s", 0.05)
    failed = await get(app, "/")
    assert failed.status == 500 and b"a bug" not in failed.body  # details in the log only
    late = await get(app, "/markets")
    assert late.status == 503 and "deadline" in late.text
    assert (await get(app, "/ops")).status == 200  # the others still answer


async def test_every_page_of_a_chain_at_genesis(tmp_path: pathlib.Path) -> None:
    """`perpchain init` and nothing else: block 0, no trade, no funding tick, no order."""
    make_chain(tmp_path / "node", 0)
    trader = SigningKey.from_label("devnet/trader/0").public_key.hex()
    with VersionedStore.open(tmp_path / "node" / "data") as store:
        app, _ = explorer_on(store, tmp_path / "node")
        for path in (
            "/",
            "/blocks",
            "/block/0",
            "/markets",
            "/market/BTC-USD-PERP",
            f"/account/{trader}",
            "/ops",
            "/blocks.json",
        ):
            response = await get(app, path)
            assert response.status == 200, (path, response.text[:300])
        assert "No open position." in (await get(app, f"/account/{trader}")).text
        assert "No rollback on this chain." in (await get(app, "/ops")).text


async def test_blocks_not_cached_are_read_in_turns_of_the_work_lane(
    fresh: dict[str, Any],
) -> None:
    """Each block a page reads for the first time takes one turn of the lane the producer
    shares (node.lane), so a page reading many blocks cannot hold the event loop."""
    _, context = explorer_on(fresh["store"], fresh["home"])
    public, _ = build_tables(context)
    lane = WorkLane()
    app, _ = build_explorer(
        public, store=context.store, genesis=context.genesis, status=context.status, lane=lane
    )
    assert (await get(app, "/blocks")).status == 200
    assert lane.turns == 13  # heights 12..0, each read once
    assert (await get(app, "/blocks")).status == 200
    assert lane.turns == 13  # then cached


async def test_a_rejected_tx_shows_its_reject_code(tmp_path: pathlib.Path) -> None:
    home = tmp_path / "node"
    make_chain(home, 2)
    key = SigningKey.from_label("devnet/trader/7")
    producer = load_key(home, PRODUCER_KEY_FILE, "PERPCHAIN_PRODUCER_KEY")
    assert producer is not None
    with VersionedStore.open(home / "data") as store:
        nonce = get_nonces(Overlay(store), key.public_key).base_nonce
        too_much = sign_tx(Withdraw(nonce=nonce, amount_quote=10**9 * USD), key, CHAIN_ID)
        head = blocks_db.get_block(store, store.height)
        assert head is not None
        commit_txs(store, producer, head.header, [too_much], head.header.time_ms + 250)
        receipt = blocks_db.get_receipts(store, 3)
        assert receipt is not None and receipt.receipts[0].code != 0
        name = Reject(receipt.receipts[0].code).name
        app, _ = explorer_on(store, home)
        block = (await get(app, "/block/3")).text
        assert f"{name} ({receipt.receipts[0].code})" in block and 'class="rejected"' in block
        tx = (await get(app, f"/tx/{too_much.tx_hash.hex()}")).text
        assert "rejected" in tx and name in tx and "Withdraw" in tx


async def test_events_json_lists_what_the_market_and_account_pages_show(
    fresh: dict[str, Any],
) -> None:
    import json

    app, _ = explorer_on(fresh["store"], fresh["home"])
    market = json.loads((await get(app, "/events.json", query=b"market=1")).body)
    assert market["fills"] and all(e["kind"] == "fill" for e in market["fills"])
    assert all(e["market_id"] == "1" for e in market["fills"])
    taker = market["fills"][0]["account"]
    account = json.loads((await get(app, "/events.json", query=f"account={taker}".encode())).body)
    assert market["fills"][0]["tx_hash"] in {e["tx_hash"] for e in account["fills"]}
    assert int(account["funding_paid_quote"]) == -sum(
        int(e["amount_quote"]) for e in account["funding"]
    )
    page = (await get(app, f"/account/{taker}")).text
    assert market["fills"][0]["tx_hash"] in page
    for query in (b"", b"market=x", b"account=00", b"market=1&account=" + b"a" * 64):
        assert (await get(app, "/events.json", query=query)).status == 400, query


async def test_maintenance_shows_its_banner_with_reason_and_checkpoint(
    fresh: dict[str, Any],
) -> None:
    from types import SimpleNamespace

    window = SimpleNamespace(
        reason="db <upgrade>", checkpoint="pre-maintenance-9", epoch=2, height=9
    )
    status = ChainStatus(mode="maintenance", maintenance=window)
    app, _ = explorer_on(fresh["store"], fresh["home"], status)
    page = (await get(app, "/")).text
    banner = page.split('id="banner-maintenance"', 1)[1].split("</div>", 1)[0]
    assert "hidden" not in banner.split(">", 1)[0]
    assert "db &lt;upgrade&gt; (checkpoint pre-maintenance-9)" in banner
    halted = page.split('id="banner-halted"', 1)[1].split(">", 1)[0]
    assert "hidden" in halted
