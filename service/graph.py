"""Async client for Meta's Graph API: template listing with paging, template writes, errors,
throttling.

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
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from .graph_answers import (
    GRAPH_FIELDS,
    CreatedTemplate,
    GraphScope,
    GraphTemplate,
    live_match,
    next_link,
    page_templates,
    require_success,
)
from .graph_errors import (
    GraphError,
    Usage,
    decode_json,
    error_from_response,
    is_template_not_found,
    parse_usage,
    redact,
)
from .http_calls import BodyTooLarge, Failure, client_timeout, read_capped, retrying

__all__ = ["CreatedTemplate", "GraphClient", "GraphTemplate", "appsecret_proof"]

logger = logging.getLogger(__name__)

# A page of 100 templates with our fields is a few tens of KB; Meta never needs more than this.
MAX_BODY_BYTES = 16 * 1024 * 1024


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
        max_body_bytes: int = MAX_BODY_BYTES,
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
        self._timeout = client_timeout(timeout_s)
        self._max_body_bytes = max_body_bytes
        self._sleep = sleep
        self._on_call = on_call
        self.calls = 0
        self.last_usage: Usage | None = None

    @property
    def page_limit(self) -> int:
        return self._page_limit

    async def list_templates(self, waba_id: str, access_token: str) -> list[GraphTemplate]:
        """All templates of a WABA, following `paging.next` until it is absent."""
        return await self._list(waba_id, access_token, {})

    async def find_template(
        self, waba_id: str, access_token: str, name: str, language: str
    ) -> GraphTemplate | None:
        """The WABA's template with exactly this name and language that is not DELETED, or
        None: how a caller learns whether a create whose answer was lost took effect."""
        found = await self._list(waba_id, access_token, {"name": name, "language": language})
        return live_match(found, name, language)

    async def get_template(self, template_id: str, access_token: str) -> GraphTemplate:
        """One template by id."""
        url = self._url(quote(template_id, safe=""))
        data = await self._request(
            "GET", url, access_token, {"fields": GRAPH_FIELDS}, label=template_id
        )
        return GraphTemplate.from_graph(data)

    async def create_template(
        self, waba_id: str, access_token: str, template: Mapping[str, Any]
    ) -> CreatedTemplate:
        """Create a template (`name`, `language`, `category`, `components`, optional
        `parameter_format`, `allow_category_change`), sent as Meta's JSON body.

        One attempt only: a create is not idempotent, and a retry of one that took effect
        would meet "name in use". After a "network" error (`timed_out` or not) the template
        may exist: look it up with `find_template` before creating again."""
        url = self._url(f"{quote(waba_id, safe='')}/message_templates")
        answer = await self._send("POST", url, access_token, {}, waba_id, json_body=template)
        return CreatedTemplate.from_graph(answer)

    async def edit_template(
        self, template_id: str, access_token: str, changes: Mapping[str, Any]
    ) -> None:
        """Edit a template's `components` and/or `category` (Meta reviews it again).

        One attempt only: an approved template may be edited once a day, and a retry of an
        edit that took effect would meet a template now PENDING, which Meta refuses."""
        url = self._url(quote(template_id, safe=""))
        require_success(
            await self._send("POST", url, access_token, {}, template_id, json_body=changes)
        )

    async def delete_template(
        self, waba_id: str, access_token: str, name: str, hsm_id: str
    ) -> None:
        """Delete one language of a template (`hsm_id` with `name`; `name` alone would
        delete every language).

        Retried like a read: deleting is idempotent but for its answer, so "not found" on a
        retry means an earlier attempt deleted it (or it was gone anyway) and counts as
        done. "Not found" on the first attempt is raised (`is_template_not_found`)."""
        url = self._url(f"{quote(waba_id, safe='')}/message_templates")
        params = {"name": name, "hsm_id": hsm_id}
        try:
            answer = await self._request("DELETE", url, access_token, params, label=waba_id)
        except GraphError as exc:
            if exc.attempts > 1 and is_template_not_found(exc):
                logger.info("graph DELETE %s: template %s gone on a retry", waba_id, hsm_id)
                return
            raise
        require_success(answer)

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

    async def _list(
        self, waba_id: str, access_token: str, filters: dict[str, str]
    ) -> list[GraphTemplate]:
        """The WABA's templates matching Graph's `filters`, every page of them."""
        url = self._url(f"{quote(waba_id, safe='')}/message_templates")
        params = {**filters, "fields": GRAPH_FIELDS, "limit": str(self._page_limit)}
        templates: list[GraphTemplate] = []
        seen: set[URL] = set()
        while True:
            page = await self._request("GET", url, access_token, params, label=waba_id)
            templates.extend(page_templates(page))
            next_url = next_link(page)
            if next_url is None:
                return templates
            self._check_scope(next_url, waba_id)
            if next_url in seen:
                raise GraphError("invalid_response", "paging.next repeats a page")
            seen.add(next_url)
            url, params = next_url, {}

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
        """`_send`, retried on transient and network errors."""
        return await retrying(
            lambda: self._send(method, url, access_token, params, label),
            max_attempts=self._max_attempts,
            backoff_s=self._backoff_s,
            sleep=self._sleep,
            retryable=_retryable,
            label=f"graph {method} {label}",
        )

    async def _send(
        self,
        method: str,
        url: URL,
        access_token: str,
        params: dict[str, str],
        label: str,
        *,
        json_body: Mapping[str, Any] | None = None,
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
                method,
                url.update_query(query),
                headers=headers,
                json=json_body,
                timeout=self._timeout,
            ) as response:
                status, body = response.status, await read_capped(response, self._max_body_bytes)
                usage = parse_usage(response.headers)
        except BodyTooLarge as exc:
            logger.info("graph %s %s: answer over %d bytes", method, label, exc.max_bytes)
            raise GraphError("invalid_response", str(exc)) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.info("graph %s %s failed: %s", method, label, type(exc).__name__)
            raise GraphError(
                "network",
                _network_message(exc, access_token),
                timed_out=isinstance(exc, TimeoutError),
            ) from None
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


def _retryable(error: Failure) -> bool:
    return isinstance(error, GraphError) and error.retryable


def _network_message(exc: BaseException, access_token: str) -> str:
    if isinstance(exc, TimeoutError):
        return "request timed out"
    return redact(f"{type(exc).__name__}: {exc}", access_token)
