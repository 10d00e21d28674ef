"""Async client for Meta's Graph API: template listing with paging, errors, throttling.

The client never logs access tokens, `appsecret_proof` values or full URLs (Meta's
`paging.next` links carry the access token); log lines name the WABA or template id only.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
from yarl import URL

logger = logging.getLogger(__name__)

TEMPLATE_FIELDS = "id,name,language,status,category,rejected_reason,quality_score"
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
        regain_access_s: float | None = None,
    ) -> None:
        super().__init__(f"{kind}: {message}" + (f" (code {code})" if code is not None else ""))
        self.kind: ErrorKind = kind
        self.message = message
        self.code = code
        self.subcode = subcode
        self.fbtrace_id = fbtrace_id
        self.http_status = http_status
        self.regain_access_s = regain_access_s

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


@dataclass(frozen=True)
class Usage:
    """Peak usage percentages from the last response's usage headers."""

    call_count_pct: float
    total_cputime_pct: float
    total_time_pct: float
    regain_access_s: float | None


@dataclass(frozen=True)
class GraphTemplate:
    """One message template as reported by Graph."""

    id: str
    name: str
    language: str
    status: str
    category: str | None
    rejected_reason: str | None
    quality_score: str | None

    @classmethod
    def from_graph(cls, data: Any) -> GraphTemplate:
        """Build from a Graph object; raises GraphError(kind="invalid_response")."""
        if not isinstance(data, Mapping):
            raise GraphError("invalid_response", "template is not a JSON object")
        template_id = _id_string(data.get("id"))
        name, language, status = (_text(data.get(key)) for key in ("name", "language", "status"))
        if template_id is None or name is None or language is None or status is None:
            raise GraphError("invalid_response", "template lacks id, name, language or status")
        reason = _text(data.get("rejected_reason"))
        return cls(
            id=template_id,
            name=name,
            language=language,
            status=status,
            category=_text(data.get("category")),
            rejected_reason=None if reason == "NONE" else reason,
            quality_score=_quality_score(data.get("quality_score")),
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _id_string(value: Any) -> str | None:
    """Graph ids are documented as numbers and sent as strings; floats would lose digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _text(value)


def _quality_score(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return _text(value.get("score"))
    return _text(value)


def appsecret_proof(app_secret: str, access_token: str) -> str:
    """Hex HMAC-SHA256 of the access token keyed with the app secret."""
    return hmac.new(app_secret.encode(), access_token.encode(), hashlib.sha256).hexdigest()


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


def _decode_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def error_from_response(
    status: int, body: bytes, usage: Usage | None, access_token: str
) -> GraphError:
    """Build the GraphError for a non-2xx response (or a 2xx carrying an `error` object)."""
    payload = _decode_json(body)
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        if status >= 500:
            return GraphError("transient", f"HTTP {status}", http_status=status)
        if status == 429:  # a proxy's bare 429: treat as throttling
            return GraphError(
                "throttled", "HTTP 429", http_status=status, regain_access_s=_regain(usage)
            )
        return GraphError("other", f"HTTP {status} without a Graph error body", http_status=status)
    code = _int_or_none(error.get("code"))
    kind = classify(code, error.get("is_transient") is True)
    fbtrace = error.get("fbtrace_id")
    return GraphError(
        kind,
        redact(str(error.get("message") or "Graph error"), access_token),
        code=code,
        subcode=_int_or_none(error.get("error_subcode")),
        fbtrace_id=fbtrace if isinstance(fbtrace, str) else None,
        http_status=status,
        regain_access_s=_regain(usage) if kind == "throttled" else None,
    )


def _regain(usage: Usage | None) -> float:
    if usage is not None and usage.regain_access_s is not None:
        return usage.regain_access_s
    return DEFAULT_REGAIN_ACCESS_S


class GraphClient:
    """Meta Graph API client; the aiohttp session is owned by the caller."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        app_secret: str | None,
        *,
        page_limit: int = 100,
        max_attempts: int = 3,
        backoff_s: float = 0.5,
        timeout_s: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_call: Callable[[], None] | None = None,
    ) -> None:
        if page_limit < 1 or max_attempts < 1:
            raise ValueError("page_limit and max_attempts must be >= 1")
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._app_secret = app_secret
        self._page_limit = page_limit
        self._max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_s, connect=timeout_s, sock_read=timeout_s
        )
        self._sleep = sleep
        self._on_call = on_call
        self.calls = 0
        self.last_usage: Usage | None = None

    @property
    def page_limit(self) -> int:
        return self._page_limit

    async def list_templates(self, waba_id: str, access_token: str) -> list[GraphTemplate]:
        """All templates of a WABA, following `paging.next` until it is absent."""
        url = self._url(f"{quote(waba_id, safe='')}/message_templates")
        params = {"fields": TEMPLATE_FIELDS, "limit": str(self._page_limit)}
        templates: list[GraphTemplate] = []
        seen: set[URL] = set()
        while True:
            page = await self._request("GET", url, access_token, params, label=waba_id)
            templates.extend(_page_templates(page))
            next_url = _next_url(page)
            if next_url is None:
                return templates
            if next_url in seen:
                raise GraphError("invalid_response", "paging.next repeats a page")
            seen.add(next_url)
            url, params = next_url, {}

    async def get_template(self, template_id: str, access_token: str) -> GraphTemplate:
        """One template by id."""
        url = self._url(quote(template_id, safe=""))
        data = await self._request(
            "GET", url, access_token, {"fields": TEMPLATE_FIELDS}, label=template_id
        )
        return GraphTemplate.from_graph(data)

    async def get(
        self, path: str, access_token: str, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Generic JSON GET of `{base}/{path}`."""
        return await self._request("GET", self._url(path), access_token, params or {}, label=path)

    async def post(
        self, path: str, access_token: str, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Generic JSON POST of `{base}/{path}`; retried on transient errors, so idempotent
        calls only (e.g. subscribing an app)."""
        return await self._request("POST", self._url(path), access_token, params or {}, label=path)

    def _url(self, path: str) -> URL:
        return URL(f"{self._base_url}/{quote(path.lstrip('/'), safe='/')}")

    async def _request(
        self, method: str, url: URL, access_token: str, params: dict[str, str], *, label: str
    ) -> dict[str, Any]:
        attempt = 1
        while True:
            try:
                return await self._send(method, url, access_token, params, label)
            except GraphError as exc:
                if not exc.retryable or attempt >= self._max_attempts:
                    raise
                delay_s = self._backoff_delay(attempt)
                logger.info(
                    "graph %s %s attempt %d failed (%s), retrying in %.2fs",
                    method,
                    label,
                    attempt,
                    exc.kind,
                    delay_s,
                )
                await self._sleep(delay_s)
                attempt += 1

    def _backoff_delay(self, attempt: int) -> float:
        """Exponential backoff with jitter in [half, full] of the nominal delay."""
        nominal = self._backoff_s * 2 ** (attempt - 1)
        return random.uniform(nominal / 2, nominal)

    async def _send(
        self, method: str, url: URL, access_token: str, params: dict[str, str], label: str
    ) -> dict[str, Any]:
        query = dict(params)
        if self._app_secret:
            query["appsecret_proof"] = appsecret_proof(self._app_secret, access_token)
        headers = {"Authorization": f"Bearer {access_token}"}
        self.calls += 1
        if self._on_call is not None:
            self._on_call()
        try:
            async with self._session.request(
                method, url.update_query(query), headers=headers, timeout=self._timeout
            ) as response:
                status, body = response.status, await response.read()
                usage = parse_usage(response.headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.info("graph %s %s failed: %s", method, label, type(exc).__name__)
            raise GraphError("network", _network_message(exc, access_token)) from None
        if usage is not None:
            self.last_usage = usage
        return self._handle(method, label, status, body, usage, access_token)

    def _handle(
        self,
        method: str,
        label: str,
        status: int,
        body: bytes,
        usage: Usage | None,
        access_token: str,
    ) -> dict[str, Any]:
        payload = _decode_json(body) if 200 <= status < 300 else None
        if isinstance(payload, dict) and "error" not in payload:
            logger.debug("graph %s %s -> %d", method, label, status)
            return payload
        if 200 <= status < 300 and not isinstance(payload, dict):
            error = GraphError(
                "invalid_response", "response is not a JSON object", http_status=status
            )
        else:
            error = error_from_response(status, body, usage, access_token)
        logger.info(
            "graph %s %s -> %d code=%s kind=%s fbtrace_id=%s",
            method,
            label,
            status,
            error.code,
            error.kind,
            error.fbtrace_id,
        )
        raise error


def _network_message(exc: BaseException, access_token: str) -> str:
    if isinstance(exc, TimeoutError):
        return "request timed out"
    return redact(f"{type(exc).__name__}: {exc}", access_token)


def _page_templates(page: dict[str, Any]) -> list[GraphTemplate]:
    data = page.get("data")
    if not isinstance(data, list):
        raise GraphError("invalid_response", "page lacks a data list")
    return [GraphTemplate.from_graph(item) for item in data]


def _next_url(page: dict[str, Any]) -> URL | None:
    paging = page.get("paging")
    if paging is None:
        return None
    if not isinstance(paging, dict):
        raise GraphError("invalid_response", "paging is not an object")
    next_url = paging.get("next")
    if next_url is None:
        return None
    try:
        url = URL(next_url) if isinstance(next_url, str) else None
    except ValueError:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise GraphError("invalid_response", "paging.next is not an absolute http(s) URL")
    return url
