"""The sync use case (design sections 7 and 14), shared by the endpoint, the CLI, the poller
and `import`: one run at a time per workspace (in this process and across replicas), its
source of truth asked through one interface (sources.Source: Meta's Graph API or an
upstream), its answers stored through one rule (Store.apply_remote), every run recorded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from prometheus_client import Counter

from .crypto import TokenCipher, meta_token
from .graph import GraphClient
from .metrics import Metrics
from .source_graph import GraphSource
from .source_upstream import UpstreamSource
from .sources import Source, WabaFailure
from .storage import Channel, PendingTemplate, RemoteCounts, Store, SyncRun, Upstream
from .times import iso
from .upstream import UpstreamClient

logger = logging.getLogger(__name__)

DEADLINE_S = 90.0  # a whole sync; every Graph call also has its own timeout
# A claimed sync that others wait for is taken over once its lease (deadline + a third)
# has expired: its owner died.
LEASE_PER_DEADLINE = 4 / 3
WAIT_POLL_S = 0.2


class NoPendingTemplates(Exception):
    """The workspace has no PENDING or IN_APPEAL template: nothing to sync."""


@dataclass
class SyncReport:
    run_id: int
    synced_at: int
    checked: int = 0
    updated: int = 0
    unchanged: int = 0
    missing: int = 0
    graph_calls: int = 0  # calls to the source of truth: Graph's, or the upstream's
    failures: list[WabaFailure] = field(default_factory=list)

    @property
    def status(self) -> str:
        if not self.failures:
            return "succeeded"
        return "partial" if self.checked else "failed"

    def as_run(self, workspace_id: str, trigger: str, started_at: int) -> SyncRun:
        error = json.dumps([asdict(f) for f in self.failures]) if self.failures else None
        return SyncRun(
            self.run_id, workspace_id, trigger, self.status, started_at, self.synced_at,
            started_at, self.checked, self.updated, self.unchanged, self.missing,
            self.graph_calls, error,
        )  # fmt: skip


def report_from_run(run: SyncRun) -> SyncReport:
    failures = [WabaFailure(**item) for item in json.loads(run.error or "[]")]
    return SyncReport(
        run.id, run.finished_at or run.started_at, run.checked, run.updated, run.unchanged,
        run.missing, run.graph_calls, failures,
    )  # fmt: skip


class Syncer:
    """Runs syncs: one at a time per workspace, in this process and across replicas."""

    def __init__(
        self,
        store: Store,
        session: aiohttp.ClientSession,
        graph_url: str,
        app_secret: str | None,
        cipher: TokenCipher,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        graph_timeout_s: float = 10.0,
        deadline_s: float = DEADLINE_S,
    ) -> None:
        self._store = store
        self._session = session
        self._graph_url = graph_url
        self._app_secret = app_secret
        self._cipher = cipher
        self._metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._graph_timeout_s = graph_timeout_s
        self.deadline_s = deadline_s
        self.lease_s = deadline_s * LEASE_PER_DEADLINE
        self._inflight: dict[tuple[str, float], asyncio.Future[SyncReport]] = {}

    @property
    def store(self) -> Store:
        return self._store

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _counter(
        self, metric: Counter, trigger: str, calls: list[int] | None
    ) -> Callable[[], None]:
        """Counts a call to a source in `metric` for `trigger` (and in `calls`)."""

        def counted() -> None:
            metric.labels(trigger).inc()
            if calls is not None:
                calls[0] += 1

        return counted

    def graph(self, trigger: str, calls: list[int] | None = None) -> GraphClient:
        """A Graph client whose calls are counted for `trigger` (and in `calls`)."""
        return GraphClient(
            self._session,
            self._graph_url,
            self._app_secret,
            on_call=self._counter(self._metrics.graph_calls, trigger, calls),
            timeout_s=self._graph_timeout_s,
        )

    def upstream(
        self, upstream: Upstream, trigger: str, calls: list[int] | None = None
    ) -> UpstreamClient:
        """A client of the workspace's upstream, counted like `graph`; DecryptionError when
        its stored token cannot be read."""
        return UpstreamClient(
            self._session,
            upstream.url,
            upstream.remote_workspace,
            self._cipher.decrypt(upstream.token_enc),
            on_call=self._counter(self._metrics.upstream_calls, trigger, calls),
            timeout_s=self._graph_timeout_s,
        )

    def token(self, channel: Channel) -> str:
        """The channel's Meta token (crypto.meta_token: NoMetaToken for webhooks only)."""
        return meta_token(self._cipher, channel.access_token_enc, channel.waba_id)

    async def source(
        self, workspace_id: str, trigger: str, calls: list[int] | None = None
    ) -> Source:
        """The workspace's source of truth: its upstream when it has one, else Meta."""
        upstream = await self._store.get_upstream(workspace_id)
        if upstream is None:
            return GraphSource(self._store, self.graph(trigger, calls), self._cipher, self._now_ms)
        return UpstreamSource(self._store, lambda: self.upstream(upstream, trigger, calls))

    async def sync(self, workspace_id: str, trigger: str, min_gap_s: float = 0.0) -> SyncReport:
        """Sync the workspace's pending templates; concurrent callers share one run.

        With `min_gap_s` (the API's, design 7.7), a sync sooner than that after the
        workspace's last one finished answers that one's result, calling Meta not at all.
        """
        key = (workspace_id, min_gap_s)  # an unlimited caller never gets an old result
        running = self._inflight.get(key)
        if running is None:
            running = asyncio.ensure_future(self._sync_once(workspace_id, trigger, min_gap_s))
            self._inflight[key] = running
            running.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(running)

    async def _sync_once(self, workspace_id: str, trigger: str, min_gap_s: float) -> SyncReport:
        pending = await self._store.pending_templates(workspace_id)
        if not pending:
            raise NoPendingTemplates(workspace_id)
        started = self._now_ms()
        lease_ms, min_gap_ms = int(self.lease_s * 1000), int(min_gap_s * 1000)
        claim = await self._store.claim_sync(workspace_id, trigger, started, lease_ms, min_gap_ms)
        if not claim.owner:
            return await self._wait_for(claim.run_id, workspace_id, trigger, min_gap_s)
        report = SyncReport(claim.run_id, started)
        try:
            async with asyncio.timeout(self.deadline_s):
                await self._run(workspace_id, trigger, pending, report)
        except TimeoutError:
            report.failures.append(WabaFailure("", None, "timeout", "sync exceeded its deadline"))
        finally:
            report.synced_at = self._now_ms()
            self._metrics.syncs.labels(trigger, report.status).inc()
            await asyncio.shield(
                self._store.finish_sync(report.as_run(workspace_id, trigger, started))
            )
        return report

    async def _wait_for(
        self, run_id: int, workspace_id: str, trigger: str, min_gap_s: float
    ) -> SyncReport:
        """Another caller runs (or ran) this workspace's sync: wait for it, share its result."""
        while True:
            run = await self._store.get_sync_run(run_id)
            if run is None or run.status != "running":
                break
            if run.lease_until <= self._now_ms():
                return await self._sync_once(workspace_id, trigger, min_gap_s)  # owner died
            await self._sleep(WAIT_POLL_S)
        if run is None:
            raise RuntimeError(f"sync run {run_id} vanished")
        return report_from_run(run)

    async def _run(
        self, workspace_id: str, trigger: str, pending: list[PendingTemplate], report: SyncReport
    ) -> None:
        calls = [0]
        source = await self.source(workspace_id, trigger, calls)
        try:
            async for part in source.pending(workspace_id, pending):
                if part.failure is not None:
                    report.failures.append(part.failure)
                    continue
                counts = await self._store.apply_remote(
                    workspace_id, part.waba_id, part.templates, self._now_ms(),
                    create=False, keep_decided=source.keeps_decided,
                )  # fmt: skip
                report.checked += part.asked
                report.updated += counts.updated
                report.unchanged += counts.unchanged
                report.missing += part.asked - len(part.templates)
        finally:
            report.graph_calls = calls[0]

    async def import_workspace(self, workspace_id: str) -> tuple[RemoteCounts, list[WabaFailure]]:
        """Upsert every template the workspace's source has (onboarding)."""
        total, failures = RemoteCounts(), []
        source = await self.source(workspace_id, "import")
        async for part in source.everything(workspace_id):
            if part.failure is not None:
                failures.append(part.failure)
                continue
            total += await self._store.apply_remote(
                workspace_id, part.waba_id, part.templates, self._now_ms(),
                create=True, keep_decided=source.keeps_decided,
            )  # fmt: skip
        return total, failures


def report_json(report: SyncReport) -> dict[str, Any]:
    """The `data` of the sync endpoint's answer."""
    return {
        "checked": report.checked,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "missing": report.missing,
        "synced_at": iso(report.synced_at),
    }
