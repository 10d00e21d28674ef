"""Retention: old raw deliveries go, old dedupe keys are cleared, history and new data stay."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from service import meta_webhooks
from service.config import ConfigError, Settings
from service.events import STATUS_FIELD, Change
from service.retention import DAY_MS, Pruned, prune
from service.storage import Store, TemplateFilter

from .conftest import NOW_MS, WABA_ID, Tenant, start_server
from .service_process import run_cli, service_env
from .waiting import eventually

DAY_S = DAY_MS // 1000


def event(entry_time_s: int, status: str = "APPROVED") -> Change:
    return Change(WABA_ID, STATUS_FIELD, status, "42", "promo", "en", None, None, entry_time_s)


async def test_deliveries_older_than_the_retention_are_deleted_in_chunks(
    store: Store, settings: Settings, tenant: Tenant
) -> None:
    for age_days in (40, 35, 31, 29, 1):
        body = f"delivery of day -{age_days}".encode()
        await store.record_delivery(body, NOW_MS - age_days * DAY_MS, [], None)
    seen: list[int] = []
    pruned = await prune(store, settings, NOW_MS, lambda p: seen.append(p.deliveries), chunk=2)
    assert pruned == Pruned(deliveries=3, dedupe_keys=0) and seen == [2, 3]
    kept = await store.list_deliveries(None, 10)
    assert sorted((NOW_MS - d.received_at) // DAY_MS for d in kept) == [1, 29]


async def test_a_body_is_stored_once_within_the_retention_and_again_once_pruned(
    store: Store, settings: Settings, tenant: Tenant
) -> None:
    body = meta_webhooks.encode(meta_webhooks.delivery())
    first = await store.record_delivery(body, NOW_MS - 31 * DAY_MS, [], None)
    replay = await store.record_delivery(body, NOW_MS - 29 * DAY_MS, [], None)
    assert (replay.delivery_id, replay.outcome) == (first.delivery_id, "replayed")
    assert (await prune(store, settings, NOW_MS)).deliveries == 1  # by its first arrival
    again = await store.record_delivery(body, NOW_MS, [], None)
    assert again.outcome == "processed" and again.delivery_id != first.delivery_id
    [kept] = await store.list_deliveries(None, 10)
    assert (kept.id, kept.body, kept.received_at) == (again.delivery_id, body, NOW_MS)


async def test_dedupe_keys_are_cleared_after_the_window_and_history_stays(
    store: Store, settings: Settings, tenant: Tenant
) -> None:
    old, recent = event(1_000, "APPROVED"), event(2_000, "PAUSED")
    await store.record_delivery(b"{}", NOW_MS - 9 * DAY_MS, [old], None)
    await store.record_delivery(b"{}", NOW_MS - 6 * DAY_MS, [recent], None)
    assert (await prune(store, settings, NOW_MS)).dedupe_keys == 1
    assert (await store.record_delivery(b"{}", NOW_MS, [recent], None)).duplicate == 1
    # Meta no longer retries what it sent 9 days ago; were a copy to come, it is history,
    # not status.
    late = await store.record_delivery(b"{}", NOW_MS, [old], None)
    assert (late.duplicate, late.stale) == (0, 1)
    [template], _ = await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 10)
    history = await store.template_history(tenant.workspace_id, template.id)
    assert template.status == "PAUSED" and history is not None
    assert [(h.row.event, h.row.applied) for h in history] == [
        ("CREATED", True),  # the first delivery named it
        ("APPROVED", True),
        ("PAUSED", True),
        ("APPROVED", False),  # the late copy: history, not status
    ]


async def test_old_sync_runs_go_but_each_workspace_keeps_its_latest(
    store: Store, settings: Settings, tenant: Tenant
) -> None:
    other = await store.create_workspace("other", NOW_MS)
    runs = {}
    for workspace_id, age_days in ((tenant.workspace_id, 40), (tenant.workspace_id, 35),
                                   (other.id, 50), (tenant.workspace_id, 1)):  # fmt: skip
        claim = await store.claim_sync(workspace_id, "api", NOW_MS - age_days * DAY_MS, 60_000)
        runs[workspace_id, age_days] = claim.run_id
    assert (await prune(store, settings, NOW_MS)).sync_runs == 2
    gone = [await store.get_sync_run(runs[tenant.workspace_id, age]) for age in (40, 35)]
    assert gone == [None, None]
    latest = await store.last_sync_run(tenant.workspace_id)
    assert latest is not None and latest.id == runs[tenant.workspace_id, 1]
    only = await store.last_sync_run(other.id)  # 50 days old, but what the API shows
    assert only is not None and only.id == runs[other.id, 50]


def test_a_dedupe_window_under_seven_days_is_refused() -> None:
    with pytest.raises(ConfigError, match="TEMPLATE_SYNC_DEDUPE_DAYS must be between 7"):
        Settings.from_env({"TEMPLATE_SYNC_DEDUPE_DAYS": "6"}, dotenv=None)


async def test_serve_prunes_at_start(store: Store, settings: Settings, tenant: Tenant) -> None:
    await store.record_delivery(b"{}", NOW_MS - 400 * DAY_MS, [], None)  # long gone
    uv_server, task, _ = await start_server(settings)
    try:

        async def pruned() -> bool:
            return not await store.list_deliveries(None, 10)

        await eventually(pruned, message="the serving app did not prune a 400-day-old delivery")
    finally:
        uv_server.should_exit = True
        await task


async def test_prune_command_reports_progress_and_totals(
    store: Store, settings: Settings, tenant: Tenant, tmp_path: Path
) -> None:
    for n in range(3):
        await store.record_delivery(f"delivery {n}".encode(), NOW_MS - 400 * DAY_MS, [], None)
    code, out, err = await run_cli(service_env(settings), tmp_path, "prune")
    assert code == 0, err
    assert json.loads(out) == dataclasses.asdict(Pruned(deliveries=3, dedupe_keys=0))
    assert "pruned so far: 3 deliveries" in err
    assert await store.list_deliveries(None, 10) == []
