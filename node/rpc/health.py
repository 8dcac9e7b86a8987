"""What `GET /health` says (public and metrics listeners): the node's report and its JSON body.
Imports the stdlib and node.log; node.rpc.server serves it (and re-exports these names)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from node.log import log_event

logger = logging.getLogger("perpchain.rpc")


@dataclass(frozen=True, slots=True)
class HealthReport:
    """What /health says: 200 {"status": "ok", **fields} or 503 {"status": "unavailable",
    "reason": reason, **fields}. Fields are JSON-ready (heights as strings)."""

    ok: bool
    reason: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)


HealthCheck = Callable[[], HealthReport]


def always_healthy() -> HealthReport:
    return HealthReport(ok=True)


def health_response(health: HealthCheck) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of one health check; a check that raises is a 503."""
    try:
        report = health()
    except Exception as exc:  # noqa: BLE001 - a broken health check is a 503, not a crash
        log_event(
            logger,
            "rpc.health_check_failed",
            level=logging.ERROR,
            exc_info=(type(exc), exc, exc.__traceback__),
            error=type(exc).__name__,
        )
        report = HealthReport(ok=False, reason="health check failed")
    body: dict[str, Any] = {"status": "ok" if report.ok else "unavailable"}
    if not report.ok:
        body["reason"] = report.reason or "unavailable"
    for key, value in report.fields.items():
        body.setdefault(key, value)
    return (200 if report.ok else 503), body
