"""Upstream mode end to end (design section 14): two instances of this service.

"platform" stands for LancePilot: a template-sync on the Meta simulator, with a channel and
its Meta token. "edge" is the instance under test (each backend): the same WABA as a
webhooks-only channel, and the platform as its workspace's upstream. Webhooks reach each
one straight from Meta (here: signed deliveries); a webhook lost at the edge is repaired
through the platform's sync endpoint, by the edge's poller or its own sync endpoint. The
edge's poller runs on an injected clock, so grace periods pass without sleeping.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service.config import Settings
from service.crypto import TokenCipher, new_bearer_token
from service.events import STATUS_FIELD, Change
from service.graph import GraphTemplate
from service.metrics import Metrics
from service.poller import Poller
from service.simulator import Simulator, make_templates
from service.storage import Store, TemplateFilter
from service.sync import Syncer

from .conftest import (
    APP_SECRET,
    NOW_MS,
    WABA_ID,
    Server,
    Tenant,
    make_tenant,
    migrated_store,
    serving,
    simulated,
)
from .fake_upstream import (
    HUGE_BYTES,
    REMOTE,
    SYNC_FAILED,
    TOKEN,
    FakeUpstream,
    answer,
    failing,
    serving_fake,
)
from .test_poller import Clock
from .test_webhooks import status_body

GRACE_S = 300.0
INTERVAL_S = 1800.0


@dataclass
class Edge:
    """The instance under test: its store, tenant, and a Syncer and Poller on a clock."""

    store: Store
    tenant: Tenant
    syncer: Syncer
    poller: Poller
    metrics: Metrics
    clock: Clock

    def upstream_calls(self, reason: str = "poller") -> float:
        sample = self.metrics.registry.get_sample_value(
            "template_sync_upstream_calls_total", {"reason": reason}
        )
        return sample or 0.0

    async def status(self, provider_id: str) -> tuple[str, str]:
        found = await self.store.list_templates(
            self.tenant.workspace_id, TemplateFilter(provider_id=provider_id), 0, 1
        )
        template = found[0][0]
        return template.status, template.status_source


@dataclass
class Platform:
    server: Server
    store: Store
    tenant: Tenant
    sim: Simulator


@pytest.fixture
async def sim() -> AsyncIterator[tuple[Simulator, str]]:
    async with simulated(Simulator(app_secret=APP_SECRET), WABA_ID) as running:
        yield running


@pytest.fixture
async def platform(
    sim: tuple[Simulator, str], settings: Settings, tmp_path: Path
) -> AsyncIterator[Platform]:
    """The upstream, on the simulator: always SQLite (it stands for another product), and
    no minimum gap between API syncs, so every test's sync reaches Meta."""
    own = replace(
        settings, database_url=f"sqlite:///{tmp_path}/platform.db", graph_url=sim[1],
        data_dir=tmp_path / "platform-data", sync_min_gap_s=0.0,
    )  # fmt: skip
    async with migrated_store(own.database_url) as store:
        tenant = await make_tenant(store, own)
        async with serving(own) as server:
            yield Platform(server, store, tenant, sim[0])


@pytest.fixture
async def edge(
    store: Store, settings: Settings, platform: Platform, session: aiohttp.ClientSession
) -> Edge:
    """The instance under test: a webhooks-only channel, the platform as its upstream, the
    same templates as the platform (the last one PENDING since NOW_MS), no Meta at all."""
    tenant = await webhooks_only_tenant(store)
    cipher = TokenCipher(settings.encryption_keys)
    await store.set_upstream(
        tenant.workspace_id, platform.server.base_url, platform.tenant.workspace_id,
        cipher.encrypt(platform.tenant.token), NOW_MS,
    )  # fmt: skip
    templates = make_templates(WABA_ID, 3, pending=1)
    platform.sim.add_templates(WABA_ID, templates)
    remote = [GraphTemplate.from_graph(template) for template in templates]
    await platform.store.apply_remote(platform.tenant.workspace_id, WABA_ID, remote, 1, True)
    await store.apply_remote(tenant.workspace_id, WABA_ID, remote, NOW_MS, create=True)
    clock, metrics = Clock(NOW_MS), Metrics()
    syncer, poller = edge_loop(store, settings, session, metrics, clock)
    return Edge(store, tenant, syncer, poller, metrics, clock)


def edge_loop(
    store: Store, settings: Settings, session: aiohttp.ClientSession, metrics: Metrics,
    clock: Clock, **syncer_options: Any,
) -> tuple[Syncer, Poller]:  # fmt: skip
    """The edge's Syncer (no Meta: its Graph URL answers nothing) and Poller on `clock`."""
    cipher = TokenCipher(settings.encryption_keys)
    syncer = Syncer(
        store, session, settings.graph_url, APP_SECRET, cipher, metrics, clock=clock,
        **syncer_options,
    )  # fmt: skip
    poller = Poller(
        store, syncer, tick_s=0.01, grace_s=GRACE_S, interval_s=INTERVAL_S, clock=clock,
        metrics=metrics,
    )  # fmt: skip
    return syncer, poller


async def webhooks_only_tenant(store: Store) -> Tenant:
    workspace = await store.create_workspace("Edge", NOW_MS)
    await store.add_channel(workspace.id, WABA_ID, None, NOW_MS)
    new = new_bearer_token()
    await store.create_token(workspace.id, new.token_id, new.token_hash, "tests", NOW_MS)
    return Tenant(workspace.id, new.token, new.token_id, WABA_ID)


def pending_id(platform: Platform) -> str:
    [pending] = [t for t in platform.sim.templates(WABA_ID) if t["status"] == "PENDING"]
    return str(pending["id"])


async def meta_decides(platform: Platform, provider_id: str, *, webhook: bool) -> None:
    """Meta approves the template; with `webhook`, its delivery reaches the platform."""
    platform.sim.set_status(provider_id, "APPROVED")
    if webhook:
        body = status_body("APPROVED", provider_id, entry_time=NOW_MS // 1000 + 60)
        status, _, _ = await platform.server.deliver(body)
        assert status == 200


async def edge_webhook(edge: Edge, provider_id: str) -> None:
    """The same verdict's delivery reaching the edge (stored as its intake stores one)."""
    change = Change(WABA_ID, STATUS_FIELD, "APPROVED", provider_id, "template", "en_US",
                    None, None, NOW_MS // 1000 + 60)  # fmt: skip
    await edge.store.record_delivery(b"{}", NOW_MS + 60_000, [change], None)


# --- a lost webhook, repaired through the platform ------------------------------------


async def test_a_webhook_lost_only_here_is_repaired_from_the_platforms_list(
    edge: Edge, platform: Platform
) -> None:
    provider_id = pending_id(platform)
    await meta_decides(platform, provider_id, webhook=True)
    edge.clock.at(GRACE_S - 1)
    assert (await edge.poller.run_once()).due == 0  # inside the grace period: nothing
    edge.clock.at(GRACE_S)
    report = await edge.poller.run_once()
    assert (report.due, report.repaired, report.outcomes) == (1, 1, {"succeeded": 1})
    assert await edge.status(provider_id) == ("APPROVED", "sync")
    # The platform had nothing pending (its 404), so it did not call Meta; the edge made
    # exactly the seed's call and read one page of the list.
    assert edge.upstream_calls() == 2
    assert platform.sim.calls == []
    assert await platform.store.last_sync_run(platform.tenant.workspace_id) is None


async def test_a_webhook_lost_by_both_is_repaired_through_the_platforms_sync_with_meta(
    edge: Edge, platform: Platform
) -> None:
    provider_id = pending_id(platform)
    await meta_decides(platform, provider_id, webhook=False)
    edge.clock.at(GRACE_S)
    report = await edge.poller.run_once()
    assert (report.repaired, report.outcomes) == (1, {"succeeded": 1})
    assert await edge.status(provider_id) == ("APPROVED", "sync")
    run = await platform.store.last_sync_run(platform.tenant.workspace_id)
    assert run is not None and (run.trigger, run.status, run.updated) == ("api", "succeeded", 1)
    assert len(platform.sim.calls) == 1  # the platform's one Graph call for the template


async def test_a_workspace_whose_webhooks_arrived_costs_zero_upstream_calls(
    edge: Edge, platform: Platform
) -> None:
    provider_id = pending_id(platform)
    await meta_decides(platform, provider_id, webhook=True)
    await edge_webhook(edge, provider_id)
    for offset_s in (GRACE_S, 10 * INTERVAL_S):
        edge.clock.at(offset_s)
        assert (await edge.poller.run_once()).due == 0
    assert await edge.status(provider_id) == ("APPROVED", "webhook")
    assert edge.upstream_calls() == 0
    assert await platform.store.last_sync_run(platform.tenant.workspace_id) is None


async def test_an_upstream_that_has_no_verdict_yet_changes_nothing(
    edge: Edge, platform: Platform
) -> None:
    provider_id = pending_id(platform)
    edge.clock.at(GRACE_S)
    report = await edge.poller.run_once()
    assert (report.repaired, report.outcomes) == (0, {"succeeded": 1})
    assert await edge.status(provider_id) == ("PENDING", "sync")
    poll = await edge.store.poll_state(edge.tenant.workspace_id)
    assert poll is not None and poll.failures == 0


async def test_the_upstreams_stale_view_never_undoes_a_verdict_here(
    edge: Edge, platform: Platform
) -> None:
    """The platform still says PENDING; a webhook brought APPROVED here meanwhile."""
    provider_id = pending_id(platform)
    await edge_webhook(edge, provider_id)
    stale = [t for t in platform.sim.templates(WABA_ID) if t["id"] == provider_id]
    counts = await edge.store.apply_remote(
        edge.tenant.workspace_id, WABA_ID, [GraphTemplate.from_graph(stale[0])],
        NOW_MS + 120_000, create=False, keep_decided=True,
    )  # fmt: skip
    assert (counts.updated, counts.unchanged) == (0, 1)
    assert await edge.status(provider_id) == ("APPROVED", "webhook")


# --- the sync endpoint, import and writes on the edge ---------------------------------


async def test_the_edges_sync_endpoint_answers_through_the_platform(
    edge: Edge, platform: Platform, settings: Settings
) -> None:
    provider_id = pending_id(platform)
    await meta_decides(platform, provider_id, webhook=False)
    async with serving(settings) as server:
        path = f"/api/v3/workspaces/{edge.tenant.workspace_id}/templates/sync"
        headers = {"Authorization": f"Bearer {edge.tenant.token}"}
        status, body, _ = await server.request("POST", path, headers=headers)
        assert status == 200, body
        assert body["message"] == "Templates synced successfully"
        assert {k: body["data"][k] for k in ("checked", "updated", "missing")} == {
            "checked": 1, "updated": 1, "missing": 0,
        }  # fmt: skip
        status, body, _ = await server.request("POST", path, headers=headers)
        assert (status, body["message"]) == (404, "No pending templates found")


async def test_import_reads_the_platforms_templates_under_their_waba(
    store: Store, settings: Settings, platform: Platform, session: aiohttp.ClientSession
) -> None:
    templates = make_templates(WABA_ID, 120, pending=7)  # two pages of the platform's list
    remote = [GraphTemplate.from_graph(template) for template in templates]
    await platform.store.apply_remote(platform.tenant.workspace_id, WABA_ID, remote, 1, True)
    tenant = await webhooks_only_tenant(store)
    cipher = TokenCipher(settings.encryption_keys)
    await store.set_upstream(
        tenant.workspace_id, platform.server.base_url + "/", platform.tenant.workspace_id,
        cipher.encrypt(platform.tenant.token), NOW_MS,
    )  # fmt: skip
    syncer = Syncer(store, session, settings.graph_url, APP_SECRET, cipher, Metrics())
    counts, failures = await syncer.import_workspace(tenant.workspace_id)
    assert failures == []
    assert dataclasses.astuple(counts) == (120, 0, 0)
    here, total = await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 200)
    assert total == 120
    assert {(t.provider_id, t.waba_id, t.status) for t in here} == {
        (t["id"], WABA_ID, t["status"]) for t in templates
    }


async def test_a_webhooks_only_channel_routes_webhooks_and_takes_no_template_writes(
    edge: Edge, platform: Platform, settings: Settings
) -> None:
    provider_id = pending_id(platform)
    draft = {"name": "welcome", "language": "en_US", "category": "UTILITY",
             "components": [{"type": "BODY", "text": "Hi"}]}  # fmt: skip
    async with serving(settings) as server:
        body = status_body("APPROVED", provider_id, entry_time=NOW_MS // 1000 + 60)
        assert (await server.deliver(body))[0] == 200
        path = f"/api/v3/workspaces/{edge.tenant.workspace_id}/templates"
        headers = {"Authorization": f"Bearer {edge.tenant.token}"}
        status, answer, _ = await server.request("POST", path, headers=headers, json=draft)
    assert await edge.status(provider_id) == ("APPROVED", "webhook")
    assert status == 422, answer
    assert "webhooks only" in answer["errors"]["waba_id"][0]


# --- an upstream that fails --------------------------------------------------------------


@pytest.mark.parametrize(
    ("break_it", "kind"),
    [
        ("token", "upstream_unauthorized"),
        ("workspace", "upstream_not_found"),
        ("port", "upstream_network"),
    ],
)
async def test_a_misconfigured_upstream_is_a_failed_sync_and_a_backoff(
    edge: Edge, platform: Platform, settings: Settings, break_it: str, kind: str
) -> None:
    upstream = await edge.store.get_upstream(edge.tenant.workspace_id)
    assert upstream is not None
    cipher = TokenCipher(settings.encryption_keys)
    changes: dict[str, Any] = {
        "token": {"token_enc": cipher.encrypt("not-the-token")},
        "workspace": {"remote_workspace": "9ca711b1-14ca-4bd5-9457-751db9c052ac"},
        "port": {"url": "http://127.0.0.1:9"},
    }[break_it]
    broken = dataclasses.replace(upstream, **changes)
    await edge.store.set_upstream(
        broken.workspace_id, broken.url, broken.remote_workspace, broken.token_enc, NOW_MS
    )
    edge.clock.at(GRACE_S)
    report = await edge.poller.run_once()
    assert report.outcomes == {"failed": 1}
    poll = await edge.store.poll_state(edge.tenant.workspace_id)
    assert poll is not None and poll.failures == 1 and kind in (poll.last_error or "")
    assert poll.next_poll_at - edge.clock.now_ms >= INTERVAL_S * 1000  # backed off
    assert await edge.status(pending_id(platform)) == ("PENDING", "sync")
    async with serving(settings) as server:
        path = f"/api/v3/workspaces/{edge.tenant.workspace_id}/templates/sync"
        headers = {"Authorization": f"Bearer {edge.tenant.token}"}
        status, body, _ = await server.request("POST", path, headers=headers)
    assert (status, body["message"]) == (500, "Failed to sync the templates")
    assert body["error"]["kind"] == kind
    assert platform.tenant.token not in str(body)


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("404", "upstream_not_found"),
        ("500", "upstream_server"),
        ("garbage", "upstream_invalid_response"),
        ("50 MB", "upstream_invalid_response"),
        ("nothing", "timeout"),
    ],
)
async def test_a_failing_upstream_costs_a_bounded_failure_and_a_backoff(
    edge: Edge, settings: Settings, session: aiohttp.ClientSession, fault: str, kind: str
) -> None:
    async with serving_fake() as fake:
        await fails_and_backs_off(edge, fake, settings, session, fault, kind)


async def fails_and_backs_off(
    edge: Edge, fake: FakeUpstream, settings: Settings, session: aiohttp.ClientSession,
    fault: str, kind: str,
) -> None:  # fmt: skip
    fake.sticky = {
        "404": failing("Workspace not found"),
        "500": answer(500, SYNC_FAILED),
        "garbage": answer(200, b"<html>not JSON</html>"),
        "50 MB": fake.stream,
        "nothing": fake.hang,
    }[fault]
    cipher = TokenCipher(settings.encryption_keys)
    await edge.store.set_upstream(
        edge.tenant.workspace_id, fake.base_url, REMOTE, cipher.encrypt(TOKEN), NOW_MS
    )
    _, poller = edge_loop(edge.store, settings, session, edge.metrics, edge.clock, deadline_s=2.0)
    edge.clock.at(GRACE_S)
    report = await asyncio.wait_for(poller.run_once(), timeout=10)
    assert report.outcomes == {"failed": 1}
    poll = await edge.store.poll_state(edge.tenant.workspace_id)
    assert poll is not None and poll.failures == 1 and kind in (poll.last_error or "")
    assert poll.next_poll_at - edge.clock.now_ms >= INTERVAL_S * 1000
    assert len(fake.seen) <= 3  # one sync, and at most a read with its retries
    if fault == "50 MB":
        assert fake.streamed < HUGE_BYTES / 2
    assert (await edge.store.pending_templates(edge.tenant.workspace_id)) != []
