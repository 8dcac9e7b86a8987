"""The explorer on the data of the incident drill (node/drill.py, real processes): every page of
the sequencer and of the follower answers 200 after the rollback, the operations page lists the
maintenance, its checkpoint and the fork with its rolled-back range, and the fork page (in
Chromium too) lists what the rollback undid: exactly the liquidations of the drill's shorts,
the deposit it re-applied, and the compensation report as a table and a CSV download."""

from __future__ import annotations

import csv
import io
import re
import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest

from node.client import direct_opener
from node.drill import Drill, start_nodes, stop_nodes
from node.ops.incident import CSV_COLUMNS
from tests.explorer.browser import browser, console_errors, require_browser, wait_until

__all__ = ["browser"]


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The drill run to its end (the sequencer restart inside the window left out); both
    nodes keep running for the tests."""
    nodes, urls = start_nodes(tmp_path_factory.mktemp("explorer-drill"))
    try:
        lines: list[str] = []
        facts = Drill(
            urls["rpc"], urls["admin"], urls["token"], urls["follower"], lines.append
        ).run()
        yield {"facts": facts, **urls}
    finally:
        stop_nodes(nodes)


def fetch(url: str) -> tuple[int, dict[str, str], str]:
    try:
        with direct_opener().open(url, timeout=60) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def links(html: str, prefix: str) -> list[str]:
    return sorted(set(re.findall(rf'href="({re.escape(prefix)}[^"]*)"', html)))


def test_every_page_answers_on_the_drill_data(drill: dict[str, Any]) -> None:
    facts = drill["facts"]
    rollback = facts["rollback"]
    recovery = int(rollback["recovery_height"])
    checkpoint = facts["checkpoint"]
    pinned = int(checkpoint.rsplit("-", 1)[1])
    for base in (drill["rpc"], drill["follower"]):
        status, _, ops = fetch(base + "/ops")
        assert status == 200
        # the maintenance pin (the sequencer's), the fork's rolled-back range and its reason
        if base == drill["rpc"]:
            assert checkpoint in ops and "Open window" not in ops
        first, last = pinned + 1, int(rollback["from_height"])
        assert f"heights {first}–{last}" in ops, ops
        assert "funding indices zeroed" in ops
        pages = ["/", "/blocks", "/markets", "/market/BTC-USD-PERP", "/ops"]
        pages += [f"/block/{pinned}", f"/block/{recovery}", f"/account/{facts['liquidated'][0]}"]
        pages += links(fetch(base + f"/block/{recovery}")[2], "/tx/")[:2]
        pages += links(ops, "/fork/")
        for path in pages:
            status, headers, html = fetch(base + path)
            assert status == 200, (base, path, html[:300])
            assert "script-src 'self'" in headers["content-security-policy"]
    # the recovery block cancelled the resting orders: its txs name the operator's recovery
    _, _, block = fetch(drill["rpc"] + f"/block/{recovery}")
    assert "Recovery" in block or "recovery" in block.lower()


def test_fork_page_and_csv_list_what_the_rollback_undid(drill: dict[str, Any]) -> None:
    facts = drill["facts"]
    status, _, html = fetch(drill["rpc"] + "/fork/1")
    assert status == 200
    liquidations = html.split('id="fork-liquidations"', 1)[1].split("</table>", 1)[0]
    # each row: the liquidated account, then the liquidator
    accounts = re.findall(
        r'<tr><td class="num">\d+</td><td><a class="mono" href="/account/(\w+)"', liquidations
    )
    assert sorted(accounts) == facts["liquidated"]
    liquidated_rows = liquidations.count("<tr>") - 1  # the header row
    assert liquidated_rows == len(facts["liquidated"]) == 3
    transfers = html.split('id="fork-transfers"', 1)[1].split("</table>", 1)[0]
    assert "deposit 90001" in transfers  # re-applied by the recovery block
    status, headers, text = fetch(drill["rpc"] + "/fork/1/compensation.csv")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert "attachment" in headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    liquidated = sorted(row[0] for row in rows[1:] if int(row[1]) > 0)
    assert liquidated == facts["liquidated"]
    # the page's table is the CSV, row for row
    table = html.split('id="compensation"', 1)[1].split("</tbody>", 1)[0]
    assert table.count("<tr>") == len(rows)  # header + one per account
    assert fetch(drill["rpc"] + "/fork/2")[0] == 404


def test_fork_page_in_the_browser(drill: dict[str, Any], browser: Any) -> None:
    require_browser()
    facts = drill["facts"]
    browser.get(drill["rpc"] + "/ops")
    link = wait_until(
        lambda: browser.find_element("link text", "what it undid"), what="the fork link"
    )
    link.click()
    wait_until(lambda: browser.current_url.endswith("/fork/1"), what="the fork page")
    heading = browser.find_element("tag name", "h1").text
    assert heading.startswith("Fork 1: height")
    rows = browser.find_elements("css selector", "#fork-liquidations tbody tr")
    shown = sorted(
        row.find_elements("css selector", "td a")[0].get_attribute("pathname").split("/")[-1]
        for row in rows
    )
    assert shown == facts["liquidated"]
    csv_link = browser.find_element("id", "csv-link")
    assert csv_link.get_attribute("pathname") == "/fork/1/compensation.csv"
    accounts = browser.find_elements("css selector", "#compensation tbody tr")
    assert len(accounts) >= 3
    assert console_errors(browser) == []
