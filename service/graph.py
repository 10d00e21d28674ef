"""Async client for Meta's Graph API: template listing with paging, errors, throttling.

The client never logs access tokens, `appsecret_proof` values or full URLs (Meta's
`paging.next` links carry the access token); log lines name the WABA or template id only.
Every request carries the token, so `paging.next` is followed only where the base URL
points (`GraphScope`): a link elsewhere is an invalid response, never a request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from .graph_errors import (
    GraphError,
    Usage,
    decode_json,
    error_from_response,
    parse_usage,
    redact,
)

logger = logging.getLogger(__name__)

GRAPH_FIELDS = "id,name,language,status,category,rejected_reason,quality_score"


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


@dataclass(frozen=True)
class GraphScope:
    """Where the token may go: the base URL's scheme, host and port, and its path without
    the last segment (the API version, which Meta's `paging.next` links may change)."""

    scheme: str
    host: str
    port: int | None
    path_prefix: str

    @classmethod
    def of(cls, base_url: URL) -> GraphScope:
        prefix = base_url.path.rstrip("/").rsplit("/", 1)[0] + "/"
        return cls(base_url.scheme, base_url.host or "", base_url.port, prefix)

    def admits(self, url: URL) -> bool:
        """Same origin, under the prefix, no credentials of its own, no dot segments."""
        return (
            (url.scheme, url.host, url.port) == (self.scheme, self.host, self.port)
            and url.path.startswith(self.path_prefix)
            and url.user is None
            and url.password is None
            and not {".", ".."} & set(url.path.split("/"))
        )


def appsecret_proof(app_secret: str, access_token: str) -> str:
    """Hex HMAC-SHA256 of the access token keyed with the app secret."""
    return hmac.new(app_secret.encode(), access_token.encode(), hashlib.sha256).hexdigest()


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
        self._scope = GraphScope.of(URL(self._base_url))
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
        params = {"fields": GRAPH_FIELDS, "limit": str(self._page_limit)}
        templates: list[GraphTemplate] = []
        seen: set[URL] = set()
        while True:
            page = await self._request("GET", url, access_token, params, label=waba_id)
            templates.extend(_page_templates(page))
            next_url = _next_url(page)
            if next_url is None:
                return templates
            self._check_scope(next_url, waba_id)
            if next_url in seen:
                raise GraphError("invalid_response", "paging.next repeats a page")
            seen.add(next_url)
            url, params = next_url, {}

    async def get_template(self, template_id: str, access_token: str) -> GraphTemplate:
        """One template by id."""
        url = self._url(quote(template_id, safe=""))
        data = await self._request(
            "GET", url, access_token, {"fields": GRAPH_FIELDS}, label=template_id
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

    def _check_scope(self, url: URL, label: str) -> None:
        """Refuse a link the access token must not follow (logged without its query)."""
        if self._scope.admits(url):
            return
        shown = url.with_user(None).with_query(None).with_fragment(None)
        logger.warning("graph GET %s: paging.next %s is outside the Graph URL", label, shown)
        raise GraphError("invalid_response", f"paging.next leaves the Graph URL: {shown.origin()}")

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
        payload = decode_json(body) if 200 <= status < 300 else None
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
