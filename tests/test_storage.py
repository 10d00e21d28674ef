"""The Store contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio

import pytest

from service.config import Settings
from service.events import STATUS_FIELD, Change
from service.storage import Conflict, NewTemplate, NotFound, Store, TemplateFilter, open_store
from service.storage.schema import MIGRATIONS
from service.storage.sql import SqlStore
from service.storage.steps import Steps, execute

from .conftest import NOW_MS, WABA_ID, Tenant, add_template, make_tenant


def status_change(event: str, entry_time: int = 1751247548, template_id: str = "42") -> Change:
    return Change(WABA_ID, STATUS_FIELD, event, template_id, "promo", "en", None, None, entry_time)


async def test_migrate_is_idempotent(store: Store) -> None:
    assert await store.migrate() == []


async def test_migrations_applied_by_two_processes_at_once(database_url: str) -> None:
    first, second = await open_store(database_url), await open_store(database_url)
    try:
        results = await asyncio.gather(first.migrate(), second.migrate())
        assert sorted(len(applied) for applied in results) == [0, len(MIGRATIONS)]
    finally:
        await first.close()
        await second.close()


async def test_migration_5_keeps_events_stored_before_it_deduplicated(
    store: Store, tenant: Tenant
) -> None:
    event = status_change("APPROVED")
    await store.record_delivery(b"{}", NOW_MS, [event], None)
    assert isinstance(store, SqlStore)
    async with store._tx() as tx:  # back to the key format before migration 5 (6 drops 5's index)
        await tx.execute("UPDATE template_events SET dedupe_key = ?", event.dedupe_key[13:])
        await tx.execute("DELETE FROM schema_migrations WHERE version IN (5, 6)")
    assert await store.migrate() == [5, 6]
    again = await store.record_delivery(b"{}", NOW_MS, [event], None)
    assert (again.duplicate, again.applied) == (1, 0)  # Meta's retry after the upgrade


async def test_migration_8_keeps_templates_stored_before_it_awaiting_their_webhook(
    store: Store, tenant: Tenant
) -> None:
    await add_template(store, tenant, "41")  # created pending by the API: awaits a webhook
    await add_template(store, tenant, "42")
    await store.record_delivery(b"{}", NOW_MS, [status_change("APPROVED")], None)
    assert isinstance(store, SqlStore)
    async with store._tx() as tx:  # back to the schema before migration 8
        await tx.execute("DROP INDEX templates_awaiting")
        await tx.execute("ALTER TABLE templates DROP COLUMN awaiting_since")
        await tx.execute(
            "CREATE INDEX templates_awaiting_webhook ON templates (pending_since, workspace_id) "
            "WHERE status IN ('PENDING', 'IN_APPEAL') "
            "AND (last_webhook_at IS NULL OR last_webhook_at <= pending_since)"
        )
        await tx.execute("DELETE FROM schema_migrations WHERE version = 8")
    assert await store.migrate() == [8]
    async with store._tx() as tx:
        rows = await tx.fetch("SELECT provider_id, awaiting_since FROM templates ORDER BY 1")
    assert rows == [
        {"provider_id": "41", "awaiting_since": NOW_MS},
        {"provider_id": "42", "awaiting_since": None},
    ]
    assert await store.due_workspaces(NOW_MS, 0, 1000, 10) == [tenant.workspace_id]


async def test_a_write_that_fails_part_way_stores_nothing(store: Store) -> None:
    """On PostgreSQL the first statement goes to the server with BEGIN, in one round trip."""

    def steps() -> Steps[None]:
        yield execute("SAVEPOINT opening")
        yield execute("INSERT INTO workspaces (id, name, created_at) VALUES (?, 'n', 0)", "w")
        raise RuntimeError("after the insert")

    assert isinstance(store, SqlStore)
    for _ in range(12):  # more than the pool holds: no connection goes back mid-transaction
        with pytest.raises(RuntimeError):
            await store._db.run(steps())
    assert await store.list_workspaces() == []
    created = await store.create_workspace("after", NOW_MS)
    assert await store.list_workspaces() == [created]


async def test_a_write_of_argument_less_statements_only_is_committed(store: Store) -> None:
    """On PostgreSQL they wait to go with BEGIN; the COMMIT must take them along."""

    def steps() -> Steps[None]:
        yield execute("INSERT INTO workspaces (id, name, created_at) VALUES ('w', 'n', 0)")

    assert isinstance(store, SqlStore)
    await store._db.run(steps())
    assert [workspace.id for workspace in await store.list_workspaces()] == ["w"]


async def test_workspaces(store: Store) -> None:
    created = await store.create_workspace("Acme", NOW_MS)
    assert await store.get_workspace(created.id) == created
    assert await store.list_workspaces() == [created]
    assert await store.get_workspace("00000000-0000-4000-8000-000000000000") is None


async def test_channel_per_waba_is_unique(store: Store, settings: Settings, tenant: Tenant) -> None:
    with pytest.raises(Conflict, match=WABA_ID):
        await store.add_channel(tenant.workspace_id, WABA_ID, "ciphertext", NOW_MS)
    with pytest.raises(NotFound):
        await store.add_channel("no-such-workspace", "123", "ciphertext", NOW_MS)
    [channel] = await store.list_channels(tenant.workspace_id)
    assert channel.waba_id == WABA_ID and "EAAG" not in channel.access_token_enc


async def test_tokens(store: Store, tenant: Tenant) -> None:
    found = await store.find_token(tenant.token_id)
    assert found is not None and found.workspace_id == tenant.workspace_id
    assert found.revoked_at is None and tenant.token not in repr(found)
    assert await store.revoke_token(tenant.token_id, NOW_MS) is True
    assert await store.revoke_token(tenant.token_id, NOW_MS) is False
    revoked = await store.find_token(tenant.token_id)
    assert revoked is not None and revoked.revoked_at == NOW_MS
    assert await store.find_token("missing") is None
    with pytest.raises(NotFound):
        await store.create_token("no-such-workspace", "id", "hash", None, NOW_MS)


async def test_add_template_needs_the_workspaces_own_channel(
    store: Store, settings: Settings, tenant: Tenant
) -> None:
    other = await make_tenant(store, settings, waba_id="777")
    await add_template(store, tenant, "1")
    with pytest.raises(Conflict):
        await add_template(store, tenant, "1")
    with pytest.raises(NotFound):  # another workspace's WABA
        await add_template(store, tenant, "2", waba_id=other.waba_id)
    with pytest.raises(NotFound):  # a WABA with no channel
        await add_template(store, tenant, "3", waba_id="999")


async def test_list_templates_counts_and_pages(store: Store, tenant: Tenant) -> None:
    for index in range(5):
        await add_template(store, tenant, str(index), status="APPROVED" if index % 2 else "PENDING")
    page, total = await store.list_templates(
        tenant.workspace_id, TemplateFilter(("PENDING",)), 1, 2
    )
    assert total == 3 and [t.provider_id for t in page] == ["2", "4"]


async def test_delivery_creates_applies_and_dedupes(store: Store, tenant: Tenant) -> None:
    first = await store.record_delivery(b"{}", NOW_MS, [status_change("PENDING")], None)
    assert (first.created, first.applied, first.outcome) == (1, 1, "processed")
    again = await store.record_delivery(b"{}", NOW_MS, [status_change("PENDING")], None)
    assert (again.created, again.applied, again.duplicate) == (0, 0, 1)
    [template], _ = await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 10)
    history = await store.template_history(tenant.workspace_id, template.id)
    assert history is not None and [(h.old_status, h.new_status) for h in history] == [
        ("UNKNOWN", "PENDING")
    ]


async def test_stale_status_event_is_kept_but_not_applied(store: Store, tenant: Tenant) -> None:
    await store.record_delivery(b"{}", NOW_MS, [status_change("APPROVED", 200)], None)
    stale = await store.record_delivery(b"{}", NOW_MS, [status_change("REJECTED", 100)], None)
    assert (stale.stale, stale.applied) == (1, 0)
    [template], _ = await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 10)
    assert template.status == "APPROVED"


async def test_unknown_waba_counts_but_creates_nothing(store: Store, tenant: Tenant) -> None:
    change = Change("999", STATUS_FIELD, "APPROVED", "1", "n", "en", None, None, 1)
    result = await store.record_delivery(b"{}", NOW_MS, [change], None)
    assert (result.unknown_waba, result.created) == (1, 0)
    assert (await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 10))[1] == 0


async def test_data_no_store_can_hold_is_quarantined_not_lost(store: Store, tenant: Tenant) -> None:
    unstorable = Change(WABA_ID, STATUS_FIELD, "APPROVED", "7", "bad\ud800", "en", None, None, 1)
    result = await store.record_delivery(b"raw bytes", NOW_MS, [unstorable], None)
    assert result.outcome == "quarantined"
    [delivery] = await store.list_deliveries(None, 10)
    assert delivery.body == b"raw bytes" and "could not apply" in (delivery.error or "")
    assert (await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 10))[1] == 0


async def test_concurrent_copies_of_one_event_apply_once(store: Store, tenant: Tenant) -> None:
    results = await asyncio.gather(
        *(
            store.record_delivery(b"{}", NOW_MS, [status_change("APPROVED")], None)
            for _ in range(10)
        )
    )
    assert sum(r.applied for r in results) == 1 and sum(r.duplicate for r in results) == 9
    assert sum(r.created for r in results) == 1


async def test_concurrent_distinct_events_all_land_in_history(store: Store, tenant: Tenant) -> None:
    events = [status_change("PENDING" if i % 2 else "APPROVED", 1000 + i) for i in range(20)]
    await asyncio.gather(*(store.record_delivery(b"{}", NOW_MS, [e], None) for e in events))
    [template], _ = await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 10)
    history = await store.template_history(tenant.workspace_id, template.id)
    assert history is not None and len(history) == 20
    assert template.status == "PENDING"  # entry.time 1019 is the newest, whatever the order


async def test_history_of_another_workspaces_template_is_none(
    store: Store, settings: Settings, tenant: Tenant
) -> None:
    other = await make_tenant(store, settings, waba_id="888")
    theirs = await add_template(store, other, "5")
    assert await store.template_history(tenant.workspace_id, theirs) is None
    assert await store.get_template(tenant.workspace_id, theirs) is None


async def test_a_token_is_found_with_a_template_of_its_workspace_only(
    store: Store, settings: Settings, tenant: Tenant
) -> None:
    own = await add_template(store, tenant, "4")
    theirs = await add_template(store, await make_tenant(store, settings, waba_id="888"), "5")
    token = await store.find_token(tenant.token_id)
    template = await store.get_template(tenant.workspace_id, own)
    assert token is not None and template is not None
    assert await store.find_token_and_template(tenant.token_id, own) == (token, template)
    assert await store.find_token_and_template(tenant.token_id, theirs) == (token, None)
    assert await store.find_token_and_template(tenant.token_id, 0) == (token, None)
    assert await store.find_token_and_template("missing", own) == (None, None)
    await store.revoke_token(tenant.token_id, NOW_MS)
    revoked, _ = await store.find_token_and_template(tenant.token_id, own)
    assert revoked is not None and revoked.revoked_at == NOW_MS  # the API refuses it


async def test_new_template_fields_round_trip(store: Store, tenant: Tenant) -> None:
    new = NewTemplate(tenant.workspace_id, WABA_ID, "9", "otp", "pt_BR", None, "IN_APPEAL")
    created = await store.add_template(new, NOW_MS)
    assert (created.name, created.language, created.category, created.status) == (
        "otp",
        "pt_BR",
        None,
        "IN_APPEAL",
    )
    assert created.created_at == created.status_updated_at == NOW_MS
