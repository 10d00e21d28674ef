"""The polling fallback: due work, claims across replicas, backoff and the loop's life cycle.

Real stores on both backends, the Meta simulator over loopback, an injected clock (no
sleeping for grace periods or intervals).
"""

from __future__ import annotations

import asyncio
import calendar
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from service.config import Settings
from service.crypto import TokenCipher, generate_key
from service.events import QUALITY_FIELD, STATUS_FIELD, Change
from service.metrics import Metrics
from service.poller import MAX_BACKOFF_S, Poller, PollReport
from service.simulator import Simulator, make_templates
from service.storage import Store, TemplateFilter, open_store
from service.storage.poll_state import DUE_SQL, due_args
from service.storage.postgres import _numbered
from service.sync import Syncer

from .conftest import APP_SECRET, META_TOKEN, NOW_MS, Tenant, add_template, make_tenant, simulated
from .test_cli import Cli
from .waiting import GatedSimulator, eventually

GRACE_S = 300.0
INTERVAL_S = 1800.0
WABAS = [str(102290129340500 + i) for i in range(6)]


class Clock:
    """Wall time in seconds, moved by hand."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> float:
        return self.now_ms / 1000

    def at(self, offset_s: float) -> None:
        """Set the time to NOW_MS + offset_s."""
        self.now_ms = NOW_MS + int(offset_s * 1000)


@dataclass
class Replica:
    store: Store
    syncer: Syncer
    poller: Poller
    metrics: Metrics

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def sim() -> AsyncIterator[tuple[GatedSimulator, str]]:
    async with simulated(GatedSimulator(app_secret=APP_SECRET)) as running:
        yield running


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW_MS)


@pytest.fixture
def replica(
    store: Store,
    settings: Settings,
    sim: tuple[Simulator, str],
    session: aiohttp.ClientSession,
    clock: Clock,
) -> Callable[..., Replica]:
    """Builds a replica (Syncer + Poller) over `store` or another connection."""

    def build(on: Store | None = None, **options: Any) -> Replica:
        metrics = Metrics()
        cipher = TokenCipher(settings.encryption_keys)
        syncer = Syncer(on or store, session, sim[1], APP_SECRET, cipher, metrics, clock=clock)
        options = {"tick_s": 0.01, "grace_s": GRACE_S, "interval_s": INTERVAL_S, **options}
        poller = Poller(on or store, syncer, clock=clock, metrics=metrics, **options)
        return Replica(on or store, syncer, poller, metrics)

    return build


async def workspace(
    sim: Simulator, store: Store, settings: Settings, waba_id: str, count: int = 3, pending: int = 1
) -> tuple[Tenant, list[dict[str, Any]]]:
    """A workspace whose WABA has `count` templates at Meta and here, the last `pending` PENDING
    (here since NOW_MS, no webhook yet)."""
    tenant = await make_tenant(store, settings, waba_id)
    sim.add_waba(waba_id, META_TOKEN)
    templates = make_templates(waba_id, count, pending=pending)
    sim.add_templates(waba_id, templates)
    for template in templates:
        await add_template(store, tenant, template["id"], status=template["status"])
    return tenant, templates


async def webhook(store: Store, waba_id: str, change: Change, at_s: float) -> None:
    await store.record_delivery(b"{}", NOW_MS + int(at_s * 1000), [change], None)


def status_of(templates: list[Any], provider_id: str) -> tuple[str, str]:
    [found] = [t for t in templates if t.provider_id == provider_id]
    return found.status, found.status_source


async def listing(store: Store, tenant: Tenant) -> list[Any]:
    return (await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 100))[0]


async def test_workspace_whose_pending_templates_got_webhooks_costs_nothing(
    store: Store, settings: Settings, sim: tuple[Simulator, str], clock: Clock, replica: Any
) -> None:
    simulator, _ = sim
    tenant, templates = await workspace(simulator, store, settings, WABAS[0], pending=2)
    for template in templates[-2:]:
        change = Change(tenant.waba_id, QUALITY_FIELD, "GREEN", template["id"], None, None,
                        None, None, NOW_MS // 1000 + 5)  # fmt: skip
        await webhook(store, tenant.waba_id, change, at_s=5)
    poller = replica().poller
    for offset_s in (GRACE_S, 10 * INTERVAL_S):
        clock.at(offset_s)
        assert await poller.run_once() == PollReport()
    assert simulator.calls == []


async def test_template_made_pending_by_a_webhook_and_then_forgotten_is_due(
    store: Store, settings: Settings
) -> None:
    tenant = await make_tenant(store, settings, WABAS[0])
    await add_template(store, tenant, "77", status="REJECTED")
    change = Change(tenant.waba_id, STATUS_FIELD, "IN_APPEAL", "77", None, None, None, None,
                    NOW_MS // 1000 + 10)  # fmt: skip
    await webhook(store, tenant.waba_id, change, at_s=10)  # the verdict never comes
    args = (GRACE_S * 1000, INTERVAL_S * 1000, 10)
    assert await store.due_workspaces(NOW_MS + 10_000 + int(GRACE_S * 1000) - 1, *args) == []
    assert await store.due_workspaces(NOW_MS + 10_000 + int(GRACE_S * 1000), *args) == [
        tenant.workspace_id
    ]


async def test_forgotten_template_is_synced_once_after_the_grace_period(
    store: Store, settings: Settings, sim: tuple[Simulator, str], clock: Clock, replica: Any
) -> None:
    simulator, _ = sim
    tenant, templates = await workspace(simulator, store, settings, WABAS[0], pending=2)
    approved, still_pending = templates[-2]["id"], templates[-1]["id"]
    simulator.set_status(approved, "APPROVED")  # Meta's webhook for this never arrived
    one = replica()
    clock.at(GRACE_S - 0.001)
    assert (await one.poller.run_once()).due == 0 and simulator.calls == []
    clock.at(GRACE_S)
    report = await one.poller.run_once()
    assert (report.due, report.claimed, report.outcomes) == (1, 1, {"succeeded": 1})
    assert report.repaired == 1 and len(simulator.calls) == report.graph_calls == 1
    rows = await listing(store, tenant)
    assert status_of(rows, approved) == ("APPROVED", "sync")
    assert status_of(rows, still_pending)[0] == "PENDING"
    assert one.sample("template_sync_poll_repairs_total") == 1
    assert one.sample("template_sync_polls_total", outcome="succeeded") == 1
    assert one.sample("template_sync_graph_calls_total", reason="poller") == 1
    clock.at(GRACE_S + INTERVAL_S - 1)  # the other one is still pending: due again, not yet
    assert (await one.poller.run_once()).due == 0 and len(simulator.calls) == 1
    clock.at(GRACE_S + INTERVAL_S + 1)
    assert (await one.poller.run_once()).outcomes == {"succeeded": 1}
    assert len(simulator.calls) == 2
    state = await store.poll_state(tenant.workspace_id)
    assert state is not None and (state.failures, state.lease_owner) == (0, None)


async def test_a_pass_says_how_many_templates_wait_for_their_grace_period_and_until_when(
    store: Store, settings: Settings, sim: tuple[Simulator, str], clock: Clock, replica: Any
) -> None:
    simulator, _ = sim
    tenant, templates = await workspace(simulator, store, settings, WABAS[0], pending=2)
    other = await make_tenant(store, settings, WABAS[1])
    await add_template(store, other, "77", status="REJECTED")
    appeal = Change(other.waba_id, STATUS_FIELD, "IN_APPEAL", "77", None, None, None, None,
                    NOW_MS // 1000 + 10)  # fmt: skip
    await webhook(store, other.waba_id, appeal, at_s=10)  # pending (and awaiting) from 10 s on
    poller = replica().poller
    clock.at(60)
    first_due_ms = NOW_MS + int(GRACE_S * 1000)
    assert await poller.run_once() == PollReport(waiting=3, next_due_at=first_due_ms)
    for template in templates[-2:]:  # their webhooks came: nothing to wait for
        change = Change(tenant.waba_id, QUALITY_FIELD, "GREEN", template["id"], None, None,
                        None, None, NOW_MS // 1000 + 70)  # fmt: skip
        await webhook(store, tenant.waba_id, change, at_s=70)
    clock.at(80)
    assert await poller.run_once() == PollReport(waiting=1, next_due_at=first_due_ms + 10_000)
    clock.at(GRACE_S + 10)  # out of its grace period: due, no longer waiting
    report = await poller.run_once()
    assert (report.due, report.waiting, report.next_due_at) == (1, 0, None)


def test_poll_once_prints_the_waiting_templates_and_when_the_first_is_due(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("TEMPLATE_SYNC_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # the CLI sets logging up
    cli = Cli(database_url, generate_key())
    workspace_id = cli.workspace()
    cli.channel(workspace_id)
    before_s = time.time()
    cli.template(workspace_id, "1689556908129832")
    out = cli.ok("poll --once", TEMPLATE_SYNC_POLL_GRACE_S="600").stdout
    report = json.loads(out)
    assert (report["due"], report["waiting"]) == (0, 1), out
    due_s = calendar.timegm(time.strptime(report["next_due_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert int(before_s) + 600 <= due_s <= time.time() + 600


async def test_a_sync_by_anyone_counts_as_the_intervals_sync(
    store: Store, settings: Settings, sim: tuple[Simulator, str], clock: Clock, replica: Any
) -> None:
    simulator, _ = sim
    tenant, _ = await workspace(simulator, store, settings, WABAS[0])
    one = replica()
    clock.at(GRACE_S - 10)
    await one.syncer.sync(tenant.workspace_id, "api")
    clock.at(GRACE_S + INTERVAL_S - 11)
    assert (await one.poller.run_once()).due == 0
    assert not await store.claim_poll(
        tenant.workspace_id, "x", clock.now_ms, 1000, int(INTERVAL_S * 1000)
    )
    clock.at(GRACE_S + INTERVAL_S - 10)
    assert (await one.poller.run_once()).claimed == 1 and len(simulator.calls) == 2


async def test_two_replicas_sync_each_due_workspace_exactly_once(
    store: Store,
    database_url: str,
    settings: Settings,
    sim: tuple[GatedSimulator, str],
    clock: Clock,
    replica: Any,
) -> None:
    simulator, _ = sim
    pending_ids = []
    for waba_id in WABAS:
        _, templates = await workspace(simulator, store, settings, waba_id)
        pending_ids.append(templates[-1]["id"])
    other = await open_store(database_url)  # the second replica's own connection(s)
    try:
        replicas = [replica(concurrency=2), replica(other, concurrency=2)]
        clock.at(GRACE_S)
        simulator.shut()  # no sync ends before both replicas have claimed theirs
        passes = asyncio.gather(*(r.poller.run_once() for r in replicas))
        try:
            await eventually(lambda: simulator.waiting == 4)  # both replicas' 2 syncs in flight
        finally:
            simulator.open()
        reports = await passes
        again = await asyncio.gather(*(r.poller.run_once() for r in replicas))
    finally:
        await other.close()
    assert max(r.due for r in reports) == len(WABAS)  # the other may see some claimed
    assert sum(r.claimed for r in reports) == len(WABAS) and all(r.claimed for r in reports)
    # one GET of each workspace's pending template: every workspace synced once, by one replica
    assert sorted(call.object_id or "" for call in simulator.calls) == sorted(pending_ids)
    assert sum(r.sample("template_sync_syncs_total", trigger="poller", status="succeeded")
               for r in replicas) == len(WABAS)  # fmt: skip
    assert again == [PollReport(), PollReport()]


async def test_claim_is_a_lease_taken_over_once_expired(
    store: Store,
    database_url: str,
    settings: Settings,
    sim: tuple[Simulator, str],
    clock: Clock,
    replica: Any,
) -> None:
    simulator, _ = sim
    tenant, _ = await workspace(simulator, store, settings, WABAS[0])
    ws, lease_ms, interval_ms = tenant.workspace_id, 60_000, int(INTERVAL_S * 1000)
    other = await open_store(database_url)
    try:
        now = NOW_MS + int(GRACE_S * 1000)
        claims = await asyncio.gather(
            *(s.claim_poll(ws, f"replica-{i}", now, lease_ms, interval_ms)
              for i, s in enumerate([store, other] * 4))
        )  # fmt: skip
    finally:
        await other.close()
    assert claims.count(True) == 1
    winner = f"replica-{claims.index(True)}"
    # the winner died holding the claim: nobody polls until its lease expires...
    clock.now_ms = now + lease_ms - 1
    survivor = replica(owner="survivor")
    assert await survivor.poller.run_once() == PollReport() and simulator.calls == []
    # ...then the claim is taken over, although the interval has not passed
    clock.now_ms = now + lease_ms
    assert (await survivor.poller.run_once()).outcomes == {"succeeded": 1}
    assert len(simulator.calls) == 1
    assert not await store.record_poll(ws, winner, "succeeded", clock.now_ms, 0, 0, None)
    state = await store.poll_state(ws)
    assert state is not None and state.lease_owner is None and state.last_outcome == "succeeded"
    assert state.next_poll_at == clock.now_ms + interval_ms


async def test_a_failing_workspace_backs_off_and_shows_its_failures(
    store: Store, settings: Settings, sim: tuple[Simulator, str], clock: Clock, replica: Any
) -> None:
    simulator, _ = sim
    tenant, _ = await workspace(simulator, store, settings, WABAS[0])
    simulator.fail(WABAS[0], "190", sticky=True)
    poller = replica(jitter=lambda: 0.0).poller
    expected_gaps = [2 * INTERVAL_S, 4 * INTERVAL_S]
    at_s = GRACE_S
    for failures, gap_s in enumerate(expected_gaps, start=1):
        clock.at(at_s)
        assert (await poller.run_once()).outcomes == {"failed": 1}
        state = await store.poll_state(tenant.workspace_id)
        assert state is not None and state.failures == failures
        assert state.last_outcome == "failed" and "token_invalid (code 190)" in (
            state.last_error or ""
        )
        assert state.next_poll_at == clock.now_ms + int(gap_s * 1000)
        calls = len(simulator.calls)
        clock.at(at_s + gap_s - 1)  # past the interval, not past the backoff
        assert await poller.run_once() == PollReport() and len(simulator.calls) == calls
        at_s += gap_s
    simulator.clear_faults()
    clock.at(at_s)
    assert (await poller.run_once()).outcomes == {"succeeded": 1}
    state = await store.poll_state(tenant.workspace_id)
    assert state is not None and (state.failures, state.last_error) == (0, None)


async def test_backoff_is_capped_jittered_and_honours_meta_retry_after(
    store: Store, replica: Any
) -> None:
    assert replica(jitter=lambda: 0.0).poller.backoff_s(40) == MAX_BACKOFF_S
    assert replica(jitter=lambda: 1.0).poller.backoff_s(40) == pytest.approx(0.8 * MAX_BACKOFF_S)
    assert replica(jitter=lambda: 1.0).poller.backoff_s(1) == pytest.approx(1.6 * INTERVAL_S)
    assert replica(jitter=lambda: 0.0).poller.backoff_s(1, retry_after_s=9000) == 9000
    short = replica(interval_s=0, jitter=lambda: 0.0).poller
    assert short.backoff_s(1) == 120  # a minimum base when the interval is (near) zero


class Counted(Poller):
    """A poller that counts the passes it has finished."""

    def __init__(self, poller: Poller) -> None:
        self.__dict__.update(poller.__dict__)
        self.passes = 0

    async def run_once(self) -> PollReport:
        report = await super().run_once()
        self.passes += 1
        return report


async def test_running_polls_until_the_block_ends(
    store: Store, settings: Settings, sim: tuple[Simulator, str], clock: Clock, replica: Any
) -> None:
    simulator, _ = sim
    tenant, templates = await workspace(simulator, store, settings, WABAS[0])
    simulator.set_status(templates[-1]["id"], "APPROVED")
    clock.at(GRACE_S)
    poller = Counted(replica().poller)
    async with poller.running():
        await eventually(lambda: simulator.calls)
        more = poller.passes + 3  # the pass that synced, then two more: nothing is due any more
        await eventually(lambda: poller.passes >= more)
    assert len(simulator.calls) == 1
    assert status_of(await listing(store, tenant), templates[-1]["id"]) == ("APPROVED", "sync")
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("poller ")]


class Crash(BaseException):
    """Not an Exception: the loop does not survive it."""


class Scripted(Poller):
    """A poller whose passes do what the test says."""

    def __init__(self, poller: Poller, passes: Iterator[Callable[[], Any]]) -> None:
        self.__dict__.update(poller.__dict__)
        self.passes = passes
        self.count = 0

    async def run_once(self) -> PollReport:
        self.count += 1
        await next(self.passes, lambda: asyncio.sleep(0))()
        return PollReport()


async def test_a_failed_pass_is_logged_and_the_loop_goes_on(
    store: Store, replica: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def boom() -> Any:
        raise RuntimeError("store down")

    poller = Scripted(replica().poller, iter([boom]))
    async with poller.running():
        await eventually(lambda: poller.count >= 3)
    assert "polling pass failed" in caplog.text and "store down" in caplog.text


async def test_a_crash_of_the_loop_is_reraised_on_exit(store: Store, replica: Any) -> None:
    def crash() -> Any:
        raise Crash

    poller = Scripted(replica().poller, iter([crash]))
    with pytest.raises(Crash):
        async with poller.running():
            await eventually(lambda: poller.count >= 1)  # the pass has run, and crashed


async def test_a_stuck_pass_is_cancelled_after_the_stop_timeout(
    store: Store, replica: Any, caplog: pytest.LogCaptureFixture
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def stuck() -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # never set: only cancelling ends this pass
        except asyncio.CancelledError:
            cancelled.set()
            raise

    poller = Scripted(replica().poller, iter([stuck]))
    async with asyncio.timeout(2):
        async with poller.running(stop_timeout_s=0.05):
            await eventually(started.is_set)
    assert cancelled.is_set() and "cancelling it" in caplog.text


async def test_run_returns_when_stopped(store: Store, replica: Any) -> None:
    poller = Scripted(replica().poller, iter([]))
    task = asyncio.create_task(poller.run())
    await eventually(lambda: poller.count >= 2)  # pass after pass until...
    poller.stop()
    await asyncio.wait_for(task, timeout=1)  # ...it is stopped


async def test_due_query_reads_only_the_awaiting_templates_index(
    store: Store, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """EXPLAIN the due query: 3000 templates, 300 pending, 30 of them awaiting a webhook."""
    caplog.set_level(logging.WARNING)
    fill = [
        "INSERT INTO workspaces (id, name, created_at) SELECT 'w' || i, 'x', 0 FROM {s}",
        "INSERT INTO templates (workspace_id, waba_id, provider_id, name, language, status, "
        "status_source, status_updated_at, pending_since, last_webhook_at, created_at, "
        "updated_at) SELECT 'w' || (i % 47), 'waba' || (i % 47), 'p' || i, 'n', 'en', "
        "CASE WHEN i % 10 = 0 THEN 'PENDING' ELSE 'APPROVED' END, 'api', 0, i, "
        "CASE WHEN i % 100 = 0 THEN NULL ELSE i + 1 END, 0, 0 FROM {s}",
        "INSERT INTO sync_runs (workspace_id, trigger, status, started_at, lease_until) "
        "SELECT 'w' || (i % 50), 'api', 'succeeded', i, i FROM {s}",
        "ANALYZE",
    ]
    args = due_args(10**9, 0, 1000, 100)
    if database_url.startswith("sqlite"):
        series = "(WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {m}) "
        series += "SELECT i FROM n)"
        path = database_url.removeprefix("sqlite:///")

        def explain() -> str:
            with sqlite3.connect(path) as db:
                for m, sql in zip((49, 2999, 2999, 0), fill, strict=True):
                    db.execute(sql.format(s=series.format(m=m)))
                rows = db.execute("EXPLAIN QUERY PLAN " + DUE_SQL, args).fetchall()
            return "\n".join(row[3] for row in rows)

        plan = await asyncio.to_thread(explain)
        assert "SEARCH t USING INDEX templates_awaiting (awaiting_since<?)" in plan
        assert "SEARCH r USING INDEX sync_runs_workspace_started" in plan
        assert "SCAN t" not in plan and "SCAN r" not in plan, plan  # `SCAN a`: the few awaiting
    else:
        conn = await asyncpg.connect(database_url)
        try:
            for m, sql in zip((49, 2999, 19999, 0), fill, strict=True):  # runs: realistic
                await conn.execute(sql.format(s=f"generate_series(0, {m}) AS g(i)"))
            rows = await conn.fetch("EXPLAIN " + _numbered(DUE_SQL), *args)
        finally:
            await conn.close()
        plan = "\n".join(row[0] for row in rows)
        assert "templates_awaiting on templates" in plan, plan
        assert "using sync_runs_workspace_started on sync_runs" in plan, plan
        assert "Seq Scan on templates" not in plan and "Seq Scan on sync_runs" not in plan
    due = await store.due_workspaces(10**9, 0, 1000, 100)
    assert sorted(due) == sorted({f"w{i % 47}" for i in range(0, 3000, 100)})
