"""The explorer's ASGI app: routes, responses and their security headers. Imports jinja2, trio,
node.explorer.views and node.explorer.fmt.

Served by the public listener for every GET/HEAD but `/health` (node.rpc.server `pages`), after
the listener's own checks: the per-address request rate and connection limit, hypercorn's
header and idle timeouts. A page renders within `deadline_ms` (rpc.deadline_ms) or is answered
503. Pages are server-rendered with autoescaping on (every value is escaped; no template marks
anything safe), and carry a Content-Security-Policy that allows scripts, styles and connections
from the page's own origin only: no inline script or style, nothing from elsewhere. The page's
script (static/explorer.js) keeps the numbers live over the listener's WebSocket (`new_heads`,
`account:<hex>` and the same read methods), under the WebSocket limits of any client.
"""

from __future__ import annotations

import json
import logging
import pathlib
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import jinja2
import trio

from node.explorer.fmt import FILTERS
from node.explorer.views import BadRequest, NotFound, Views
from node.log import log_event

logger = logging.getLogger("perpchain.explorer")

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

HERE: Final = pathlib.Path(__file__).resolve().parent
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
STATIC_TYPES: Final = {
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".txt": b"text/plain; charset=utf-8",
    ".svg": b"image/svg+xml",
}
MAX_QUERY_BYTES: Final = 1_024

Response = tuple[int, list[tuple[bytes, bytes]], bytes]


def load_static() -> dict[str, tuple[bytes, bytes]]:
    """Every file of static/ read once at startup: name -> (content type, bytes). Only these
    names are ever served (no path from a request reaches the file system)."""
    out = {}
    for path in sorted((HERE / "static").iterdir()):
        kind = STATIC_TYPES.get(path.suffix)
        if path.is_file() and kind is not None:
            out[path.name] = (kind, path.read_bytes())
    return out


def template_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    return env


class Explorer:
    """ASGI app for GET/HEAD requests; `views` reads, this renders."""

    def __init__(self, views: Views, *, deadline_ms: int = 10_000) -> None:
        self.views = views
        self.deadline_s = deadline_ms / 1000
        self.env = template_environment()
        self.static = load_static()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            status, headers, body = self.text(405, "use GET", [(b"allow", b"GET, HEAD")])
        elif _has_body(scope):  # never read: refused, and the connection closed
            status, headers, body = self.text(400, "a GET has no body", [(b"connection", b"close")])
        else:
            try:
                with trio.move_on_after(self.deadline_s) as timer:
                    status, headers, body = await self.respond(scope)
            except Exception as exc:  # noqa: BLE001 - a bug in a page is a 500, not a crash
                log_event(
                    logger,
                    "explorer.page_failed",
                    level=logging.ERROR,
                    exc_info=(type(exc), exc, exc.__traceback__),
                    path=str(scope.get("path", ""))[:100],
                    error=type(exc).__name__,
                )
                status, headers, body = self.text(500, "the page failed; details in the node's log")
                timer = None
            if timer is not None and timer.cancelled_caught:
                status, headers, body = await self.error_page(
                    503, "the page took longer than the request deadline; try again"
                )
        headers = headers + SECURITY_HEADERS + [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    # --- routing ---------------------------------------------------------------------------

    async def respond(self, scope: Scope) -> Response:
        path: str = scope["path"]
        raw_query: bytes = scope.get("query_string", b"")
        if len(raw_query) > MAX_QUERY_BYTES:
            return await self.error_page(414, "the query string is too long")
        query = urllib.parse.parse_qs(raw_query.decode("utf-8", "replace"), max_num_fields=8)
        parts = [p for p in path.split("/") if p]
        views = self.views
        try:
            if path.startswith("/static/") and len(parts) == 2:
                return self.static_file(parts[1])
            if path == "/favicon.ico":
                return self.static_file("favicon.svg")
            if path == "/peers.json":
                return self.json_body({"peers": views.peer_states()})
            if path == "/blocks.json":  # the overview's live list: compact, from the cache
                return self.json_body({"blocks": await views.latest_json()})
            if path == "/events.json":  # the market's and the account's lists, live
                market, account = _str_query(query, "market"), _str_query(query, "account")
                return self.json_body(await views.events_json(market=market, account=account))
            if not parts:
                return await self.page("overview.html", "overview", await views.overview())
            head, rest = parts[0], parts[1:]
            if head == "blocks" and not rest:
                below = _int_query(query, "below")
                return await self.page("blocks.html", "blocks", await views.blocks(below))
            if head == "block" and len(rest) == 1:
                return await self.page("block.html", "block", await views.block(rest[0]))
            if head == "tx" and len(rest) == 1:
                return await self.page("tx.html", "tx", await views.tx(rest[0]))
            if head == "markets" and not rest:
                return await self.page("markets.html", "markets", await views.markets())
            if head == "market" and len(rest) == 1:
                return await self.page("market.html", "market", await views.market(rest[0]))
            if head == "account" and len(rest) == 1:
                return await self.page("account.html", "account", await views.account(rest[0]))
            if head == "ops" and not rest:
                return await self.page("operations.html", "ops", await views.operations())
            if head == "fork" and rest and rest[0].isascii() and rest[0].isdigit():
                fork_id = int(rest[0][:18])
                if len(rest) == 1:
                    return await self.page("fork.html", "fork", await views.fork(fork_id))
                if rest[1:] == ["compensation.csv"]:
                    return self.csv(fork_id, (await views.report(fork_id)).to_csv())
            if head == "search" and not rest:
                text = (query.get("q") or [""])[0]
                target = await views.search(text) if text.strip() else None
                if target is not None:
                    return 303, [(b"location", target.encode())], b""
                return await self.error_page(404, f"nothing on this chain matches {text!r}")
        except NotFound as missing:
            return await self.error_page(404, str(missing))
        except BadRequest as bad:
            return await self.error_page(400, str(bad))
        return await self.error_page(404, f"no page at {path[:100]}")

    # --- responses -------------------------------------------------------------------------

    async def page(self, template: str, name: str, context: dict[str, Any]) -> Response:
        chain = await self.views.chain()
        html = self.env.get_template(template).render(page=name, chain=chain, **context)
        return 200, _html_headers(), html.encode()

    async def error_page(self, status: int, message: str) -> Response:
        try:
            chain: dict[str, Any] | None = await self.views.chain()
        except Exception:  # noqa: BLE001 - the error page must render without the chain
            chain = None
        html = self.env.get_template("error.html").render(
            page="error", chain=chain, status=status, message=message
        )
        return status, _html_headers(), html.encode()

    def static_file(self, name: str) -> Response:
        found = self.static.get(name)
        if found is None:
            return self.text(404, "no such file")
        kind, body = found
        return 200, [(b"content-type", kind), (b"cache-control", b"max-age=300")], body

    def csv(self, fork_id: int, text: str) -> Response:
        disposition = f'attachment; filename="compensation-fork-{fork_id}.csv"'.encode()
        headers = [
            (b"content-type", b"text/csv; charset=utf-8"),
            (b"content-disposition", disposition),
            (b"cache-control", b"no-store"),
        ]
        return 200, headers, text.encode()

    def json_body(self, value: Any) -> Response:
        body = json.dumps(value, separators=(",", ":")).encode()
        return 200, [(b"content-type", b"application/json"), (b"cache-control", b"no-store")], body

    @staticmethod
    def text(status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None) -> Response:
        headers = [(b"content-type", b"text/plain; charset=utf-8"), *(extra or [])]
        return status, headers, message.encode()


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        name = bytes(name).lower()
        if name == b"transfer-encoding" or (name == b"content-length" and bytes(value) != b"0"):
            return True
    return False


def _html_headers() -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store")]


def _str_query(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _int_query(query: dict[str, list[str]], name: str) -> int | None:
    values = query.get(name)
    if not values:
        return None
    value = values[0]
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise BadRequest(f"{name} must be a height (digits)")
    return int(value)
