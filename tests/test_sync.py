"""The seed's sync endpoint, the Syncer and the CLI, against the Meta simulator over loopback."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

from service import meta_webhooks
from service.config import Settings
from service.crypto import TokenCipher
from service.graph import GraphTemplate
from service.metrics import Metrics
from service.poller import Poller
from service.simulator import Simulator, make_templates
from service.storage import Store, Throttle, open_store
from service.sync import Syncer
from service.times import now_ms
from service.webhooks import parse_delivery

from . import raw_sql
from .conftest import (
    APP_SECRET,
    META_TOKEN,
    WABA_ID,
    Server,
    Tenant,
    add_template,
    make_tenant,
    serving,
    simulated,
)
from .service_process import run_cli
from .waiting import eventually

OTHER_WABA = "102290129340400"


@pytest.fixture
async def sim() -> AsyncIterator[tuple[Simulator, str]]:
    async with simulated(Simulator(app_secret=APP_SECRET), WABA_ID, OTHER_WABA) as running:
        yield running


@pytest.fixture
def settings(settings: Settings, sim: tuple[Simulator, str]) -> Settings:
    return replace(settings, graph_url=sim[1])


async def seed(
    sim: Simulator, store: Store, tenant: Tenant, count: int, pending: int, waba_id: str = WABA_ID
) -> list[dict[str, Any]]:
    """`count` templates at Meta and here (imported), the last `pending` of them PENDING."""
    templates = make_templates(waba_id, count, pending=pending)
    sim.add_templates(waba_id, templates)
    remote = [GraphTemplate.from_graph(t) for t in templates]
    await store.apply_remote(tenant.workspace_id, waba_id, remote, 1, create=True)
    return templates


def graph_calls(sim: Simulator) -> int:
    return len(sim.calls)


async def sync(server: Server, tenant: Tenant) -> tuple[int, Any, Any]:
    path = f"/api/v3/workspaces/{tenant.workspace_id}/templates/sync"
    headers = {"Authorization": f"Bearer {tenant.token}"}
    return await server.request("POST", path, headers=headers)


async def test_seed_python_example_after_paging_through_250_templates(
    server: Server, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    simulator, _ = sim
    templates = await seed(simulator, store, tenant, 250, pending=30)
    for template in templates[-30:-10]:
        simulator.set_status(template["id"], "APPROVED")
    for template in templates[-10:-5]:
        simulator.set_status(template["id"], "REJECTED", rejected_reason="INVALID_FORMAT")

    def sync_templates(workspace_id: str, api_token: str) -> Any:  # the seed's example
        url = f"{server.base_url}/api/v3/workspaces/{workspace_id}/templates/sync"
        headers = {"Authorization": f"Bearer {api_token}"}
        response = requests.post(url, headers=headers, timeout=30)
        return response.json()

    answer = await asyncio.to_thread(sync_templates, tenant.workspace_id, tenant.token)
    assert answer["success"] is True and answer["message"] == "Templates synced successfully"
    assert {k: v for k, v in answer["data"].items() if k != "synced_at"} == {
        "checked": 30, "updated": 25, "unchanged": 5, "missing": 0,
    }  # fmt: skip
    assert graph_calls(simulator) == 3  # 250 templates at limit 100: every page, no more
    _, listing, _ = await server.api(tenant, "/templates", params={"status": "REJECTED"})
    assert listing["meta"]["total"] == 5
    rejected = listing["data"][0]
    assert (rejected["rejected_reason"], rejected["status_source"]) == ("INVALID_FORMAT", "sync")
    assert rejected["last_synced_at"] is not None
    history = (await server.api(tenant, f"/templates/{rejected['id']}/history"))[1]["data"]
    assert (history[-1]["source"], history[-1]["old_status"], history[-1]["new_status"]) == (
        "sync", "PENDING", "REJECTED",
    )  # fmt: skip


async def test_no_pending_templates_is_the_seeds_404(
    server: Server, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    await add_template(store, tenant, "1", status="APPROVED")
    status, body, _ = await sync(server, tenant)
    assert (status, body) == (404, {"success": False, "message": "No pending templates found"})
    assert graph_calls(sim[0]) == 0


async def test_one_pending_template_costs_one_call(
    server: Server, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    simulator, _ = sim
    templates = await seed(simulator, store, tenant, 1000, pending=1)
    simulator.set_status(templates[-1]["id"], "APPROVED")
    status, body, _ = await sync(server, tenant)
    assert status == 200 and body["data"]["updated"] == 1
    assert graph_calls(simulator) == 1


@pytest.mark.parametrize(("count", "pending"), [(1000, 1), (250, 30)])
async def test_template_deleted_at_meta_is_missing(
    server: Server,
    store: Store,
    tenant: Tenant,
    sim: tuple[Simulator, str],
    count: int,
    pending: int,
) -> None:
    await seed(sim[0], store, tenant, count, pending=pending)
    await add_template(store, tenant, "999999999")  # pending here, unknown at Meta
    status, body, _ = await sync(server, tenant)
    assert status == 200 and body["data"]["missing"] == 1
    assert body["data"]["checked"] == pending + 1


@pytest.mark.parametrize(
    ("kind", "code", "expected_kind", "options"),
    [
        ("190", 190, "token_invalid", {}),
        ("malformed", None, "invalid_response", {}),
        (
            "error",
            10,
            "permission",
            {"code": 10, "message": "Application does not have permission"},
        ),
        ("error", 2, "transient", {"code": 2, "is_transient": True}),
        ("5xx", None, "transient", {"http_status": 503}),
        ("error", 131059, "other", {"code": 131059, "message": "Invalid cursor"}),
    ],
)
async def test_graph_failures_answer_the_seeds_500_with_detail(
    server: Server,
    store: Store,
    tenant: Tenant,
    sim: tuple[Simulator, str],
    kind: str,
    code: int | None,
    expected_kind: str,
    options: dict[str, Any],
) -> None:
    simulator, _ = sim
    await seed(simulator, store, tenant, 250, pending=3)
    simulator.fail(WABA_ID, kind, sticky=True, **options)
    status, body, _ = await sync(server, tenant)
    assert status == 500
    assert (body["success"], body["message"]) == (False, "Failed to sync the templates")
    assert body["error"]["waba_id"] == WABA_ID and body["error"]["code"] == code
    assert body["error"]["kind"] == expected_kind and META_TOKEN not in json.dumps(body)
    _, listing, _ = await server.api(tenant, "/templates", params={"status": "PENDING"})
    assert listing["meta"]["total"] == 3  # nothing stored was lost or changed


async def test_transient_5xx_is_retried_then_succeeds(
    server: Server, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    simulator, _ = sim
    await seed(simulator, store, tenant, 1000, pending=1)
    simulator.fail(WABA_ID, "5xx", times=1)
    status, _, _ = await sync(server, tenant)
    assert status == 200 and graph_calls(simulator) == 2


async def test_throttling_is_respected_across_a_restart(
    settings: Settings, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    simulator, _ = sim
    await seed(simulator, store, tenant, 1000, pending=1)
    simulator.fail(WABA_ID, "80008", regain_min=7)
    settings = replace(settings, sync_min_gap_s=0)  # the stored throttle alone holds Meta off
    for _restart in range(2):  # the second server is a restarted process on the same store
        async with serving(settings) as server:
            status, body, headers = await sync(server, tenant)
        assert status == 500 and body["error"]["kind"] == "throttled"
        assert 400 <= int(headers["Retry-After"]) <= 420
        assert graph_calls(simulator) == 1  # the restarted process did not call Meta again


async def test_partial_failure_keeps_the_wabas_that_succeeded(
    server: Server, store: Store, settings: Settings, sim: tuple[Simulator, str]
) -> None:
    simulator, _ = sim
    tenant = await make_tenant(store, settings)
    await store.add_channel(tenant.workspace_id, OTHER_WABA, TokenCipher(
        settings.encryption_keys).encrypt(META_TOKEN), 1)  # fmt: skip
    good = await seed(simulator, store, tenant, 5, pending=1)
    await seed(simulator, store, tenant, 5, pending=1, waba_id=OTHER_WABA)
    simulator.set_status(good[-1]["id"], "APPROVED")
    simulator.fail(OTHER_WABA, "190", sticky=True)
    status, body, _ = await sync(server, tenant)
    assert status == 500 and body["error"]["waba_id"] == OTHER_WABA
    assert body["data"]["updated"] == 1
    _, listing, _ = await server.api(tenant, "/templates", params={"provider_id": good[-1]["id"]})
    assert listing["data"][0]["status"] == "APPROVED"


async def test_concurrent_requests_share_one_sync(
    server: Server, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    simulator, _ = sim
    templates = await seed(simulator, store, tenant, 1000, pending=2)
    simulator.set_status(templates[-1]["id"], "APPROVED")
    simulator.fail(None, "slow", delay_s=0.3, times=2)
    answers = await asyncio.gather(*(sync(server, tenant) for _ in range(10)))
    assert {status for status, _, _ in answers} == {200}
    assert len({json.dumps(body) for _, body, _ in answers}) == 1
    assert graph_calls(simulator) == 2  # one sync: one GET per pending template
    _, last, _ = await server.api(tenant, "/templates/sync")
    assert last["data"]["id"] == 1 and last["data"]["status"] == "succeeded"


async def test_two_processes_share_one_sync_through_the_store(
    settings: Settings, database_url: str, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    simulator, _ = sim
    templates = await seed(simulator, store, tenant, 1000, pending=1)
    simulator.set_status(templates[-1]["id"], "APPROVED")
    simulator.fail(None, "slow", delay_s=0.5, times=1)
    other_store = await open_store(database_url)  # a second replica's connection
    try:
        async with aiohttp.ClientSession() as session:
            syncers = [
                Syncer(s, session, settings.graph_url, APP_SECRET,
                       TokenCipher(settings.encryption_keys), Metrics())
                for s in (store, other_store)
            ]  # fmt: skip
            first = asyncio.create_task(syncers[0].sync(tenant.workspace_id, "api"))
            await asyncio.sleep(0.1)
            second = await syncers[1].sync(tenant.workspace_id, "poller")
            assert await first == second and second.updated == 1
    finally:
        await other_store.close()
    assert graph_calls(simulator) == 1


async def test_every_graph_call_has_a_deadline(
    settings: Settings, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    simulator, _ = sim
    await seed(simulator, store, tenant, 1000, pending=1)
    simulator.fail(None, "slow", delay_s=5, sticky=True)
    async with aiohttp.ClientSession() as session:
        syncer = Syncer(store, session, settings.graph_url, APP_SECRET,
                        TokenCipher(settings.encryption_keys), Metrics(),
                        graph_timeout_s=0.2, sleep=lambda _: asyncio.sleep(0))  # fmt: skip
        report = await asyncio.wait_for(syncer.sync(tenant.workspace_id, "api"), timeout=5)
    assert [f.kind for f in report.failures] == ["network"]
    run = await store.last_sync_run(tenant.workspace_id)
    assert run is not None and run.status == "failed" and "network" in (run.error or "")


async def test_wrong_app_secret_fails_the_appsecret_proof(
    settings: Settings, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    simulator, _ = sim
    await seed(simulator, store, tenant, 1000, pending=1)
    async with aiohttp.ClientSession() as session:
        cipher = TokenCipher(settings.encryption_keys)
        wrong = Syncer(store, session, settings.graph_url, "not-the-secret", cipher, Metrics())
        report = await wrong.sync(tenant.workspace_id, "api")
        assert report.failures and report.failures[0].code == 100
        right = Syncer(store, session, settings.graph_url, APP_SECRET, cipher, Metrics())
        assert (await right.sync(tenant.workspace_id, "api")).failures == []


async def test_no_token_in_any_log_line(
    settings: Settings,
    store: Store,
    tenant: Tenant,
    sim: tuple[Simulator, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    simulator, _ = sim
    await seed(simulator, store, tenant, 250, pending=3)
    async with serving(replace(settings, sync_min_gap_s=0)) as server:  # both syncs call Meta
        await sync(server, tenant)
        simulator.fail(WABA_ID, "190")
        await sync(server, tenant)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "sync of WABA" in text and "190" in text
    assert META_TOKEN not in text and "access_token=" not in text and APP_SECRET not in text


async def test_a_loop_of_api_syncs_costs_one_syncs_graph_calls(
    settings: Settings, server: Server, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    """Design 7.7: 50 API syncs in a row made 100 Graph calls in 0.8 s; now one sync's two."""
    simulator, _ = sim
    templates = await seed(simulator, store, tenant, 1000, pending=2)
    simulator.set_status(templates[-1]["id"], "APPROVED")
    answers = [await sync(server, tenant) for _ in range(25)]
    async with serving(settings) as replica:  # the previous sync is in the store, shared
        answers += [await sync(replica, tenant) for _ in range(25)]
    assert graph_calls(simulator) == 2  # one GET per pending template, once
    assert answers[0][0] == 200 and answers[0][1]["data"]["updated"] == 1
    assert {json.dumps(body) for _, body, _ in answers} == {json.dumps(answers[0][1])}
    assert {status for status, _, _ in answers} == {200}
    _, last, _ = await server.api(tenant, "/templates/sync")
    assert last["data"]["id"] == 1  # one run recorded: the others answered with it


async def test_an_api_sync_after_the_gap_calls_meta_again(
    settings: Settings, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    simulator, _ = sim
    templates = await seed(simulator, store, tenant, 1000, pending=2)
    async with serving(replace(settings, sync_min_gap_s=0.5)) as server:
        status, first, _ = await sync(server, tenant)
        assert (status, first["data"]["updated"], graph_calls(simulator)) == (200, 0, 2)
        simulator.set_status(templates[-1]["id"], "APPROVED")
        assert (await sync(server, tenant))[1] == first  # within the gap: the same answer
        run = await store.last_sync_run(tenant.workspace_id)
        assert run is not None and run.finished_at is not None
        gap_ends_ms = run.finished_at + 500
        await eventually(lambda: now_ms() > gap_ends_ms)
        status, after, _ = await sync(server, tenant)
    assert (status, after["data"]["updated"], graph_calls(simulator)) == (200, 1, 4)
    latest = await store.last_sync_run(tenant.workspace_id)
    assert latest is not None and latest.id == run.id + 1  # a run of its own


@pytest.mark.parametrize(
    ("kind", "retry_after"), [("190", None), ("80008", "420")], ids=["token", "throttled"]
)
async def test_a_failed_sync_is_answered_again_within_the_gap(
    server: Server,
    store: Store,
    tenant: Tenant,
    sim: tuple[Simulator, str],
    kind: str,
    retry_after: str | None,
) -> None:
    simulator, _ = sim
    await seed(simulator, store, tenant, 1000, pending=1)
    simulator.fail(WABA_ID, kind, regain_min=7)  # once: Meta would answer the next call
    answers = [await sync(server, tenant) for _ in range(3)]
    assert graph_calls(simulator) == 1
    for status, body, headers in answers:
        assert (status, body) == (500, answers[0][1])  # synced_at too: the first run's
        assert headers.get("Retry-After") == retry_after
    assert answers[0][1]["error"]["code"] == int(kind)


async def test_the_cli_and_the_poller_are_not_limited_by_the_gap(
    server: Server,
    store: Store,
    settings: Settings,
    tenant: Tenant,
    sim: tuple[Simulator, str],
    tmp_path: Path,
) -> None:
    simulator, graph_url = sim
    await seed(simulator, store, tenant, 1000, pending=1)
    assert (await sync(server, tenant))[0] == 200 and graph_calls(simulator) == 1
    env = {**os.environ, "TEMPLATE_SYNC_DATABASE_URL": settings.database_url,
           "TEMPLATE_SYNC_GRAPH_URL": graph_url, "TEMPLATE_SYNC_META_APP_SECRET": APP_SECRET,
           "TEMPLATE_SYNC_ENCRYPTION_KEYS": settings.encryption_keys[0].value}  # fmt: skip
    code, _, err = await run_cli(env, tmp_path, "sync", "--workspace", tenant.workspace_id)
    assert code == 0 and graph_calls(simulator) == 2, err
    async with aiohttp.ClientSession() as session:
        syncer = Syncer(store, session, graph_url, APP_SECRET,
                        TokenCipher(settings.encryption_keys), Metrics())  # fmt: skip
        poller = Poller(store, syncer, tick_s=1, grace_s=0, interval_s=0)
        assert (await poller.run_once()).graph_calls == 1
    assert graph_calls(simulator) == 3
    assert (await sync(server, tenant))[0] == 200 and graph_calls(simulator) == 3  # the API is


async def test_a_gap_of_zero_limits_nothing(
    settings: Settings, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    simulator, _ = sim
    await seed(simulator, store, tenant, 1000, pending=1)
    async with serving(replace(settings, sync_min_gap_s=0)) as server:
        assert [(await sync(server, tenant))[0] for _ in range(3)] == [200] * 3
        _, last, _ = await server.api(tenant, "/templates/sync")
    assert graph_calls(simulator) == 3 and last["data"]["id"] == 3  # three runs


async def test_nothing_pending_is_still_the_404_within_the_gap(
    server: Server, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    simulator, _ = sim
    templates = await seed(simulator, store, tenant, 1000, pending=1)
    simulator.set_status(templates[-1]["id"], "APPROVED")
    assert (await sync(server, tenant))[0] == 200  # the last pending template is decided
    status, body, _ = await sync(server, tenant)
    assert (status, body) == (404, {"success": False, "message": "No pending templates found"})


async def test_last_sync_is_null_before_the_first(server: Server, tenant: Tenant) -> None:
    status, body, _ = await server.api(tenant, "/templates/sync")
    assert (status, body) == (200, {"success": True, "data": None})


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_cli_import_then_sync(
    settings: Settings, store: Store, tenant: Tenant, sim: tuple[Simulator, str], tmp_path: Path
) -> None:
    simulator, graph_url = sim
    templates = make_templates(WABA_ID, 120, pending=4)
    simulator.add_templates(WABA_ID, templates)
    env = {**os.environ, "TEMPLATE_SYNC_DATABASE_URL": settings.database_url,
           "TEMPLATE_SYNC_GRAPH_URL": graph_url, "TEMPLATE_SYNC_META_APP_SECRET": APP_SECRET,
           "TEMPLATE_SYNC_ENCRYPTION_KEYS": settings.encryption_keys[0].value}  # fmt: skip

    async def cli(*args: str) -> tuple[int, str, str]:
        return await run_cli(env, tmp_path, *args)

    code, out, _ = await cli("import", "--workspace", tenant.workspace_id)
    assert code == 0 and json.loads(out) == {"created": 120, "updated": 0, "unchanged": 0}
    simulator.set_status(templates[-1]["id"], "APPROVED")
    code, out, err = await cli("sync", "--workspace", tenant.workspace_id)
    assert code == 0, err
    assert {k: v for k, v in json.loads(out).items() if k != "synced_at"} == {
        "checked": 4, "updated": 1, "unchanged": 3, "missing": 0, "graph_calls": 2,
    }  # fmt: skip
    assert META_TOKEN not in out + err


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_cli_import_waits_out_a_stored_throttle(
    settings: Settings, store: Store, tenant: Tenant, sim: tuple[Simulator, str], tmp_path: Path
) -> None:
    simulator, graph_url = sim
    simulator.add_templates(WABA_ID, make_templates(WABA_ID, 5, pending=1))
    await store.set_throttle(Throttle(WABA_ID, now_ms() + 600_000, 80008))  # e.g. by a sync
    env = {**os.environ, "TEMPLATE_SYNC_DATABASE_URL": settings.database_url,
           "TEMPLATE_SYNC_GRAPH_URL": graph_url, "TEMPLATE_SYNC_META_APP_SECRET": APP_SECRET,
           "TEMPLATE_SYNC_ENCRYPTION_KEYS": settings.encryption_keys[0].value}  # fmt: skip
    code, out, err = await run_cli(env, tmp_path, "import", "--workspace", tenant.workspace_id)
    assert code == 1 and json.loads(out) == {"created": 0, "updated": 0, "unchanged": 0}
    assert f"WABA {WABA_ID}: throttled (Graph code 80008)" in err
    assert graph_calls(simulator) == 0  # Meta was not asked while its window holds


SEED_JAVASCRIPT = """
const YOUR_API_TOKEN = process.env.API_TOKEN;
async function syncTemplates(workspaceId) {
  const response = await fetch(
    `${process.env.BASE}/api/v3/workspaces/${workspaceId}/templates/sync`,
    {
      method: 'POST',
      headers: {
        'Authorization': `Bearer ${YOUR_API_TOKEN}`
      }
    }
  );
  const data = await response.json();
  console.log(data.message);
}
syncTemplates(process.env.WORKSPACE);
"""


async def run_tool(*command: str, env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    return out.decode().strip()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_seed_curl_and_javascript_examples_work_unchanged(
    server: Server, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    """The seed's cURL and JavaScript snippets, with only the base URL changed."""
    if not shutil.which("curl") or not shutil.which("node"):
        pytest.skip("the seed's examples need curl and node (Node.js 18+ for fetch)")
    simulator, _ = sim
    templates = await seed(simulator, store, tenant, 1000, pending=2)
    simulator.set_status(templates[-1]["id"], "APPROVED")
    url = f"{server.base_url}/api/v3/workspaces/{tenant.workspace_id}/templates/sync"
    curl = await run_tool("curl", "-s", "-X", "POST", url,
                          "-H", f"Authorization: Bearer {tenant.token}", env={})  # fmt: skip
    assert json.loads(curl)["message"] == "Templates synced successfully"
    env = {"API_TOKEN": tenant.token, "BASE": server.base_url, "WORKSPACE": tenant.workspace_id}
    assert await run_tool("node", "-e", SEED_JAVASCRIPT, env=env) == "Templates synced successfully"


# --- one home for template state: sync and import keep it as webhooks do ---------------


def syncer_of(
    store: Store, session: aiohttp.ClientSession, settings: Settings, **options: Any
) -> Syncer:
    cipher = TokenCipher(settings.encryption_keys)
    return Syncer(store, session, settings.graph_url, APP_SECRET, cipher, Metrics(), **options)


async def test_unarchived_restores_the_status_an_import_saw_before_meta_archived_it(
    server: Server, settings: Settings, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    """The architecture issue's divergence: an APPROVED template, archived at Meta and seen
    so by `import`, is APPROVED again by Meta's UNARCHIVED webhook."""
    simulator, _ = sim
    [template] = make_templates(WABA_ID, 1)
    simulator.add_templates(WABA_ID, [template])
    local_id = await add_template(store, tenant, template["id"], status="APPROVED")
    simulator.set_status(template["id"], "ARCHIVED")
    async with aiohttp.ClientSession() as session:
        counts, failures = await syncer_of(store, session, settings).import_workspace(
            tenant.workspace_id
        )
    assert (counts.updated, failures) == (1, [])
    unarchived = meta_webhooks.status_delivery(
        waba_id=WABA_ID, template_id=template["id"], event="UNARCHIVED",
        name=template["name"], language=template["language"],
    )  # fmt: skip
    assert (await server.deliver(unarchived))[0] == 200
    found = await store.get_template(tenant.workspace_id, local_id)
    assert found is not None and (found.status, found.status_source) == ("APPROVED", "webhook")
    history = await store.template_history(tenant.workspace_id, local_id)
    assert history is not None
    assert [(r.field, r.source, r.event, r.old_status, r.new_status, r.applied)
            for r in (h.row for h in history)] == [
        ("template", "api", "CREATED", None, "APPROVED", True),
        ("status", "api", "APPROVED", None, "APPROVED", True),
        ("status", "sync", "ARCHIVED", "APPROVED", "ARCHIVED", True),
        ("quality_score", "sync", "GREEN", None, None, True),
        ("status", "webhook", "UNARCHIVED", "ARCHIVED", "APPROVED", True),
    ]  # fmt: skip


async def test_a_sync_and_a_webhook_that_see_the_same_change_store_the_same(
    settings: Settings, store: Store, tenant: Tenant, sim: tuple[Simulator, str]
) -> None:
    """Meta rejects two templates alike: one is synced, the other's webhooks come, at the same
    time. Their rows differ only in who saw it; their history only in `source`."""
    simulator, _ = sim
    seen_s = 1_790_000_000
    ids = [await add_template(store, tenant, provider_id, name="promo") for provider_id in "12"]
    changes = [
        meta_webhooks.status_change("REJECTED", 2, "promo", "en_US", reason="SCAM"),
        meta_webhooks.quality_change(2, "promo", "en_US", "RED"),
        meta_webhooks.category_change(2, "promo", "en_US", "MARKETING",
                                      previous_category="UTILITY"),
    ]  # fmt: skip
    entry = meta_webhooks.entry(WABA_ID, seen_s, *changes)
    body = meta_webhooks.encode(meta_webhooks.delivery(entry))
    parsed, errors, _ = parse_delivery(body)
    assert len(parsed) == 3 and errors == []
    assert (await store.record_delivery(body, seen_s * 1000, parsed, None)).applied == 3
    simulator.add_templates(WABA_ID, [{"id": "1", "name": "promo", "language": "en_US",
                                       "status": "PENDING", "category": "UTILITY"}])  # fmt: skip
    simulator.set_status("1", "REJECTED", rejected_reason="SCAM", quality_score="RED",
                         category="MARKETING")  # fmt: skip
    async with aiohttp.ClientSession() as session:
        syncer = syncer_of(store, session, settings, clock=lambda: seen_s)
        assert (await syncer.sync(tenant.workspace_id, "api")).updated == 1
    rows = await raw_sql.rows(store, "SELECT * FROM templates ORDER BY id")
    by_source = ("id", "provider_id", "status_source", "last_webhook_at", "last_synced_at")
    synced, hooked = ({k: v for k, v in row.items() if k not in by_source} for row in rows)
    assert synced == hooked and synced["status"] == "REJECTED"
    assert (rows[0]["status_source"], rows[0]["last_synced_at"], rows[0]["last_webhook_at"]) == (
        "sync", seen_s * 1000, None,
    )  # fmt: skip
    assert (rows[1]["status_source"], rows[1]["last_webhook_at"]) == ("webhook", seen_s * 1000)
    histories = [await store.template_history(tenant.workspace_id, i) for i in ids]
    synced_rows, hooked_rows = ([h.row._replace(source="") for h in history or []]
                                for history in histories)  # fmt: skip
    assert synced_rows == hooked_rows and len(synced_rows) == 5
    assert [h.row.source for h in histories[0] or []] == ["api", "api", "sync", "sync", "sync"]
    fields = ["template", "status", "status", "quality_score", "category"]  # both registered: alike
    assert [h.row.field for h in histories[1] or []] == fields
