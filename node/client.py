"""A small JSON-RPC 2.0 client over HTTP (stdlib only): for the CLI, bots and tests.

It never goes through a proxy: `urllib.request.urlopen` honours HTTP_PROXY / HTTPS_PROXY /
ALL_PROXY, which would hand an admin call and its bearer token to whatever proxy the
environment names (issue 20). The opener below has an empty ProxyHandler: every call goes to
the URL it was given.
"""

from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.request
from typing import Any


class RpcCallError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.data = code, message, data


class RpcUnavailable(Exception):
    """The node cannot be reached."""


def direct_opener() -> urllib.request.OpenerDirector:
    """A urllib opener that ignores the *_PROXY environment variables."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


class RpcClient:
    def __init__(
        self,
        url: str = "http://127.0.0.1:9545",
        *,
        timeout_s: float = 10.0,
        token: str | None = None,
    ) -> None:
        """`token`: the admin listener's bearer token (sent as `Authorization: Bearer`)."""
        self.url = url
        self.timeout_s = timeout_s
        self.headers = {"Content-Type": "application/json"}
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"
        self._ids = itertools.count(1)
        self._opener = direct_opener()

    def call(self, method: str, **params: Any) -> Any:
        body = json.dumps(
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        ).encode()
        request = urllib.request.Request(self.url, data=body, headers=self.headers)
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                reply = json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                reply = json.loads(error.read())
            except ValueError:
                raise RpcUnavailable(f"{self.url}: HTTP {error.code}") from None
        except (urllib.error.URLError, OSError) as error:
            raise RpcUnavailable(f"cannot reach {self.url}: {error}") from None
        if "error" in reply:
            err = reply["error"]
            raise RpcCallError(err.get("code", 0), err.get("message", ""), err.get("data"))
        return reply["result"]
