"""Graph API errors and usage headers: Meta's error codes classified, its rate-limit
headers parsed. Pure: no I/O. Messages are redacted of access tokens before they are kept.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

BUSINESS_USAGE_HEADER = "X-Business-Use-Case-Usage"
APP_USAGE_HEADER = "X-App-Usage"
# Used when Meta throttles without an `estimated_time_to_regain_access` hint. Calling a
# throttled WABA again extends the block, and the budget is counted per hour, so a short
# default (e.g. 60 s) would mostly buy more blocking; five minutes is a conservative middle.
DEFAULT_REGAIN_ACCESS_S = 300.0

ErrorKind = Literal[
    "throttled", "token_invalid", "permission", "transient", "invalid_response", "network", "other"
]
THROTTLE_CODES = frozenset({4, 17, 32, 613, 80007, 80008, 130429})
TOKEN_CODES = frozenset({102, 190})
PERMISSION_CODES = frozenset({3, 10, *range(200, 300)})
TRANSIENT_CODES = frozenset({1, 2})
RETRYABLE_KINDS = frozenset({"transient", "network"})
_SECRET_QUERY = re.compile(r"(access_token|appsecret_proof)=[^&\s\"']*", re.IGNORECASE)


class GraphError(Exception):
    """A failed Graph call, classified by Meta's error `code` rather than HTTP status."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        code: int | None = None,
        subcode: int | None = None,
        fbtrace_id: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(f"{kind}: {message}" + (f" (code {code})" if code is not None else ""))
        self.kind: ErrorKind = kind
        self.message = message
        self.code = code
        self.subcode = subcode
        self.fbtrace_id = fbtrace_id
        self.http_status = http_status

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS

    def to_detail(self) -> dict[str, Any]:
        """JSON-ready summary for API responses and stored sync errors."""
        return {
            "code": self.code,
            "kind": self.kind,
            "detail": self.message,
            "fbtrace_id": self.fbtrace_id,
        }


class ThrottledError(GraphError):
    """Meta throttles the caller (kind "throttled"). Calling again within `regain_access_s`
    extends the block; service.throttle stores the window and keeps every caller out of it."""

    def __init__(
        self,
        message: str,
        *,
        regain_access_s: float,
        code: int | None = None,
        subcode: int | None = None,
        fbtrace_id: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(
            "throttled", message, code=code, subcode=subcode, fbtrace_id=fbtrace_id,
            http_status=http_status,
        )  # fmt: skip
        self.regain_access_s = regain_access_s


@dataclass(frozen=True)
class Usage:
    """Peak usage percentages from the last response's usage headers."""

    call_count_pct: float
    total_cputime_pct: float
    total_time_pct: float
    regain_access_s: float | None


def redact(text: str, access_token: str) -> str:
    """Remove an access token and any `access_token=`/`appsecret_proof=` values from text."""
    if access_token:
        text = text.replace(access_token, "***")
    return _SECRET_QUERY.sub(r"\1=***", text)


def classify(code: int | None, is_transient: bool = False) -> ErrorKind:
    """Map a Graph error code to an ErrorKind (throttling wins over `is_transient`)."""
    if code in THROTTLE_CODES:
        return "throttled"
    if code in TOKEN_CODES:
        return "token_invalid"
    if code in PERMISSION_CODES:
        return "permission"
    if is_transient or code in TRANSIENT_CODES:
        return "transient"
    return "other"


def _json_header(headers: Mapping[str, str], name: str) -> Any:
    raw = headers.get(name)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _usage_entries(headers: Mapping[str, str]) -> list[Mapping[str, Any]]:
    entries: list[Mapping[str, Any]] = []
    business = _json_header(headers, BUSINESS_USAGE_HEADER)
    if isinstance(business, Mapping):
        for items in business.values():
            if isinstance(items, list):
                entries.extend(item for item in items if isinstance(item, Mapping))
    app = _json_header(headers, APP_USAGE_HEADER)
    if isinstance(app, Mapping):
        entries.append(app)
    return entries


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return max(float(value), 0.0)
    return 0.0


def parse_usage(headers: Mapping[str, str]) -> Usage | None:
    """Parse Meta's usage headers; garbage is ignored, never raised."""
    entries = _usage_entries(headers)
    if not entries:
        return None

    def peak(key: str) -> float:
        return max(_number(entry.get(key)) for entry in entries)

    regain_min = peak("estimated_time_to_regain_access")
    return Usage(
        call_count_pct=peak("call_count"),
        total_cputime_pct=peak("total_cputime"),
        total_time_pct=peak("total_time"),
        regain_access_s=regain_min * 60.0 if regain_min > 0 else None,
    )


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def decode_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def error_from_response(
    status: int, body: bytes, usage: Usage | None, access_token: str
) -> GraphError:
    """Build the GraphError for a non-2xx response (or a 2xx carrying an `error` object)."""
    payload = decode_json(body)
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        if status >= 500:
            return GraphError("transient", f"HTTP {status}", http_status=status)
        if status == 429:  # a proxy's bare 429: treat as throttling
            return ThrottledError("HTTP 429", http_status=status, regain_access_s=_regain(usage))
        return GraphError("other", f"HTTP {status} without a Graph error body", http_status=status)
    code = _int_or_none(error.get("code"))
    kind = classify(code, error.get("is_transient") is True)
    message = redact(str(error.get("message") or "Graph error"), access_token)
    subcode = _int_or_none(error.get("error_subcode"))
    fbtrace = error.get("fbtrace_id")
    fbtrace_id = fbtrace if isinstance(fbtrace, str) else None
    if kind == "throttled":
        return ThrottledError(
            message, regain_access_s=_regain(usage), code=code, subcode=subcode,
            fbtrace_id=fbtrace_id, http_status=status,
        )  # fmt: skip
    return GraphError(
        kind, message, code=code, subcode=subcode, fbtrace_id=fbtrace_id, http_status=status
    )


def _regain(usage: Usage | None) -> float:
    if usage is not None and usage.regain_access_s is not None:
        return usage.regain_access_s
    return DEFAULT_REGAIN_ACCESS_S
