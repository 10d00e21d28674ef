"""The dispatcher (design sections 10 and 11): sends the outbox's rows, each by one replica.

A pass first queues the events committed since the last one for each subscription that takes
them (Store.fan_out), then claims due rows with a lease (Store.claim_outbox), sends them
concurrently, a few at a time per target, and records each attempt: sent rows go, failed ones
come back later until they fail for good. A replica that dies mid-send leaves its rows leased;
another takes them over once the lease expires, so a receiver may see a row twice (at least
once; `X-Template-Sync-Delivery` and `webhook-id` dedupe).

The loop (`run()`, in `serve` and `template-sync dispatch`) is a pipeline: a pass starts its
sends and goes, and the sends in flight are counted per target across passes (send_slots.py).
A pass claims only what can be sent at once: rows of targets with a free slot, up to the free
slots in all; a send that ends frees its slot and wakes the loop. So a target that hangs or
answers slowly holds its own PER_TARGET slots for up to a send's timeout each, never the
other targets' rows, and the rows in memory are bounded by BATCH. An answer's body is never
read (attempts.py), however large.

A relay attempt forwards the delivery's stored bytes with the signature header Meta sent,
so the application verifies it with its app secret, unchanged; it is retried with a capped,
jittered exponential backoff (`relays.retry_at`) until older than OUTBOX_MAX_AGE_S, then kept as
failed for `relay list` and `relay retry`.

A notification attempt POSTs the event's payload, signed with the subscription's secret
(Standard Webhooks), through a session whose connector refuses internal addresses unless
WEBHOOKS_ALLOW_PRIVATE; its retries, and when it disables its subscription, are
notifications.py's.

Shaped like the Poller: `run_once()` is one pass whose sends it awaits (and `template-sync
dispatch --once`), `run()` loops every tick or as soon as `nudge()` says this process queued
something or a slot frees, and `running()` runs the loop as a task for an application's
lifespan. On stop, sends in flight get STOP_TIMEOUT_S and are then cancelled; their rows'
leases expire and they are sent again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from functools import partial

import aiohttp

from . import notifications, relays
from .attempts import FAILED, RETRY, SENT, Attempt, post
from .crypto import DecryptionError, TokenCipher
from .loops import Signals, in_background, repeat
from .metrics import Metrics
from .send_slots import SendSlots
from .signing import signature_headers
from .storage import Notification, OutboxItem, Store

logger = logging.getLogger(__name__)

BATCH = 64  # rows held at once: sends in flight, or claimed by `run_once` to send
FAN_OUT = 1000  # events queued for subscriptions per pass, at most; the next pass goes on
PER_TARGET = 16  # sends in flight to one relay or subscription at once (per replica)
SEND_TIMEOUT_S = 10.0  # a whole relay attempt: connect, send, status line
NOTIFY_TIMEOUT_S = 15.0  # a whole notification attempt
LEASE_S = 60.0  # longer than an attempt; a dead replica's rows wait this long
# On shutdown, sends in flight get this long; one cut short is sent again (at least once).
DEPTH_EVERY_S = 5.0  # how often a pass reads the outbox's depth for /metrics
STOP_TIMEOUT_S = 5.0
RELAY, NOTIFICATION = "relay", "notification"  # the outbox's kinds of row
NO_KEY = "the subscription's secret was encrypted under a key no longer configured"
Send = asyncio.Task[None]


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
        self._depth_read_at = -(10**15)  # the first pass reads it
        self.owner = owner
        self._max_age_ms = round(max_age_s * 1000)
        self._tick_s = tick_s
        self._clock = clock
        self._timeout_s = {RELAY: send_timeout_s, NOTIFICATION: notify_timeout_s}
        self._lease_ms = round(lease_s * 1000)
        self._jitter = jitter
        self._signals = Signals()
        self._slots = SendSlots(per_target, batch, on_free=self._signals.wake)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def nudge(self) -> None:
        """Start the next pass now: this process has just queued a row."""
        self._signals.wake()

    def stop(self) -> None:
        """End `run()` after the current pass: no send starts after it, and those in flight
        get `run()`'s stop timeout."""
        self._signals.stop()

    async def run_once(self) -> DispatchReport:
        """One pass: queue new events for subscriptions, claim the due rows this replica can
        lease (up to `batch`), send them, `per_target` at once to one target, and record each;
        returns once every send of the pass has ended."""
        report, sends = await self._pass(per_target=None)
        await self._summary(report, sends)
        return report

    async def _start_pass(self) -> None:
        """A pass of `run()`: claims only rows that can be sent at once (a slot free for
        their target, and in all), and leaves their sends running."""
        report, sends = await self._pass(per_target=self._slots.per_target)
        self._summary(report, sends)

    async def _pass(self, per_target: int | None) -> tuple[DispatchReport, list[Send]]:
        """Queue new events, claim due rows up to the free slots (and `per_target` rows of
        one target, counting its sends in flight) and start their sends."""
        await self._read_depth()
        queued = await self._store.fan_out(self._now_ms(), FAN_OUT)
        if queued >= FAN_OUT:
            self.nudge()  # more events are waiting: the next pass queues them without a tick
        report = DispatchReport(queued=queued)
        if not (limit := self._slots.free()):
            return report, []
        claimed_ms, busy = self._now_ms(), self._slots.busy()
        items = await self._store.claim_outbox(
            self.owner, claimed_ms, self._lease_ms, limit, per_target, busy
        )
        self._slots.claimed(busy, limit, [item.target_id for item in items])
        report.claimed = len(items)
        start = self._slots.start
        return report, [
            start(item.target_id, partial(self._send, item, claimed_ms, report)) for item in items
        ]

    def _summary(self, report: DispatchReport, sends: list[Send]) -> Awaitable[object]:
        """Log what a pass did once its sends have ended (awaitable for that moment)."""
        ended = asyncio.gather(*sends, return_exceptions=True)
        ended.add_done_callback(lambda _: log_pass(report))
        return ended

    async def _read_depth(self) -> None:
        """The outbox's gauges, read at most every DEPTH_EVERY_S."""
        now_ms = self._now_ms()
        if now_ms - self._depth_read_at < DEPTH_EVERY_S * 1000:
            return
        self._depth_read_at = now_ms
        self._metrics.outbox_depth(await self._store.outbox_depth(), now_ms)

    async def _send(self, item: OutboxItem, claimed_ms: int, report: DispatchReport) -> None:
        """Send a claimed row and record the attempt, unless stopping or its lease would
        expire before a send could end (it is due again once the lease has expired)."""
        if self._signals.stopping or self._now_ms() > self._send_by_ms(item, claimed_ms):
            report.deferred += 1
            return
        try:
            await self._dispatch(item, report)
        except Exception:  # the store failed: the lease expires, a later pass resends
            logger.exception("recording %s failed", describe(item))

    def _send_by_ms(self, item: OutboxItem, claimed_ms: int) -> int:
        return claimed_ms + self._lease_ms - round(self._timeout(item) * 1000)

    def _timeout(self, item: OutboxItem) -> float:
        return self._timeout_s.get(item.kind, self._timeout_s[RELAY])

    async def _dispatch(self, item: OutboxItem, report: DispatchReport) -> None:
        if item.kind == NOTIFICATION:
            await self._notify(item, report)
        else:
            await self._relay(item, report)

    async def _relay(self, item: OutboxItem, report: DispatchReport) -> None:
        """Forward the delivery's exact bytes with the signature they came with."""
        attempt = await post(
            self._session, item.url, item.body, relays.headers(item), self._timeout(item)
        )
        now_ms = self._now_ms()
        if attempt.error is not None:
            at = relays.retry_at(
                item.attempts + 1, item.created_at, now_ms, self._max_age_ms, self._jitter()
            )
            attempt = replace(attempt, next_at=at)
        recorded = await self._store.finish_outbox(
            item, self.owner, now_ms, attempt.error, attempt.next_at
        )
        done = self._recorded(item, attempt, recorded, report, item.created_at)
        if done and attempt.result == FAILED:
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
        committed_at = found.event.row.received_at if found is not None else None
        if self._recorded(item, attempt, recorded, report, committed_at) and disable is not None:
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
        return await post(self._webhook_session, item.url, body, headers, self._timeout(item))

    def _recorded(
        self,
        item: OutboxItem,
        attempt: Attempt,
        recorded: bool,
        report: DispatchReport,
        committed_at: int | None,
    ) -> bool:
        """Count and log an attempt the store was asked to record (a sent one's delay since
        `committed_at`, when what it reports was committed); False if it could not be, the
        lease having passed to another replica."""
        if attempt.error is not None:
            logger.warning("%s, attempt %d: %s", describe(item), item.attempts + 1, attempt.error)
        self._metrics.outbox_attempts.labels(item.kind, attempt.result).inc()
        if attempt.error is None and committed_at is not None:
            delay_s = max(0, self._now_ms() - committed_at) / 1000
            self._metrics.outbox_delivered_seconds.labels(item.kind).observe(delay_s)
        if not recorded:
            report.lost_lease += 1
            logger.warning("%s: lease lost before the attempt was recorded", describe(item))
            return False
        report.count(attempt.result)
        return True

    async def run(self, stop_timeout_s: float | None = STOP_TIMEOUT_S) -> None:
        """Pass after pass, `tick_s` apart or sooner when nudged or a slot frees, until
        stopped; a failed pass is logged and the next tick tries again. Once stopped, sends
        in flight get `stop_timeout_s` (None: as long as they take) to end, then are
        cancelled, as they are at once when this is cancelled: their rows' leases expire
        and they are sent again (at least once)."""
        try:
            await repeat("dispatch", self._start_pass, self._tick_s, self._signals)
            await self._slots.wait(stop_timeout_s)
        finally:
            if cut := await self._slots.cancel():
                logger.warning(
                    "sends cut short by the stop: %d; their rows are sent again once their "
                    "leases expire", cut,
                )  # fmt: skip

    def running(self, stop_timeout_s: float = STOP_TIMEOUT_S) -> AbstractAsyncContextManager[None]:
        """The loop as a task for the block's duration; on exit its sends in flight get
        `stop_timeout_s`, then are cancelled, and their rows are sent again later (`run`)."""
        run = partial(self.run, None)  # in_background cancels it after stop_timeout_s
        return in_background(f"dispatcher {self.owner}", run, self._signals, stop_timeout_s)


def log_pass(report: DispatchReport) -> None:
    """What a pass did, once its sends have ended: INFO when not all were sent."""
    if not report.claimed:
        return
    level = logging.INFO if report.sent < report.claimed else logging.DEBUG
    logger.log(
        level,
        "dispatch pass: %d claimed, %d sent, %d retried, %d failed, %d lost lease, "
        "%d deferred", report.claimed, report.sent, report.retried, report.failed,
        report.lost_lease, report.deferred,
    )  # fmt: skip


def describe(item: OutboxItem) -> str:
    """A row as logs name it: ids only, never the URL (its query may hold a secret)."""
    if item.kind == NOTIFICATION:
        return f"webhook {item.target_id} of {notifications.event_id(item.item_id)}"
    return f"relay {item.target_id} of delivery {item.item_id}"
