"""The dispatcher (design sections 10 and 11): sends the outbox's rows, each by one replica.

A pass first queues the events committed since the last one for each subscription that takes
them (Store.fan_out), then claims due rows with a lease (Store.claim_outbox), sends them
concurrently, a few at a time per target, and records each attempt: sent rows go, failed ones
come back later until they fail for good. A replica that dies mid-send leaves its rows leased;
another takes them over once the lease expires, so a receiver may see a row twice (at least
once; `X-Template-Sync-Delivery` and `webhook-id` dedupe).

A relay attempt forwards the delivery's stored bytes with the signature header Meta sent,
so the application verifies it with its app secret, unchanged; it is retried with a capped,
jittered exponential backoff (`relays.retry_at`) until older than OUTBOX_MAX_AGE_S, then kept as
failed for `relay list` and `relay retry`.

A notification attempt POSTs the event's payload, signed with the subscription's secret
(Standard Webhooks), through a session whose connector refuses internal addresses unless
WEBHOOKS_ALLOW_PRIVATE; its retries, and when it disables its subscription, are
notifications.py's.

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
from dataclasses import dataclass, replace

import aiohttp

from . import notifications, relays
from .crypto import DecryptionError, TokenCipher
from .loops import Signals, in_background, repeat
from .metrics import Metrics
from .safe_urls import InternalAddressError
from .signing import signature_headers
from .storage import Notification, OutboxItem, Store

logger = logging.getLogger(__name__)

BATCH = 64  # rows claimed per pass
FAN_OUT = 1000  # events queued for subscriptions per pass, at most; the next pass goes on
PER_TARGET = 4  # sends in flight to one relay or subscription at once
SEND_TIMEOUT_S = 10.0  # a whole relay attempt: connect, send, status line
NOTIFY_TIMEOUT_S = 15.0  # a whole notification attempt
LEASE_S = 60.0  # longer than an attempt; a dead replica's rows wait this long
# On shutdown, sends in flight get this long; one cut short is sent again (at least once).
STOP_TIMEOUT_S = 5.0
SENT, RETRY, FAILED = "sent", "retry", "failed"  # an attempt's result, as metrics label it
RELAY, NOTIFICATION = "relay", "notification"  # the outbox's kinds of row
NO_KEY = "the subscription's secret was encrypted under a key no longer configured"


@dataclass
class DispatchReport:
    """What one pass did, in rows."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0  # failed, due again later
    failed: int = 0  # failed for good: past the retries or older than OUTBOX_MAX_AGE_S
    lost_lease: int = 0  # sent or failed, but another replica had taken the row over
    deferred: int = 0  # not tried: too little of the lease left, or stopping; due again later
    queued: int = 0  # notification rows queued for subscriptions at the start of the pass
    disabled: int = 0  # subscriptions an attempt disabled (410 Gone, or failing for 5 days)

    def count(self, result: str) -> None:
        field = {SENT: "sent", RETRY: "retried", FAILED: "failed"}[result]
        setattr(self, field, getattr(self, field) + 1)


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


class Dispatcher:
    """The outbox's sender in one replica; see the module docstring.

    `session` sends relays (operator-set URLs); `webhook_session` sends notifications to
    URLs that API clients registered, so its connector must be safe_urls' (assembly.py).
    """

    def __init__(
        self,
        store: Store,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        *,
        webhook_session: aiohttp.ClientSession,
        cipher: TokenCipher,
        owner: str,
        max_age_s: float,
        tick_s: float,
        clock: Callable[[], float] = time.time,
        send_timeout_s: float = SEND_TIMEOUT_S,
        notify_timeout_s: float = NOTIFY_TIMEOUT_S,
        lease_s: float = LEASE_S,
        batch: int = BATCH,
        per_target: int = PER_TARGET,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if batch < 1 or per_target < 1 or lease_s <= max(send_timeout_s, notify_timeout_s):
            raise ValueError("batch and per_target must be >= 1, the lease longer than a send")
        self._store = store
        self._session = session
        self._webhook_session = webhook_session
        self._cipher = cipher
        self._metrics = metrics
        self.owner = owner
        self._max_age_ms = round(max_age_s * 1000)
        self._tick_s = tick_s
        self._clock = clock
        self._timeout_s = {RELAY: send_timeout_s, NOTIFICATION: notify_timeout_s}
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
        """One pass: queue new events for subscriptions, claim the due rows this replica can
        lease, send them, record each."""
        queued = await self._store.fan_out(self._now_ms(), FAN_OUT)
        if queued >= FAN_OUT:
            self.nudge()  # more events are waiting: the next pass queues them without a tick
        claimed_ms = self._now_ms()
        items = await self._store.claim_outbox(self.owner, claimed_ms, self._lease_ms, self._batch)
        report = DispatchReport(claimed=len(items), queued=queued)
        per_target: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(self._per_target)
        )

        async def guarded(item: OutboxItem) -> None:
            send_by_ms = claimed_ms + self._lease_ms - round(self._timeout(item) * 1000)
            async with per_target[item.target_id]:
                if self._signals.stopping or self._now_ms() > send_by_ms:
                    report.deferred += 1  # its lease expires before a send could end
                    return
                try:
                    await self._dispatch(item, report)
                except Exception:  # the store failed: the lease expires, a later pass resends
                    logger.exception("recording %s failed", describe(item))

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

    def _timeout(self, item: OutboxItem) -> float:
        return self._timeout_s.get(item.kind, self._timeout_s[RELAY])

    async def _dispatch(self, item: OutboxItem, report: DispatchReport) -> None:
        if item.kind == NOTIFICATION:
            await self._notify(item, report)
        else:
            await self._relay(item, report)

    async def _relay(self, item: OutboxItem, report: DispatchReport) -> None:
        """Forward the delivery's exact bytes with the signature they came with."""
        attempt = await self._post(self._session, item, item.body, relays.headers(item))
        now_ms = self._now_ms()
        if attempt.error is not None:
            at = relays.retry_at(
                item.attempts + 1, item.created_at, now_ms, self._max_age_ms, self._jitter()
            )
            attempt = replace(attempt, next_at=at)
        recorded = await self._store.finish_outbox(
            item, self.owner, now_ms, attempt.error, attempt.next_at
        )
        if self._recorded(item, attempt, recorded, report) and attempt.result == FAILED:
            logger.info(
                "%s failed for good after %d attempts (older than the outbox's max age); "
                "`template-sync relay retry %s` queues it again",
                describe(item), item.attempts + 1, item.target_id,
            )  # fmt: skip

    async def _notify(self, item: OutboxItem, report: DispatchReport) -> None:
        """Send one event to one subscription and record the attempt, disabling the
        subscription when the failure says to (notifications.disable_reason)."""
        found = await self._store.notification(item)
        if found is None:  # deleted since it was queued: nothing left to send, ever
            attempt = Attempt(None, notifications.EVENT_GONE)
        else:
            attempt = await self._send_event(item, found)
        now_ms = self._now_ms()
        disable = None
        if found is not None and attempt.error is not None:
            at = notifications.retry_at(
                item.attempts + 1, item.created_at, now_ms, self._max_age_ms, self._jitter()
            )
            attempt = replace(attempt, next_at=at)
            disable = notifications.disable_reason(attempt.status_code, found.failing_since, now_ms)
        recorded = await self._store.record_notification(
            item, self.owner, now_ms, attempt.status_code, attempt.error, attempt.next_at, disable
        )
        if self._recorded(item, attempt, recorded, report) and disable is not None:
            report.disabled += 1
            logger.warning(
                "webhook subscription %s disabled: %s; POST .../webhooks/%s/enable enables "
                "it again", item.target_id, disable, item.target_id,
            )  # fmt: skip

    async def _send_event(self, item: OutboxItem, found: Notification) -> Attempt:
        """POST the event's payload, signed for this attempt with the subscription's secret."""
        try:
            secret = self._cipher.decrypt(found.secret_enc)
        except DecryptionError:
            return Attempt(None, NO_KEY)
        body = notifications.payload(found)
        message_id = notifications.event_id(item.item_id)
        headers = {
            "Content-Type": "application/json",
            **signature_headers(secret, message_id, self._now_ms() // 1000, body),
        }
        return await self._post(self._webhook_session, item, body, headers)

    def _recorded(
        self, item: OutboxItem, attempt: Attempt, recorded: bool, report: DispatchReport
    ) -> bool:
        """Count and log an attempt the store was asked to record; False if it could not
        be, the lease having passed to another replica."""
        if attempt.error is not None:
            logger.warning("%s, attempt %d: %s", describe(item), item.attempts + 1, attempt.error)
        self._metrics.outbox_attempts.labels(item.kind, attempt.result).inc()
        if not recorded:
            report.lost_lease += 1
            logger.warning("%s: lease lost before the attempt was recorded", describe(item))
            return False
        report.count(attempt.result)
        return True

    async def _post(
        self, session: aiohttp.ClientSession, item: OutboxItem, body: bytes, headers: dict[str, str]
    ) -> Attempt:
        """POST to the row's URL, without following redirects; failed unless a 2xx answered
        in time, with a short error that never shows the URL, body or signature."""
        timeout_s = self._timeout(item)
        try:
            async with session.post(
                item.url, data=body, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:  # fmt: skip
                status = response.status
        except TimeoutError:  # aiohttp's timeouts are TimeoutErrors too
            return Attempt(None, f"timeout after {timeout_s:g} s")
        except (aiohttp.ClientError, OSError, ValueError) as error:
            return Attempt(None, attempt_error(error))
        return Attempt(status, None if 200 <= status < 300 else f"HTTP {status}")

    async def run(self) -> None:
        """Pass after pass, `tick_s` apart or sooner when nudged, until stopped; a failed
        pass is logged and the next tick tries again."""
        await repeat("dispatch", self.run_once, self._tick_s, self._signals)

    def running(self, stop_timeout_s: float = STOP_TIMEOUT_S) -> AbstractAsyncContextManager[None]:
        """The loop as a task for the block's duration; a pass cut short leaves its rows'
        leases to expire, and they are sent again (loops.in_background)."""
        return in_background(f"dispatcher {self.owner}", self.run, self._signals, stop_timeout_s)


def describe(item: OutboxItem) -> str:
    """A row as logs name it: ids only, never the URL (its query may hold a secret)."""
    if item.kind == NOTIFICATION:
        return f"webhook {item.target_id} of {notifications.event_id(item.item_id)}"
    return f"relay {item.target_id} of delivery {item.item_id}"


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
