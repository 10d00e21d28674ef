"""The store's side of template writes through the API (design section 12), on both
backends: created with Meta's answer, found by name and language, edited, deleted; history
source "api", notified like any other change, written under the history lock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from service.config import Settings
from service.storage import NewTemplate, NotFound, Store, Template, TemplateFilter
from service.storage.postgres import PostgresBackend

from .conftest import NOW_MS, WABA_ID, Tenant, add_template, make_tenant
from .test_storage import status_change
from .waiting import eventually

LATER_MS = NOW_MS + 60_000


def created_at_meta(tenant: Tenant, provider_id: str = "42", **fields: str) -> NewTemplate:
    """A template as Meta answered its creation."""
    return NewTemplate(
        tenant.workspace_id, fields.get("waba_id", WABA_ID), provider_id,
        fields.get("name", "order_confirmation"), fields.get("language", "en_US"),
        fields.get("category", "UTILITY"), fields.get("status", "PENDING"),
    )  # fmt: skip


async def history(store: Store, template: Template) -> list[tuple[object, ...]]:
    """field, event, old status, new status and source of each of its rows."""
    found = await store.template_history(template.workspace_id, template.id)
    assert found is not None
    return [(e.row.field, e.row.event, e.row.old_status, e.row.new_status, e.row.source)
            for e in found]  # fmt: skip


async def subscribe(store: Store, tenant: Tenant, *events: str) -> None:
    """A subscription to `events`, which the fan-out queues from now on."""
    await store.add_subscription(tenant.workspace_id, "https://app.example/", events, "e", 0)


async def test_a_template_created_at_meta_is_stored_by_the_api_and_notified_as_created(
    store: Store, tenant: Tenant
) -> None:
    await subscribe(store, tenant, "template.created")
    created = await store.record_api_create(created_at_meta(tenant), NOW_MS)
    assert (created.provider_id, created.name, created.language) == (
        "42", "order_confirmation", "en_US",
    )  # fmt: skip
    assert (created.status, created.category, created.status_source) == (
        "PENDING", "UTILITY", "api",
    )  # fmt: skip
    assert await store.get_template(tenant.workspace_id, created.id) == created
    assert await history(store, created) == [
        ("template", "CREATED", None, "PENDING", "api"),
        ("status", "PENDING", None, "PENDING", "api"),
    ]
    assert await store.fan_out(NOW_MS, 100) == 1


async def test_a_create_a_webhook_made_known_first_is_the_webhooks_template(
    store: Store, tenant: Tenant
) -> None:
    """Meta reviewed it, and its webhook was stored, before Meta's answer to the create."""
    await store.record_delivery(b"{}", NOW_MS, [status_change("APPROVED")], None)
    [known], _ = await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 10)
    found = await store.record_api_create(created_at_meta(tenant, "42"), NOW_MS + 1)
    assert found == known and (found.status, found.status_source) == ("APPROVED", "webhook")
    assert [row[:2] for row in await history(store, found)] == [
        ("template", "CREATED"), ("status", "APPROVED"),
    ]  # fmt: skip


async def test_a_create_needs_the_workspaces_own_waba(
    store: Store, settings: Settings, tenant: Tenant
) -> None:
    other = await make_tenant(store, settings, waba_id="777")
    with pytest.raises(NotFound, match="has no channel for WABA 777"):
        await store.record_api_create(created_at_meta(tenant, "9", waba_id=other.waba_id), NOW_MS)
    assert await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 10) == ([], 0)


async def test_the_live_template_of_a_name_and_language_is_found_in_its_waba_only(
    store: Store, settings: Settings, tenant: Tenant
) -> None:
    other = await make_tenant(store, settings, waba_id="777")
    await store.add_channel(tenant.workspace_id, "778", "ciphertext", NOW_MS)
    await add_template(store, other, "5", name="order_confirmation", language="en_US")
    await add_template(store, tenant, "6", name="order_confirmation", language="en_US",
                       waba_id="778")  # fmt: skip
    await add_template(store, tenant, "7", name="order_confirmation", language="pt_BR")
    first = await store.record_api_create(created_at_meta(tenant, "8"), NOW_MS)

    def find(workspace_id: str = tenant.workspace_id) -> Awaitable[Template | None]:
        return store.find_live_template(workspace_id, WABA_ID, "order_confirmation", "en_US")

    assert await find() == first
    assert await find(other.workspace_id) is None  # its WABA is not 102290129340398
    await store.record_api_delete(tenant.workspace_id, first.id, NOW_MS + 1)
    assert await find() is None  # a DELETED row aside
    again = await store.record_api_create(created_at_meta(tenant, "9"), NOW_MS + 2)
    assert await find() == again


async def test_an_edit_makes_the_template_pending_by_the_api_and_notifies_what_changed(
    store: Store, tenant: Tenant
) -> None:
    template_id = await add_template(store, tenant, "42", "APPROVED", category="UTILITY")
    await subscribe(store, tenant, "template.status_changed", "template.category_changed")
    edited = await store.record_api_edit(tenant.workspace_id, template_id, "MARKETING", LATER_MS)
    assert (edited.status, edited.category, edited.status_source) == ("PENDING", "MARKETING", "api")
    assert edited.status_updated_at == edited.updated_at == LATER_MS
    assert await store.get_template(tenant.workspace_id, template_id) == edited
    assert (await history(store, edited))[2:] == [
        ("status", "PENDING", "APPROVED", "PENDING", "api"),
        ("category", "MARKETING", None, None, "api"),
    ]
    assert await store.fan_out(LATER_MS, 100) == 2
    [awaiting] = await store.pending_templates(tenant.workspace_id)  # the poller checks it
    assert awaiting.id == template_id
    review = status_change("APPROVED", entry_time=LATER_MS // 1000 + 5)
    assert (await store.record_delivery(b"{}", LATER_MS + 5000, [review], None)).applied == 1
    reviewed = await store.get_template(tenant.workspace_id, template_id)
    assert reviewed is not None and reviewed.status == "APPROVED"


async def test_an_edit_of_a_pending_template_in_its_category_changes_nothing(
    store: Store, tenant: Tenant
) -> None:
    template_id = await add_template(store, tenant, "42", "PENDING", category="UTILITY")
    before = await store.get_template(tenant.workspace_id, template_id)
    assert await store.record_api_edit(tenant.workspace_id, template_id, None, LATER_MS) == before
    assert before is not None and len(await history(store, before)) == 2


async def test_a_deletion_keeps_the_row_and_its_history(store: Store, tenant: Tenant) -> None:
    template_id = await add_template(store, tenant, "42", "APPROVED")
    deleted = await store.record_api_delete(tenant.workspace_id, template_id, LATER_MS)
    assert (deleted.status, deleted.status_source, deleted.updated_at) == (
        "DELETED", "api", LATER_MS,
    )  # fmt: skip
    assert await store.get_template(tenant.workspace_id, template_id) == deleted
    rows = await history(store, deleted)
    assert rows[-1] == ("status", "DELETED", "APPROVED", "DELETED", "api") and len(rows) == 3
    assert await store.record_api_delete(tenant.workspace_id, template_id, LATER_MS + 1) == deleted
    assert len(await history(store, deleted)) == 3


@pytest.mark.parametrize("write", ["edit", "delete"])
async def test_writes_refuse_another_workspaces_template(
    store: Store, settings: Settings, tenant: Tenant, write: str
) -> None:
    theirs = await add_template(store, await make_tenant(store, settings, waba_id="777"), "5")
    for template_id in (theirs, theirs + 1000):
        with pytest.raises(NotFound, match=f"has no template {template_id}"):
            await _write(store, write)(tenant.workspace_id, template_id)
    assert await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 10) == ([], 0)


def _write(store: Store, write: str) -> Callable[[str, int], Awaitable[Template]]:
    if write == "edit":
        return lambda workspace_id, template_id: store.record_api_edit(
            workspace_id, template_id, None, LATER_MS
        )
    return lambda workspace_id, template_id: store.record_api_delete(
        workspace_id, template_id, LATER_MS
    )


HISTORY_LOCK_WAITERS = (
    "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid = 7240412"
)


@pytest.mark.parametrize("write", ["edit", "delete"])
async def test_writes_take_the_history_lock_so_ids_stay_in_commit_order(
    store: Store, tenant: Tenant, database_url: str, write: str
) -> None:
    """Another writer holds the history lock: the write waits for its commit (PostgreSQL;
    SQLite runs one writer at a time)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite runs one writer at a time")
    template_id = await add_template(store, tenant, "42", "APPROVED")
    assert PostgresBackend.history_lock
    other = await asyncpg.connect(database_url)
    try:
        holding = other.transaction()
        await holding.start()
        await other.execute(PostgresBackend.history_lock)
        writing = asyncio.ensure_future(_write(store, write)(tenant.workspace_id, template_id))
        await eventually(
            lambda: other.fetchval(HISTORY_LOCK_WAITERS), 10,
            message="the write never waited for the history lock",
        )  # fmt: skip
        assert not writing.done()
        await holding.commit()
        written = await writing
    finally:
        await other.close()
    assert written.status in ("PENDING", "DELETED")
