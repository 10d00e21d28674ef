"""Meta's error and throttling behaviour in the simulator: error bodies, injected faults and
the usage headers Graph sends with every answer.

Nothing here holds state: the simulator passes in its fault queue and call windows.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

FAULT_KINDS = frozenset({"190", "80008", "5xx", "slow", "malformed", "error"})
USAGE_WINDOW_S = 3600.0
BUSINESS_USAGE_HEADER = "X-Business-Use-Case-Usage"
APP_USAGE_HEADER = "X-App-Usage"


@dataclass
class Fault:
    """An injected failure; `remaining=None` makes it sticky until cleared."""

    kind: str
    target: str | None = None  # WABA or template id; None applies to every Graph call
    remaining: int | None = 1
    http_status: int | None = None
    code: int | None = None  # for kind "error"
    subcode: int | None = None
    message: str | None = None
    is_transient: bool | None = None
    delay_s: float = 1.0  # for kind "slow"
    regain_min: int = 5  # for kind "80008": estimated_time_to_regain_access
    meta_body: bool = False  # for kind "5xx": Graph JSON body with code 2, is_transient
    body: str | None = None  # for kind "malformed"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.remaining is not None and self.remaining < 1:
            raise ValueError("times must be >= 1")


class GraphFailure(Exception):
    """Raised by a Graph handler to answer with `response` (a Graph error) instead."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def meta_error(
    http_status: int,
    code: int,
    message: str,
    *,
    subcode: int | None = None,
    error_type: str = "OAuthException",
    is_transient: bool | None = None,
    headers: Mapping[str, str] | None = None,
    user_title: str | None = None,
    user_msg: str | None = None,
) -> web.Response:
    """A response shaped like Graph's error body; `user_title` and `user_msg` are the
    `error_user_title` and `error_user_msg` Meta adds when a person should read the reason."""
    error: dict[str, Any] = {"message": message, "type": error_type, "code": code}
    optional = {
        "error_subcode": subcode,
        "is_transient": is_transient,
        "error_user_title": user_title,
        "error_user_msg": user_msg,
    }
    error.update((key, value) for key, value in optional.items() if value is not None)
    error["fbtrace_id"] = "A" + secrets.token_urlsafe(16)
    return web.json_response({"error": error}, status=http_status, headers=headers)


def take_fault(faults: list[Fault], target: str | None, waba_id: str | None) -> Fault | None:
    """The first queued fault for this call, counted down (and dropped when used up)."""
    for fault in faults:
        if fault.target is None or fault.target in (target, waba_id):
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining == 0:
                    faults.remove(fault)
            return fault
    return None


async def apply_fault(fault: Fault, waba_id: str | None) -> web.Response | None:
    """The answer a fault gives instead of Graph's; None lets the call through (after "slow")."""
    if fault.kind == "slow":
        await asyncio.sleep(fault.delay_s)
        return None
    if fault.kind == "190":
        return meta_error(
            fault.http_status or 400,
            190,
            "Error validating access token: Session has expired.",
            subcode=463,
        )
    if fault.kind == "80008":
        return throttled(waba_id, fault.regain_min, fault.http_status or 400)
    if fault.kind == "malformed":
        body = fault.body if fault.body is not None else '{"data": [{"id": "1", "name": '
        return web.Response(
            status=fault.http_status or 200, text=body, content_type="application/json"
        )
    if fault.kind == "5xx":
        return _server_error(fault)
    return meta_error(
        fault.http_status or 400,
        fault.code or 100,
        fault.message or "Simulated error",
        subcode=fault.subcode,
        is_transient=fault.is_transient,
    )


def throttled(waba_id: str | None, regain_min: int, http_status: int) -> web.Response:
    """Graph's 80008 for a WABA over its rate limit, with the usage header saying when."""
    usage = {waba_id or "0": [_usage_entry(100, regain_min)]}
    return meta_error(
        http_status,
        80008,
        "(#80008) There have been too many calls to this WhatsApp "
        "Business account. Wait a bit and try again.",
        headers={BUSINESS_USAGE_HEADER: json.dumps(usage)},
    )


def _server_error(fault: Fault) -> web.Response:
    status = fault.http_status or 500
    if not fault.meta_body:
        return web.Response(
            status=status, text="Service Unavailable" if status == 503 else "Internal Server Error"
        )
    return meta_error(
        status,
        2,
        "An unexpected error has occurred. Please retry your request later.",
        is_transient=True,
    )


def count_call(windows: dict[str, deque[float]], waba_id: str, now: float) -> None:
    """Add a call to the WABA's sliding usage window and drop the calls that left it."""
    window = windows.setdefault(waba_id, deque())
    window.append(now)
    while window[0] <= now - USAGE_WINDOW_S:
        window.popleft()


def _usage_entry(pct: int, regain_min: int = 0) -> dict[str, Any]:
    return {
        "type": "whatsapp_business_management",
        "call_count": pct,
        "total_cputime": pct // 2,
        "total_time": pct // 2,
        "estimated_time_to_regain_access": regain_min,
    }


def usage_headers(
    windows: Mapping[str, deque[float]], waba_count: int, budget_per_hour: int, waba_id: str | None
) -> dict[str, str]:
    """The app's usage header, and the WABA's when the call names one, as shares of budget."""
    budget = max(budget_per_hour, 1)
    total = sum(len(w) for w in windows.values())
    app_pct = min(100, total * 100 // (budget * max(1, waba_count)))
    headers = {
        APP_USAGE_HEADER: json.dumps(
            {"call_count": app_pct, "total_time": app_pct // 2, "total_cputime": app_pct // 2}
        )
    }
    if waba_id is not None:
        pct = min(100, len(windows.get(waba_id, ())) * 100 // budget)
        headers[BUSINESS_USAGE_HEADER] = json.dumps({waba_id: [_usage_entry(pct)]})
    return headers
