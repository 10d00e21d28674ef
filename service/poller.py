"""The polling fallback (design section 8): sync only the workspaces webhooks left behind.

Each pass asks the store for due workspaces (a pending template with no webhook since it
became pending, older than the grace period, and no sync of the workspace by anyone within
the interval), claims each one in the store so exactly one replica polls it, and runs the
shared sync (service.sync.Syncer) for it with bounded concurrency. Per-WABA throttling is
honoured inside the Syncer. A workspace whose poll fails backs off exponentially (jittered,
capped); its failures are kept in its poll state (Store.poll_state).

Shaped like arq's Worker and uvicorn's Server: `run_once()` is one pass (and
`template-sync poll --once`), `run(stop)` loops every tick until `stop` is set, and
`running()` runs the loop as a task for an application's lifespan.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from .loops import Signals, in_background, repeat
from .metrics import Metrics
from .storage import Store
from .sync import NoPendingTemplates, Syncer, SyncReport

logger = logging.getLogger(__name__)

TRIGGER = "poller"
# A claim outlives a sync's worst case: waiting out another run's lease, then its own
# deadline (300 s by default). A replica that dies holding a claim delays that workspace so long.
LEASES_PER_SYNC_LEASE = 2.5
MIN_BACKOFF_S = 60.0  # backoff base when the interval is shorter
MAX_BACKOFF_S = 6 * 3600.0  # backoff cap (or the interval, when that is longer)
BACKOFF_JITTER = 0.2  # a backoff is shortened by up to this fraction, spreading retries
BATCH = 100  # due workspaces taken per pass; the rest wait for the next tick
STOP_TIMEOUT_S = 10.0
FAILED_OUTCOMES = frozenset({"partial", "failed", "error"})


def default_owner() -> str:
    """This replica's name in poll claims: host, process and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class PollReport:
    """What one pass did."""

    due: int = 0
    claimed: int = 0  # polled by this replica (others may have claimed the rest)
    waiting: int = 0  # pending templates without a webhook, still inside the grace period
    next_due_at: int | None = None  # when the first of those leaves it (ms)
    outcomes: dict[str, int] = field(default_factory=dict)
    repaired: int = 0  # templates polls moved out of pending: verdicts Meta did not deliver
    graph_calls: int = 0

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


@dataclass(frozen=True)
class _Outcome:
    name: str  # succeeded, partial, failed, no_pending, error
    error: str | None = None
    retry_after_s: float = 0.0


class Poller:
    """The polling loop of one replica; see the module docstring."""

    def __init__(
        self,
        store: Store,
        syncer: Syncer,
        *,
        tick_s: float,
        grace_s: float,
        interval_s: float,
        concurrency: int = 4,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        lease_s: float | None = None,
        batch: int = BATCH,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if concurrency < 1 or batch < 1:
            raise ValueError("concurrency and batch must be >= 1")
        self._store = store
        self._syncer = syncer
        self._tick_s = tick_s
        self._signals = Signals()
        self._grace_ms = int(grace_s * 1000)
        self._interval_s = interval_s
        self._concurrency = concurrency
        self.owner = owner or default_owner()
        self._clock = clock
        self._metrics = metrics or Metrics()
        self._lease_ms = int((lease_s or syncer.lease_s * LEASES_PER_SYNC_LEASE) * 1000)
        self._batch = batch
        self._jitter = jitter

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    @property
    def _interval_ms(self) -> int:
        return int(self._interval_s * 1000)

    async def run_once(self) -> PollReport:
        """One pass: poll every due workspace this replica can claim."""
        now_ms = self._now_ms()
        due = await self._store.due_workspaces(
            now_ms, self._grace_ms, self._interval_ms, self._batch
        )
        self._metrics.due_workspaces.set(len(due))
        waiting, next_due_at = await self._store.grace_waiting(now_ms, self._grace_ms)
        report = PollReport(due=len(due), waiting=waiting, next_due_at=next_due_at)
        semaphore = asyncio.Semaphore(self._concurrency)

        async def guarded(workspace_id: str) -> None:
            async with semaphore:
                try:
                    await self._poll(workspace_id, report)
                except Exception:  # the store failed: the lease expires, another pass retries
                    logger.exception("poll of workspace %s failed", workspace_id)
                    report.count("error")
                    self._metrics.polls.labels("error").inc()

        async with asyncio.TaskGroup() as group:
            for workspace_id in due:
                group.create_task(guarded(workspace_id))
        if due:
            logger.info(
                "polling pass: %d due, %d polled here, outcomes %s, %d repaired",
                report.due, report.claimed, report.outcomes, report.repaired,
            )  # fmt: skip
        return report

    async def _poll(self, workspace_id: str, report: PollReport) -> None:
        claimed = await self._store.claim_poll(
            workspace_id, self.owner, self._now_ms(), self._lease_ms, self._interval_ms
        )
        if not claimed:
            return  # another replica has it, or a sync ran since the due query
        report.claimed += 1
        outcome = await self._sync(workspace_id, report)
        report.count(outcome.name)
        self._metrics.polls.labels(outcome.name).inc()
        await self._record(workspace_id, outcome)

    async def _sync(self, workspace_id: str, report: PollReport) -> _Outcome:
        before = {t.id for t in await self._store.pending_templates(workspace_id)}
        try:
            result = await self._syncer.sync(workspace_id, TRIGGER)
        except NoPendingTemplates:
            return _Outcome("no_pending")  # a webhook settled them since the due query
        except Exception as error:
            logger.exception("sync of workspace %s for the poller failed", workspace_id)
            return _Outcome("error", type(error).__name__)
        # Repairs: templates the poll moved out of pending, whose verdict webhook never came.
        # (result.updated also counts quality or category corrections of still-pending ones.)
        after = {t.id for t in await self._store.pending_templates(workspace_id)}
        repaired = len(before - after)
        report.repaired += repaired
        report.graph_calls += result.graph_calls
        self._metrics.poll_repairs.inc(repaired)
        return _outcome(result)

    async def _record(self, workspace_id: str, outcome: _Outcome) -> None:
        now_ms = self._now_ms()
        failures, next_ms = 0, now_ms + self._interval_ms
        if outcome.name in FAILED_OUTCOMES:
            state = await self._store.poll_state(workspace_id)
            failures = (state.failures if state else 0) + 1
            next_ms = now_ms + int(self.backoff_s(failures, outcome.retry_after_s) * 1000)
            logger.warning(
                "poll of workspace %s: %s (%s), failure %d in a row, next in %.0f s",
                workspace_id, outcome.name, outcome.error, failures, (next_ms - now_ms) / 1000,
            )  # fmt: skip
        kept = await self._store.record_poll(
            workspace_id, self.owner, outcome.name, now_ms, next_ms, failures, outcome.error
        )
        if not kept:
            logger.warning("poll lease of workspace %s expired before the poll ended", workspace_id)

    def backoff_s(self, failures: int, retry_after_s: float = 0.0) -> float:
        """Delay before polling a workspace again after `failures` failed polls in a row."""
        base_s = max(self._interval_s, MIN_BACKOFF_S)
        cap_s = max(MAX_BACKOFF_S, self._interval_s)
        delay_s = min(cap_s, base_s * 2.0 ** min(failures, 32))
        delay_s *= 1.0 - BACKOFF_JITTER * self._jitter()
        return max(delay_s, self._interval_s, retry_after_s)

    def stop(self) -> None:
        """End `run()` after the current pass."""
        self._signals.stop()

    async def run(self) -> None:
        """Pass after pass, `tick_s` apart, until stopped; a failed pass is logged."""
        await repeat("polling", self.run_once, self._tick_s, self._signals)

    def running(self, stop_timeout_s: float = STOP_TIMEOUT_S) -> AbstractAsyncContextManager[None]:
        """The loop as a task for the block's duration (loops.in_background)."""
        return in_background(f"poller {self.owner}", self.run, self._signals, stop_timeout_s)


def _outcome(result: SyncReport) -> _Outcome:
    if not result.failures:
        return _Outcome(result.status)
    error = "; ".join(
        f"WABA {f.waba_id or '-'}: {f.kind}" + (f" (code {f.code})" if f.code else "")
        for f in result.failures
    )
    retry_after_s = max((f.retry_after_s or 0.0) for f in result.failures)
    return _Outcome(result.status, error, retry_after_s)
