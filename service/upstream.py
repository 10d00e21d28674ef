"""Async client for an upstream that answers the seed's API (LancePilot, or another
template-sync; design section 14): its sync endpoint, its template list page by page, and the
doctor's one check.

Upstream answers are untrusted input: bodies, page counts, texts and Retry-After are bounded,
and anything malformed is `UpstreamError("invalid_response")`, never a crash. The bearer token
goes in a header only; log lines name the remote workspace and the error kind, never the
token, a URL or a body.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from .graph_errors import decode_json
from .http_calls import BodyTooLarge, Failure, client_timeout, read_capped, retrying
from .upstream_answers import (
    UpstreamError,
    UpstreamTemplate,
    answer_error,
    invalid,
    page_templates,
    short,
)

__all__ = ["UpstreamClient", "UpstreamError", "UpstreamTemplate", "upstream_url"]

logger = logging.getLogger(__name__)

NO_PENDING = "No pending templates found"  # the seed's 404 for "nothing to sync"
PER_PAGE = 100  # the seed's maximum
MAX_BODY_BYTES = 8 * 1024 * 1024  # a page of 100 templates is a few tens of KB
MAX_PAGES = 200


class UpstreamClient:
    """Client of one remote workspace; the aiohttp session is owned by the caller."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        remote_workspace: str,
        token: str,
        *,
        timeout_s: float = 10.0,
        sync_timeout_s: float = 60.0,
        max_attempts: int = 3,
        backoff_s: float = 0.5,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_call: Callable[[], None] | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        max_pages: int = MAX_PAGES,
    ) -> None:
        if min(max_attempts, max_body_bytes, max_pages) < 1:
            raise ValueError("max_attempts, max_body_bytes and max_pages must be >= 1")
        if remote_workspace in ("", ".", "..") or not _header_safe(token):
            raise ValueError("the remote workspace and the token must be non-empty, printable")
        path = f"api/v3/workspaces/{quote(remote_workspace, safe='')}/templates"
        self._templates_url = URL(f"{upstream_url(base_url)}/{path}", encoded=True)
        self._session, self._workspace, self._token = session, remote_workspace, token
        self._timeout = client_timeout(timeout_s)
        self._sync_timeout = client_timeout(sync_timeout_s)
        self._max_attempts, self._backoff_s, self._sleep = max_attempts, backoff_s, sleep
        self._on_call = on_call
        self._max_body_bytes, self._max_pages = max_body_bytes, max_pages
        self.calls = 0

    async def sync(self) -> bool:
        """Have the upstream sync its pending templates with Meta: True once it has, False
        when it had none pending. One attempt: a sync spends the upstream's Meta budget, so a
        failure waits for the poller's backoff rather than a retry here."""
        url = self._templates_url / "sync"
        status, answer, retry_after = await self._send("POST", url, self._sync_timeout)
        if 200 <= status < 300:
            logger.debug("upstream %s POST sync -> %d", self._workspace, status)
            return True
        if status == 404 and isinstance(answer, dict) and answer.get("message") == NO_PENDING:
            logger.info("upstream %s POST sync: nothing pending there", self._workspace)
            return False
        raise self._logged("POST sync", answer_error(status, answer, retry_after, self._token))

    async def list_templates(self) -> list[UpstreamTemplate]:
        """Every listed template Meta knows, page by page up to the first page's
        `meta.last_page` (a later page may lower it, never raise it); one per provider_id."""
        found: dict[str, UpstreamTemplate] = {}
        page, last_page = 1, 1
        while page <= last_page:
            answer = await self._read({"page": str(page), "per_page": str(PER_PAGE)})
            found.update((t.id, t) for t in page_templates(answer))
            stated = self._last_page(answer)
            last_page = stated if page == 1 else min(stated, last_page)
            page += 1
        return list(found.values())

    async def check(self) -> int:
        """The doctor's one call (one request, no retry): how many templates the remote
        workspace lists, or UpstreamError saying what is wrong."""
        meta = (await self._get({"per_page": "1"})).get("meta")
        total = meta.get("total") if isinstance(meta, dict) else None
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            raise self._logged("GET check", invalid("the list's meta.total is not a count"))
        return total

    def _last_page(self, answer: Mapping[str, Any]) -> int:
        """The page's `meta.last_page`; a page without one is the last (0 means no pages)."""
        meta = answer.get("meta")
        if meta is None or (isinstance(meta, dict) and meta.get("last_page") is None):
            return 0
        last_page = meta.get("last_page") if isinstance(meta, dict) else None
        if not isinstance(last_page, int) or isinstance(last_page, bool) or last_page < 0:
            raise self._logged("GET", invalid("the list's meta.last_page is not a page count"))
        if last_page > self._max_pages:
            message = f"the upstream lists {last_page} pages, over the limit of {self._max_pages}"
            raise self._logged("GET", invalid(message))
        return last_page

    async def _read(self, query: dict[str, str]) -> dict[str, Any]:
        """`_get`, retried on network and server errors (a read is safe to repeat)."""
        return await retrying(
            lambda: self._get(query),
            max_attempts=self._max_attempts,
            backoff_s=self._backoff_s,
            sleep=self._sleep,
            retryable=_retryable,
            label=f"upstream GET {self._workspace}",
        )

    async def _get(self, query: dict[str, str]) -> dict[str, Any]:
        """One GET of the list: its JSON object, else UpstreamError."""
        url = self._templates_url.with_query(query)
        status, answer, retry_after = await self._send("GET", url, self._timeout)
        if not 200 <= status < 300:
            raise self._logged("GET", answer_error(status, answer, retry_after, self._token))
        if not isinstance(answer, dict):
            raise self._logged("GET", invalid("the answer is not a JSON object", status))
        logger.debug("upstream %s GET -> %d", self._workspace, status)
        return answer

    async def _send(
        self, method: str, url: URL, limits: aiohttp.ClientTimeout
    ) -> tuple[int, Any, str | None]:
        """One request: status, decoded JSON body (None if not JSON) and Retry-After."""
        self.calls += 1
        if self._on_call is not None:
            self._on_call()
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        try:
            async with self._session.request(
                method, url, headers=headers, timeout=limits, allow_redirects=False
            ) as response:
                body = await read_capped(response, self._max_body_bytes)
                return response.status, decode_json(body), response.headers.get("Retry-After")
        except BodyTooLarge as exc:
            raise self._logged(method, invalid(str(exc))) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            message = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, TimeoutError):
                message = "request timed out"
            error = UpstreamError("network", short(message, self._token))
            raise self._logged(method, error) from None

    def _logged(self, label: str, error: UpstreamError) -> UpstreamError:
        logger.info(
            "upstream %s %s: %s (HTTP %s)", self._workspace, label, error.kind, error.http_status
        )
        return error


def _retryable(error: Failure) -> bool:
    return isinstance(error, UpstreamError) and error.retryable


def _header_safe(token: str) -> bool:
    """Printable ASCII without spaces: what a bearer header can carry as it is."""
    return bool(token) and token.isascii() and token.isprintable() and " " not in token


def upstream_url(value: str) -> str:
    """An upstream's base URL as stored and called: http(s), a host, an optional path, no
    trailing "/"; nothing that would carry a secret (user:password, a query) or be dropped
    (a fragment). ValueError says what is wrong."""
    if not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError("must not contain spaces or control characters")
    try:
        url = URL(value.rstrip("/"))
        url.port  # noqa: B018  (yarl checks the port when it is read)
    except ValueError as error:  # a port out of range, a bad IPv6 host
        raise ValueError(f"not a URL: {error}") from None
    if url.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if not url.host:
        raise ValueError("has no host")
    if url.user is not None or url.password is not None or "@" in url.raw_authority:
        raise ValueError("must not carry a user or password: the token is given on its own")
    if "?" in value:
        raise ValueError("must not have a query (?...): give the upstream's base URL")
    if "#" in value:
        raise ValueError("must not have a fragment (#...): give the upstream's base URL")
    return str(url)
