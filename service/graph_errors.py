"""Graph API errors and usage headers: Meta's error codes classified, its rate-limit
headers parsed. Pure: no I/O. Messages are redacted of access tokens before they are kept.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, Unpack

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
# Template subcodes under code 100. Meta publishes no table: these are the ones seen from Meta.
NAME_IN_USE = 2388023  # the name and language are taken
NAME_BEING_DELETED = 2388024  # a deleted approved template still holds them (~30 days)
TEMPLATE_NOT_FOUND = 2593002
MAX_META_TEXT_CHARS = 1000  # Meta's texts are untrusted input kept in errors and API answers
_SECRET_QUERY = re.compile(r"(access_token|appsecret_proof)=[^&\s\"']*", re.IGNORECASE)


class Details(TypedDict, total=False):
    """What a GraphError carries besides its kind and message; Meta's texts come redacted."""

    code: int | None
    subcode: int | None
    fbtrace_id: str | None
    http_status: int | None
    user_title: str | None  # Meta's `error_user_title` and `error_user_msg`: for people
    user_message: str | None
    timed_out: bool  # kind "network": no answer in time, so the call may have taken effect


class GraphError(Exception):
    """A failed Graph call, classified by Meta's error `code` rather than HTTP status.

    `attempts` is how many requests were made before giving up (retries included)."""

    def __init__(self, kind: ErrorKind, message: str, **details: Unpack[Details]) -> None:
        code = details.get("code")
        super().__init__(f"{kind}: {message}" + (f" (code {code})" if code is not None else ""))
        self.kind: ErrorKind = kind
        self.message = message
        self.code = code
        self.subcode = details.get("subcode")
        self.fbtrace_id = details.get("fbtrace_id")
        self.http_status = details.get("http_status")
        self.user_title = details.get("user_title")
        self.user_message = details.get("user_message")
        self.timed_out = details.get("timed_out", False)
        self.attempts = 1

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS

    def to_detail(self) -> dict[str, Any]:
        """JSON-ready summary for API responses and stored sync errors."""
        return {
            "code": self.code,
            "subcode": self.subcode,
            "kind": self.kind,
            "detail": self.message,
            "fbtrace_id": self.fbtrace_id,
        }


class ThrottledError(GraphError):
    """Meta throttles the caller (kind "throttled"). Calling again within `regain_access_s`
    extends the block; service.throttle stores the window and keeps every caller out of it."""

    def __init__(self, message: str, *, regain_access_s: float, **details: Unpack[Details]) -> None:
        super().__init__("throttled", message, **details)
        self.regain_access_s = regain_access_s


def is_name_taken(error: GraphError) -> bool:
    """Meta's "this name and language exist, or are still being deleted": a conflict (409),
    also for a name deleted in the last ~30 days. Look the name up before creating again."""
    return error.code == 100 and error.subcode in (NAME_IN_USE, NAME_BEING_DELETED)


def is_template_not_found(error: GraphError) -> bool:
    """Meta's answer to a delete that matched no template."""
    return error.code == 100 and error.subcode == TEMPLATE_NOT_FOUND


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


def meta_text(value: Any, access_token: str) -> str | None:
    """A text from Meta's answer, redacted and cut short; None unless a non-empty string."""
    if not isinstance(value, str) or not value:
        return None
    return redact(value, access_token)[:MAX_META_TEXT_CHARS]


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
    message = meta_text(error.get("message"), access_token) or "Graph error"
    details: Details = {
        "code": code,
        "subcode": _int_or_none(error.get("error_subcode")),
        "fbtrace_id": meta_text(error.get("fbtrace_id"), access_token),
        "http_status": status,
        "user_title": meta_text(error.get("error_user_title"), access_token),
        "user_message": meta_text(error.get("error_user_msg"), access_token),
    }
    if kind == "throttled":
        return ThrottledError(message, regain_access_s=_regain(usage), **details)
    return GraphError(kind, message, **details)


def _regain(usage: Usage | None) -> float:
    if usage is not None and usage.regain_access_s is not None:
        return usage.regain_access_s
    return DEFAULT_REGAIN_ACCESS_S
