"""What `GET /health` says (public and metrics listeners): the node's report and its JSON body.
Imports the stdlib and node.log; node.rpc.http_app and node.rpc.metrics_app serve it."""

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


def chain_health(height: Callable[[], int], status: Any) -> HealthCheck:
    """The health of a node writing or executing a chain: ok with its height and mode (and an
    open maintenance window's checkpoint and reason), 503 with the reason when halted."""

    def check() -> HealthReport:
        fields = {"height": str(height()), "mode": status.mode}
        window = getattr(status, "maintenance", None)
        if status.mode == "maintenance" and window is not None:
            fields["maintenance_checkpoint"] = window.checkpoint
            fields["maintenance_reason"] = window.reason
        if status.mode == "halted":
            return HealthReport(ok=False, reason=status.halt_reason, fields=fields)
        return HealthReport(ok=True, fields=fields)

    return check


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
