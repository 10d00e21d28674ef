"""The dispatcher (design section 10): sends the outbox's rows, each by one replica.

A pass claims due rows with a lease (Store.claim_outbox), sends them concurrently, a few at
a time per target, and records each attempt (Store.finish_outbox): sent rows go, failed ones
come back after a capped, jittered exponential backoff (`retry_at`) until they are older than
OUTBOX_MAX_AGE_S, and are then kept as failed for `relay list` and `relay retry`. A replica
that dies mid-send leaves its rows leased; another takes them over once the lease expires,
so a receiver may see a delivery twice (at least once; `X-Template-Sync-Delivery` dedupes).

A relay attempt forwards the delivery's stored bytes with the signature header Meta sent,
so the application verifies it with its app secret, unchanged.

Shaped like the Poller: `run_once()` is one pass (and `template-sync dispatch --once`),
`run()` loops every tick or as soon as `nudge()` says this process queued something, and
`running()` runs the loop as a task for an application's lifespan.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import aiohttp

from .loops import Signals, in_background, repeat
from .metrics import Metrics
from .storage import OutboxItem, Store

logger = logging.getLogger(__name__)

BATCH = 64  # rows claimed per pass
PER_TARGET = 4  # sends in flight to one relay at once
SEND_TIMEOUT_S = 10.0  # a whole attempt: connect, send, status line
LEASE_S = 60.0  # longer than an attempt; a dead replica's rows wait this long
FIRST_RETRY_S = 5.0
MAX_RETRY_S = 3600.0
RETRY_JITTER = 0.2  # a capped delay is scaled by a random factor in [0.8, 1.2), capped again
# On shutdown, sends in flight get this long; one cut short is sent again (at least once).
STOP_TIMEOUT_S = 5.0
SENT, RETRY, FAILED = "sent", "retry", "failed"  # an attempt's result, as metrics label it


def retry_at(
    failures: int, created_at_ms: int, now_ms: int, max_age_ms: int, jitter: float
) -> int | None:
    """When to try a row again whose `failures`-th attempt failed at `now_ms`: about 5 s
    after the first failure, doubling, at most an hour apart; None once the row is older than
    `max_age_ms` (failed for good). `jitter`, in [0, 1), spreads the retries of a burst."""
    if now_ms - created_at_ms > max_age_ms:
        return None
    delay_s = min(FIRST_RETRY_S * 2.0 ** min(max(failures - 1, 0), 32), MAX_RETRY_S)
    delay_s *= 1.0 + RETRY_JITTER * (2.0 * jitter - 1.0)
    return now_ms + round(min(delay_s, MAX_RETRY_S) * 1000)


@dataclass
class DispatchReport:
    """What one pass did, in rows."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0  # failed, due again later
    failed: int = 0  # failed for good: older than OUTBOX_MAX_AGE_S
    lost_lease: int = 0  # sent or failed, but another replica had taken the row over
    deferred: int = 0  # not tried: too little of the lease left, or stopping; due again later

    def count(self, result: str) -> None:
        field = {SENT: "sent", RETRY: "retried", FAILED: "failed"}[result]
        setattr(self, field, getattr(self, field) + 1)


class Dispatcher:
    """The outbox's sender in one replica; see the module docstring."""

    def __init__(
        self,
        store: Store,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        *,
        owner: str,
        max_age_s: float,
        tick_s: float,
        clock: Callable[[], float] = time.time,
        send_timeout_s: float = SEND_TIMEOUT_S,
        lease_s: float = LEASE_S,
        batch: int = BATCH,
        per_target: int = PER_TARGET,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if batch < 1 or per_target < 1 or lease_s <= send_timeout_s:
            raise ValueError("batch and per_target must be >= 1, the lease longer than a send")
        self._store = store
        self._session = session
        self._metrics = metrics
        self.owner = owner
        self._max_age_ms = round(max_age_s * 1000)
        self._tick_s = tick_s
        self._clock = clock
        self._send_timeout_s = send_timeout_s
        self._timeout = aiohttp.ClientTimeout(total=send_timeout_s)
        self._lease_ms = round(lease_s * 1000)
        self._batch = batch
        self._per_target = per_target
        self._jitter = jitter
        self._signals = Signals()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def nudge(self) -> None:
        """Start the next pass now: this process has just queued a row."""
        self._signals.wake()

    def stop(self) -> None:
        """End `run()` after the current pass, which starts no more sends."""
        self._signals.stop()

    async def run_once(self) -> DispatchReport:
        """One pass: claim the due rows this replica can lease, send them, record each."""
        claimed_ms = self._now_ms()
        items = await self._store.claim_outbox(self.owner, claimed_ms, self._lease_ms, self._batch)
        report = DispatchReport(claimed=len(items))
        send_by_ms = claimed_ms + self._lease_ms - round(self._send_timeout_s * 1000)
        per_target: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(self._per_target)
        )

        async def guarded(item: OutboxItem) -> None:
            async with per_target[item.target_id]:
                if self._signals.stopping or self._now_ms() > send_by_ms:
                    report.deferred += 1  # its lease expires before a send could end
                    return
                try:
                    await self._dispatch(item, report)
                except Exception:  # the store failed: the lease expires, a later pass resends
                    logger.exception("recording relay %s of delivery %s failed", item.target_id,
                                     item.item_id)  # fmt: skip

        async with asyncio.TaskGroup() as group:
            for item in items:
                group.create_task(guarded(item))
        if items:
            level = logging.INFO if report.sent < report.claimed else logging.DEBUG
            logger.log(
                level,
                "dispatch pass: %d claimed, %d sent, %d retried, %d failed, %d lost lease, "
                "%d deferred", report.claimed, report.sent, report.retried, report.failed,
                report.lost_lease, report.deferred,
            )  # fmt: skip
        return report

    async def _dispatch(self, item: OutboxItem, report: DispatchReport) -> None:
        error = await self._attempt(item)
        now_ms = self._now_ms()
        next_at = None
        if error is None:
            result = SENT
        else:
            failures = item.attempts + 1
            next_at = retry_at(failures, item.created_at, now_ms, self._max_age_ms, self._jitter())
            result = RETRY if next_at is not None else FAILED
            logger.warning(
                "relay %s of delivery %s, attempt %d: %s", item.target_id, item.item_id,
                failures, error,
            )  # fmt: skip
        self._metrics.outbox_attempts.labels(item.kind, result).inc()
        if not await self._store.finish_outbox(item, self.owner, now_ms, error, next_at):
            report.lost_lease += 1
            logger.warning("relay %s of delivery %s: lease lost before the attempt was "
                           "recorded", item.target_id, item.item_id)  # fmt: skip
            return
        if result == FAILED:
            logger.info(
                "relay %s of delivery %s failed for good after %d attempts (older than the "
                "outbox's max age); `template-sync relay retry %s` queues it again",
                item.target_id, item.item_id, item.attempts + 1, item.target_id,
            )  # fmt: skip
        report.count(result)

    async def _attempt(self, item: OutboxItem) -> str | None:
        """POST the delivery's exact bytes with the signature they came with; None when a
        2xx answered in time, else a short error without the URL, body or signature."""
        headers = {
            "Content-Type": "application/json",
            "X-Template-Sync-Delivery": str(item.item_id),
            "X-Template-Sync-Attempt": str(item.attempts + 1),
        }
        if item.signature is not None:
            headers["X-Hub-Signature-256"] = item.signature
        try:
            async with self._session.post(
                item.url, data=item.body, headers=headers, allow_redirects=False,
                timeout=self._timeout,
            ) as response:  # fmt: skip
                status = response.status
        except TimeoutError:  # aiohttp's timeouts are TimeoutErrors too
            return f"timeout after {self._send_timeout_s:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as error:
            return attempt_error(error)
        return None if 200 <= status < 300 else f"HTTP {status}"

    async def run(self) -> None:
        """Pass after pass, `tick_s` apart or sooner when nudged, until stopped; a failed
        pass is logged and the next tick tries again."""
        await repeat("dispatch", self.run_once, self._tick_s, self._signals)

    def running(self, stop_timeout_s: float = STOP_TIMEOUT_S) -> AbstractAsyncContextManager[None]:
        """The loop as a task for the block's duration; a pass cut short leaves its rows'
        leases to expire, and they are sent again (loops.in_background)."""
        return in_background(f"dispatcher {self.owner}", self.run, self._signals, stop_timeout_s)


def attempt_error(error: BaseException) -> str:
    """A failed connection in a few words. aiohttp's own messages name the URL (its query
    or userinfo may hold a secret), so only the error's kind and the OS's reason are used."""
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
