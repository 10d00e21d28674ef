"""What the outbound API clients (Meta's Graph, an upstream template-sync) share: one
timeout for every phase of a call, a retry loop with jittered exponential backoff, and a body
reader that refuses an answer larger than the caller expects before holding all of it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar, runtime_checkable

import aiohttp

__all__ = ["BodyTooLarge", "Failure", "backoff_delay", "client_timeout", "read_capped", "retrying"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]
CHUNK_BYTES = 64 * 1024


@runtime_checkable
class Failure(Protocol):
    """An error a client raises for a failed call: its kind (for logs) and how many requests
    the call made before it gave up, which `retrying` sets."""

    attempts: int

    @property
    def kind(self) -> str: ...


class BodyTooLarge(Exception):
    """An answer announced or found larger than the caller's cap; the rest is not read."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"answer larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


def client_timeout(timeout_s: float) -> aiohttp.ClientTimeout:
    """One bound for the whole call, the connect and each socket read alike."""
    return aiohttp.ClientTimeout(total=timeout_s, connect=timeout_s, sock_read=timeout_s)


def backoff_delay(backoff_s: float, attempt: int) -> float:
    """Exponential backoff with jitter in [half, full] of the nominal delay, so clients that
    failed together do not all come back at the same moment."""
    nominal = backoff_s * 2 ** (attempt - 1)
    return random.uniform(nominal / 2, nominal)


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    max_attempts: int,
    backoff_s: float,
    sleep: Sleep,
    retryable: Callable[[Failure], bool],
    label: str,
) -> T:
    """`call()` until it succeeds, fails with an error `retryable` refuses, or has been made
    `max_attempts` times. A `Failure` that ends the loop carries the number of attempts;
    any other exception propagates at once. `label` names the call in log lines (never a
    URL with secrets)."""
    attempt = 1
    while True:
        try:
            return await call()
        except Exception as exc:
            if not isinstance(exc, Failure):
                raise
            exc.attempts = attempt
            if attempt >= max_attempts or not retryable(exc):
                raise
            delay_s = backoff_delay(backoff_s, attempt)
            logger.info(
                "%s attempt %d failed (%s), retrying in %.2fs", label, attempt, exc.kind, delay_s
            )
            await sleep(delay_s)
            attempt += 1


async def read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The response's body, or BodyTooLarge as soon as its Content-Length or the bytes read
    pass `max_bytes` (at most one chunk more is held). Leaving the response's context
    afterwards closes the connection instead of draining the rest."""
    if response.content_length is not None and response.content_length > max_bytes:
        raise BodyTooLarge(max_bytes)
    body = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        body += chunk
        if len(body) > max_bytes:
            raise BodyTooLarge(max_bytes)
    return bytes(body)
