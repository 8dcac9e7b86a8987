"""The explorer in headless Chromium against a real node process: the pages load with no
console error (a CSP violation or a script error would be one), the height advances live over
the WebSocket without a reload, an account page shows the position a test trade opened (live,
then after a reload), and a halted node shows the red banner with its reason. One node and one
browser for the module; the trade and the halt are made through the node's own RPC."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from node.client import RpcClient
from node.core.crypto import SigningKey
from node.core.records import OrderKind, Side, TimeInForce
from node.core.txs import PlaceOrder, sign_tx
from node.devnet import spawn_node_urls, stop_child
from tests.e2e.chain import CHAIN_ID, UNIT, USD, make_chain
from tests.explorer.browser import browser, console_errors, require_browser, wait_until

__all__ = ["browser"]  # the module-scoped Chromium fixture


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_browser()  # skip (or fail in CI) before building anything
    home: pathlib.Path = tmp_path_factory.mktemp("explorer-browser") / "node"
    make_chain(home, 12, block_ms=20_000, oracle=True)
    process, urls = spawn_node_urls(
        home, "--block-interval-ms", "100", "--admin-listen", "127.0.0.1:0"
    )
    token = (home / "admin.token").read_text().strip()
    try:
        yield {"url": urls["rpc"], "admin": RpcClient(urls["admin"], token=token)}
    finally:
        stop_child(process)


def submit_order(url: str, label: str, **fields: Any) -> str:
    client = RpcClient(url)
    key = SigningKey.from_label(label)
    nonce = int(client.call("perp_getNonce", address=key.public_key.hex())["next_nonce"])
    body = PlaceOrder(nonce=nonce, market_id=1, reduce_only=0, trigger_price_quote=0, **fields)
    tx_hash: str = client.call("tx_submit", tx=sign_tx(body, key, CHAIN_ID).raw.hex())["tx_hash"]
    status = wait_until(
        lambda: (
            (s := client.call("tx_status", tx_hash=tx_hash))["status"] in ("committed", "rejected")
            and s
        ),
        what=f"tx {tx_hash} to be included",
    )
    assert status["status"] == "committed", status
    return tx_hash


def wait_live(driver: Any) -> None:
    wait_until(
        lambda: driver.find_element("id", "live-ws").text == "live",
        what="the page's WebSocket to be live",
    )


def test_pages_load_with_no_console_error(node: dict[str, Any], browser: Any) -> None:
    url = node["url"]
    trader = SigningKey.from_label("devnet/trader/3").public_key.hex()
    browser.get(url + "/block/12")
    tx_link = browser.find_element("css selector", "#block-txs a[href^='/tx/']")
    pages = [
        "/",
        "/blocks",
        "/block/12",
        tx_link.get_attribute("pathname"),
        "/markets",
        "/market/BTC-USD-PERP",
        "/market/ETH-USD-PERP",
        f"/account/{trader}",
        "/ops",
    ]
    console_errors(browser)  # drop what came before
    for path in pages:
        browser.get(url + path)
        wait_live(browser)
        if path.startswith("/market/"):
            for chart in ("chart-funding", "chart-depth"):
                wait_until(
                    lambda chart=chart: browser.find_elements("css selector", f"#{chart} canvas"),
                    what=f"the {chart} canvas on {path}",
                )
        errors = console_errors(browser)
        assert errors == [], (path, errors)
    browser.get(url + "/search?q=7")
    assert browser.current_url.endswith("/block/7")
    assert browser.find_element("tag name", "h1").text == "Block 7"


def test_height_advances_live(node: dict[str, Any], browser: Any) -> None:
    browser.get(node["url"] + "/")
    wait_live(browser)
    browser.execute_script("window.explorerTestMark = 42;")  # gone if the page reloads
    first = int(browser.find_element("id", "live-height").text)
    wait_until(
        lambda: int(browser.find_element("id", "live-height").text) >= first + 5,
        what="the height to advance by 5 blocks",
    )
    assert browser.execute_script("return window.explorerTestMark;") == 42

    # the live rows follow: the newest first, 20 of them, no height skipped
    def rows() -> list[int]:
        heights: list[int] = browser.execute_script(
            "return Array.from(document.querySelectorAll('#latest-blocks tbody tr'))"
            ".map(r => Number(r.cells[0].textContent));"
        )
        return heights

    def following() -> bool:
        heights = rows()
        top = heights[0]
        return top >= first + 5 and heights == list(range(top, top - 20, -1))

    wait_until(following, what=f"the block list to pass {first + 5} height by height")
    assert browser.execute_script("return window.explorerTestMark;") == 42
    assert console_errors(browser) == []


def test_account_page_shows_the_position_a_trade_opened(node: dict[str, Any], browser: Any) -> None:
    url = node["url"]
    taker = SigningKey.from_label("devnet/trader/13").public_key.hex()
    browser.get(f"{url}/account/{taker}")
    wait_live(browser)
    assert browser.find_element("id", "no-positions").is_displayed()
    submit_order(
        url,
        "devnet/trader/12",
        side=Side.SELL,
        kind=OrderKind.LIMIT,
        tif=TimeInForce.GTC,
        price_quote=60_000 * USD,
        size_atoms=UNIT // 100,
        client_id=1,
    )
    taker_tx = submit_order(
        url,
        "devnet/trader/13",
        side=Side.BUY,
        kind=OrderKind.LIMIT,
        tif=TimeInForce.IOC,
        price_quote=60_050 * USD,
        size_atoms=UNIT // 100,
        client_id=2,
    )

    def position_row() -> list[str]:
        """The first position's cells, read in one script (the page may re-render rows)."""
        script = (
            "return Array.from(document.querySelectorAll("
            "'#positions tbody tr:first-child td')).map(td => td.textContent);"
        )
        cells: list[str] = browser.execute_script(script)
        return cells

    # live: the account topic brings the fill, the refresh the position
    cells = wait_until(position_row, what="the position to appear without a reload")
    assert cells[:3] == ["BTC-USD-PERP", "long", "0.01"], cells
    fill = wait_until(
        lambda: browser.execute_script(
            "const r = document.querySelector('#fills tbody tr'); return r && r.textContent;"
        ),
        what="the fill row",
    )
    assert "fill" in fill
    # the next refresh lists it with its tx (/events.json): the taker's order
    taker_fill = wait_until(
        lambda: browser.execute_script(
            "const a = document.querySelector(\"#fills tbody tr a[href^='/tx/']\");"
            "return a && a.getAttribute('href');"
        ),
        what="the fill with its tx link",
    )
    assert taker_fill == f"/tx/{taker_tx}"
    assert not browser.find_element("id", "no-positions").is_displayed()
    browser.refresh()
    cells = position_row()
    assert cells[:3] == ["BTC-USD-PERP", "long", "0.01"]
    entry = cells[4]
    assert (
        entry.replace(",", "").split(".")[0].isdigit()
        and 59_000 < float(entry.replace(",", "")) <= 60_050
    )
    assert console_errors(browser) == []


def test_a_halted_node_shows_the_red_banner(node: dict[str, Any], browser: Any) -> None:
    admin = node["admin"]
    browser.get(node["url"] + "/")
    wait_live(browser)
    banner = browser.find_element("id", "banner-halted")
    assert not banner.is_displayed()
    reason = "explorer test: <b>invariant</b> failed"
    admin.call("admin_halt", reason=reason)
    try:
        wait_until(banner.is_displayed, what="the halted banner to show, live")
        shown = browser.find_element("id", "banner-halted-reason").text
        assert shown == f"operator: {reason}"  # as text: the markup is not interpreted
        assert browser.find_element("id", "live-mode").text == "halted"
        browser.refresh()  # and rendered by the server
        banner = browser.find_element("id", "banner-halted")
        assert banner.is_displayed() and "HALTED" in banner.text
        assert browser.find_elements("css selector", "#banner-halted b")[0].text == "HALTED"
    finally:
        admin.call("admin_resume")
    wait_until(lambda: not banner.is_displayed(), what="the banner to go on resume")
    assert console_errors(browser) == []
