"""The sync use case (design section 7), shared by the endpoint, the CLI and the poller.

Strategy per WABA, in Graph calls: one `GET /{template_id}` per pending template costs P
calls; paging the whole list costs ceil(N / page_limit) calls for N templates (N estimated
from the templates stored here, a lower bound when Meta has templates not registered here).
The sync reads template by template when P is at most that page count, the list otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from . import throttle
from .crypto import DecryptionError, TokenCipher
from .graph import GraphClient, GraphTemplate
from .graph_errors import GraphError, ThrottledError
from .metrics import Metrics
from .storage import Channel, PendingTemplate, RemoteCounts, Store, SyncRun
from .times import iso

logger = logging.getLogger(__name__)

DEADLINE_S = 90.0  # a whole sync; every Graph call also has its own timeout
# A claimed sync that others wait for is taken over once its lease (deadline + a third)
# has expired: its owner died.
LEASE_PER_DEADLINE = 4 / 3
WAIT_POLL_S = 0.2
NOT_FOUND = (100, 33)  # Graph: "object does not exist"


class NoPendingTemplates(Exception):
    """The workspace has no PENDING or IN_APPEAL template: nothing to sync."""


@dataclass(frozen=True)
class WabaFailure:
    waba_id: str
    code: int | None
    kind: str
    detail: str
    fbtrace_id: str | None = None
    retry_after_s: float | None = None


@dataclass
class SyncReport:
    run_id: int
    synced_at: int
    checked: int = 0
    updated: int = 0
    unchanged: int = 0
    missing: int = 0
    graph_calls: int = 0
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

    def graph(self, trigger: str, calls: list[int] | None = None) -> GraphClient:
        """A Graph client whose calls are counted for `trigger` (and in `calls`)."""

        def counted() -> None:
            self._metrics.graph_calls.labels(trigger).inc()
            if calls is not None:
                calls[0] += 1

        return GraphClient(
            self._session,
            self._graph_url,
            self._app_secret,
            on_call=counted,
            timeout_s=self._graph_timeout_s,
        )

    def token(self, channel: Channel) -> str:
        return self._cipher.decrypt(channel.access_token_enc)

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
        by_waba: dict[str, list[PendingTemplate]] = defaultdict(list)
        for template in pending:
            by_waba[template.waba_id].append(template)
        channels = {c.waba_id: c for c in await self._store.list_channels(workspace_id)}
        counts = await self._store.template_counts(workspace_id)
        calls = [0]
        graph = self.graph(trigger, calls)
        for waba_id, items in by_waba.items():
            failure = await self._sync_waba(
                graph, workspace_id, channels.get(waba_id), items, counts.get(waba_id, 0), report
            )
            if failure:
                report.failures.append(failure)
            report.graph_calls = calls[0]

    async def _sync_waba(
        self,
        graph: GraphClient,
        workspace_id: str,
        channel: Channel | None,
        items: list[PendingTemplate],
        stored: int,
        report: SyncReport,
    ) -> WabaFailure | None:
        waba_id = items[0].waba_id
        if blocked := await self._blocked(waba_id):
            return blocked
        if channel is None:
            return WabaFailure(waba_id, None, "config", "no channel for this WABA")
        try:
            remote = await self.fetch_pending(graph, waba_id, self.token(channel), items, stored)
        except DecryptionError as error:
            return WabaFailure(waba_id, None, "config", str(error))
        except GraphError as error:
            return await self._graph_failure(waba_id, error)
        now = self._now_ms()
        counts = await self._store.apply_remote(workspace_id, waba_id, remote, now, create=False)
        report.checked += len(items)
        report.updated += counts.updated
        report.unchanged += counts.unchanged
        report.missing += len(items) - len(remote)
        return None

    async def fetch_pending(
        self,
        graph: GraphClient,
        waba_id: str,
        token: str,
        items: list[PendingTemplate],
        stored: int,
    ) -> list[GraphTemplate]:
        """Meta's state of the pending templates, by the cheaper strategy (module doc)."""
        wanted = {item.provider_id for item in items}
        if read_one_by_one(len(wanted), stored, graph.page_limit):
            found = [await _get_or_none(graph, provider_id, token) for provider_id in wanted]
            return [template for template in found if template is not None]
        return [t for t in await graph.list_templates(waba_id, token) if t.id in wanted]

    async def import_workspace(self, workspace_id: str) -> tuple[RemoteCounts, list[WabaFailure]]:
        """Upsert every template Meta lists for the workspace's WABAs (onboarding)."""
        total, failures = RemoteCounts(), []
        graph = self.graph("import")
        for channel in await self._store.list_channels(workspace_id):
            if blocked := await self._blocked(channel.waba_id):
                failures.append(blocked)  # Meta's window holds for every caller
                continue
            try:
                remote = await graph.list_templates(channel.waba_id, self.token(channel))
            except DecryptionError as error:
                failures.append(WabaFailure(channel.waba_id, None, "config", str(error)))
                continue
            except GraphError as error:
                failures.append(await self._graph_failure(channel.waba_id, error))
                continue
            counts = await self._store.apply_remote(
                workspace_id, channel.waba_id, remote, self._now_ms(), create=True
            )
            total += counts
        return total, failures

    async def _blocked(self, waba_id: str) -> WabaFailure | None:
        """The failure of a WABA that Meta's stored block keeps Graph calls away from."""
        now = self._now_ms()
        block = await throttle.blocked(self._store, waba_id, now)
        if block is None:
            return None
        wait_s = throttle.remaining_s(block, now)
        return WabaFailure(waba_id, block.code, "throttled", "Meta rate limit", None, wait_s)

    async def _graph_failure(self, waba_id: str, error: GraphError) -> WabaFailure:
        logger.warning(
            "sync of WABA %s failed: %s, Graph code %s, fbtrace_id %s",
            waba_id, error.kind, error.code, error.fbtrace_id,
        )  # fmt: skip
        retry_after_s = None
        if isinstance(error, ThrottledError):
            await throttle.record(self._store, waba_id, error, self._now_ms())
            retry_after_s = error.regain_access_s
        return WabaFailure(
            waba_id, error.code, error.kind, error.message, error.fbtrace_id, retry_after_s
        )


def read_one_by_one(pending: int, stored: int, page_limit: int) -> bool:
    """True when a GET per pending template costs no more calls than paging the list."""
    return pending <= math.ceil(max(stored, 1) / page_limit)


async def _get_or_none(graph: GraphClient, template_id: str, token: str) -> GraphTemplate | None:
    try:
        return await graph.get_template(template_id, token)
    except GraphError as error:
        if (error.code, error.subcode) == NOT_FOUND:
            return None  # deleted at Meta: counted as missing
        raise


def report_json(report: SyncReport) -> dict[str, Any]:
    """The `data` of the sync endpoint's answer."""
    return {
        "checked": report.checked,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "missing": report.missing,
        "synced_at": iso(report.synced_at),
    }
