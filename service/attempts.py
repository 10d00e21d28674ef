"""One attempt to send an outbox row over HTTP (dispatch.py): bounded in time, never
redirected, its answer's body never read, its error told without a secret."""

from __future__ import annotations

import os
from dataclasses import dataclass

import aiohttp

from .safe_urls import InternalAddressError

SENT, RETRY, FAILED = "sent", "retry", "failed"  # an attempt's result, as metrics label it


@dataclass(frozen=True)
class Attempt:
    """How one attempt went: the answer's status code if one came, and the error if it failed
    (None: a 2xx in time); `next_at` is when to try again (None: sent, or failed for good)."""

    status_code: int | None
    error: str | None
    next_at: int | None = None

    @property
    def result(self) -> str:
        return SENT if self.error is None else RETRY if self.next_at is not None else FAILED


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], timeout_s: float
) -> Attempt:
    """POST to `url`, without following redirects; failed unless a 2xx answered within
    `timeout_s`, with a short error that never shows the URL, body or signature. Only the
    status line and headers are read: leaving the block with the body unread closes the
    connection, so a huge or endless answer costs no more than the socket's buffers."""
    try:
        async with session.post(
            url, data=body, headers=headers, allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:  # fmt: skip
            status = response.status
    except TimeoutError:  # aiohttp's timeouts are TimeoutErrors too
        return Attempt(None, f"timeout after {timeout_s:g} s")
    except (aiohttp.ClientError, OSError, ValueError) as error:
        return Attempt(None, attempt_error(error))
    return Attempt(status, None if 200 <= status < 300 else f"HTTP {status}")


def attempt_error(error: BaseException) -> str:
    """A failed connection in a few words. aiohttp's own messages name the URL (its query
    or userinfo may hold a secret), so only the error's kind and the OS's reason are used,
    or safe_urls' refusal, which names the address it refused and the setting to change."""
    refused = getattr(error, "os_error", None)
    if isinstance(refused, InternalAddressError) and refused.strerror:
        return str(refused.strerror)
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return "DNS lookup failed"
    if isinstance(error, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if isinstance(error, OSError) and error.errno:  # refused, reset, unreachable...
        return os.strerror(error.errno).lower()
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "disconnected before answering"
    if isinstance(error, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError, ValueError)):
        return "invalid URL"
    return f"connection error ({type(error).__name__})"
