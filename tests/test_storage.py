"""The Store contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import pytest

from service import meta_webhooks
from service.config import Settings
from service.events import STATUS_FIELD, Change
from service.storage import (
    Conflict,
    NewTemplate,
    NotFound,
    Store,
    TemplateFilter,
    TokenInfo,
    WorkspaceSummary,
    open_store,
)
from service.storage.schema import MIGRATIONS
from service.storage.sql_store import SqlStore
from service.storage.sqlite import SqliteBackend
from service.storage.tenants import WORKSPACE_ROWS
from service.storage.transactions import Transaction

from .conftest import NOW_MS, WABA_ID, Tenant, add_template, make_tenant
from .raw_sql import execute, rows, run_sql
from .waiting import eventually


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
    await run_sql(  # back to the key format before migration 5 (6 drops 5's index)
        store,
        execute(
            "UPDATE template_events SET dedupe_key = ? WHERE dedupe_key = ?",
            event.dedupe_key[13:],
            event.dedupe_key,
        ),  # only the change's row: its template's CREATED row has no key
        execute("DELETE FROM schema_migrations WHERE version IN (5, 6)"),
    )
    assert await store.migrate() == [5, 6]
    again = await store.record_delivery(b"{}", NOW_MS, [event], None)
    assert (again.duplicate, again.applied) == (1, 0)  # Meta's retry after the upgrade


async def test_migration_8_keeps_templates_stored_before_it_awaiting_their_webhook(
    store: Store, tenant: Tenant
) -> None:
    await add_template(store, tenant, "41")  # created pending by the API: awaits a webhook
    await add_template(store, tenant, "42")
    await store.record_delivery(b"{}", NOW_MS, [status_change("APPROVED")], None)
    await run_sql(  # back to the schema before migration 8
        store,
        execute("DROP INDEX templates_awaiting"),
        execute("ALTER TABLE templates DROP COLUMN awaiting_since"),
        execute(
            "CREATE INDEX templates_awaiting_webhook ON templates (pending_since, workspace_id) "
            "WHERE status IN ('PENDING', 'IN_APPEAL') "
            "AND (last_webhook_at IS NULL OR last_webhook_at <= pending_since)"
        ),
        execute("DELETE FROM schema_migrations WHERE version = 8"),
    )
    assert await store.migrate() == [8]
    assert await rows(store, "SELECT provider_id, awaiting_since FROM templates ORDER BY 1") == [
        {"provider_id": "41", "awaiting_since": NOW_MS},
        {"provider_id": "42", "awaiting_since": None},
    ]
    assert await store.due_workspaces(NOW_MS, 0, 1000, 10) == [tenant.workspace_id]


async def test_migration_9_leaves_deliveries_stored_before_it_without_a_key(
    store: Store, tenant: Tenant
) -> None:
    body = meta_webhooks.encode(meta_webhooks.delivery())
    await store.record_delivery(body, NOW_MS, [], None)
    await run_sql(  # back to the schema before migration 9
        store,
        execute("DROP INDEX webhook_deliveries_body_key"),
        execute("ALTER TABLE webhook_deliveries DROP COLUMN body_key"),
        execute("DELETE FROM schema_migrations WHERE version = 9"),
    )
    assert await store.migrate() == [9]
    again = await store.record_delivery(body, NOW_MS, [], None)  # the old row has no key
    replay = await store.record_delivery(body, NOW_MS, [], None)
    assert again.outcome == "processed" and replay.outcome == "replayed"
    assert replay.delivery_id == again.delivery_id
    assert len(await store.list_deliveries(None, 10)) == 2


OLD_HISTORY = [  # as stored before migration 10: (provider id, field, event, old, new, source)
    ("42", "message_template_quality_update", "RED", None, None, "webhook"),
    ("42", "template_category_update", "MARKETING", None, None, "webhook"),
    ("42", "status", "ARCHIVED", "APPROVED", "ARCHIVED", "sync"),  # archived by a sync
    ("42", "message_template_status_update", "UNARCHIVED", "ARCHIVED", "ARCHIVED", "webhook"),
    ("43", "status", "ARCHIVED", None, "ARCHIVED", "sync"),  # imported archived
]


async def test_migration_10_speaks_one_history_vocabulary_and_finds_the_status_before_archive(
    store: Store, tenant: Tenant
) -> None:
    ids = {p: await add_template(store, tenant, p, status="APPROVED") for p in ("42", "43")}
    insert = (
        "INSERT INTO template_events (template_id, waba_id, provider_id, field, event, "
        "old_status, new_status, source, received_at, applied) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)"
    )
    old_rows = [
        execute(insert, ids[provider_id], WABA_ID, provider_id, *row, row[1] != "UNARCHIVED")
        for provider_id, *row in OLD_HISTORY
    ]
    await run_sql(  # back to what was stored before migration 10
        store,
        *old_rows,
        execute("UPDATE templates SET status = 'ARCHIVED'"),
        execute("DELETE FROM schema_migrations WHERE version = 10"),
    )
    assert await store.migrate() == [10]
    history = await store.template_history(tenant.workspace_id, ids["42"])
    assert history is not None and [h.row.field for h in history] == [
        "template", "status", "quality_score", "category", "status", "status",
    ]  # fmt: skip
    late = [status_change("UNARCHIVED", template_id=p) for p in ("42", "43")]
    assert (await store.record_delivery(b"{}", NOW_MS, late, None)).applied == 1
    found = [await store.get_template(tenant.workspace_id, ids[p]) for p in ("42", "43")]
    assert [t.status for t in found if t] == ["APPROVED", "ARCHIVED"]  # 43's is unknown


async def test_migration_13_keeps_tokens_made_before_it_read_write(
    store: Store, tenant: Tenant
) -> None:
    await run_sql(  # back to the schema before migration 13
        store,
        execute("DROP INDEX templates_name"),
        execute("DROP TABLE idempotency_keys"),
        execute("ALTER TABLE api_tokens DROP COLUMN read_only"),
        execute("DELETE FROM schema_migrations WHERE version = 13"),
    )
    assert await store.migrate() == [13]
    found = await store.find_token(tenant.token_id)
    assert found is not None and found.read_only is False


async def test_one_body_sent_to_two_replicas_at_once_is_stored_once(
    database_url: str, store: Store, tenant: Tenant
) -> None:
    """On PostgreSQL the copies' batches commit side by side: one waits on the other's
    unique key, skips its insert and reads the id the other committed."""
    other = await open_store(database_url)
    body = b'{"object":"whatsapp_business_account","entry":[{"id":"1"}]}'
    try:
        results = await asyncio.gather(*(
            replica.record_delivery(body, NOW_MS, [status_change("APPROVED")], None)
            for _ in range(20) for replica in (store, other)
        ))  # fmt: skip
    finally:
        await other.close()
    assert len({r.delivery_id for r in results}) == 1
    assert sorted(r.outcome for r in results) == ["processed"] + ["replayed"] * 39
    assert sum(r.applied for r in results) == 1 and sum(r.duplicate for r in results) == 39
    [stored] = await store.list_deliveries(None, 10)
    assert stored.body == body


async def test_a_write_that_fails_part_way_stores_nothing(store: Store) -> None:
    """On PostgreSQL the first statement goes to the server with BEGIN, in one round trip."""

    def steps() -> Transaction[None]:
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

    def steps() -> Transaction[None]:
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
    assert found.read_only is False  # the default
    await store.create_token(tenant.workspace_id, "ro", "hash", None, NOW_MS, read_only=True)
    read_only = await store.find_token("ro")
    assert read_only is not None and read_only.read_only is True
    assert await store.find_token_and_template("ro", 0) == (read_only, None)
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
    beyond = await store.list_templates(tenant.workspace_id, TemplateFilter(("PENDING",)), 9, 2)
    assert beyond == ([], 3)  # a page past the end still counts every match
    nothing = await store.list_templates(tenant.workspace_id, TemplateFilter(("PAUSED",)), 0, 2)
    assert nothing == ([], 0)


async def test_delivery_creates_applies_and_dedupes(store: Store, tenant: Tenant) -> None:
    first = await store.record_delivery(b"{}", NOW_MS, [status_change("PENDING")], None)
    assert (first.created, first.applied, first.outcome) == (1, 1, "processed")
    again = await store.record_delivery(b"{}", NOW_MS, [status_change("PENDING")], None)
    assert (again.created, again.applied, again.duplicate) == (0, 0, 1)
    [template], _ = await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 10)
    history = await store.template_history(tenant.workspace_id, template.id)
    assert history is not None and [
        (h.row.field, h.row.old_status, h.row.new_status) for h in history
    ] == [("template", None, "UNKNOWN"), ("status", "UNKNOWN", "PENDING")]


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
    assert history is not None and [h.row.field for h in history] == ["template"] + ["status"] * 20
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


async def table_rows(store: Store, table: str) -> int:
    [row] = await rows(store, f"SELECT COUNT(*) AS n FROM {table}")
    return int(row["n"])


async def test_list_tokens_shows_revoked_ones_and_never_a_hash(
    store: Store, settings: Settings, tenant: Tenant
) -> None:
    await store.create_token(
        tenant.workspace_id, "ab12", "hash-of-it", None, NOW_MS + 1, read_only=True
    )
    await store.revoke_token(tenant.token_id, NOW_MS + 2)
    await make_tenant(store, settings, waba_id="777")  # another workspace's token: not listed
    assert await store.list_tokens(tenant.workspace_id) == [
        TokenInfo(tenant.token_id, tenant.workspace_id, "tests", NOW_MS, NOW_MS + 2, False),
        TokenInfo("ab12", tenant.workspace_id, None, NOW_MS + 1, None, True),
    ]
    assert "token_hash" not in {field.name for field in dataclasses.fields(TokenInfo)}
    with pytest.raises(NotFound, match="does not exist"):
        await store.list_tokens("no-such-workspace")


async def test_workspace_summaries_count_what_each_workspace_holds(
    store: Store, settings: Settings, tenant: Tenant
) -> None:
    other = await make_tenant(store, settings, waba_id="777")
    await store.add_channel(tenant.workspace_id, "778", "ciphertext", NOW_MS)
    await store.create_token(tenant.workspace_id, "ab12", "hash", None, NOW_MS)
    await store.revoke_token(tenant.token_id, NOW_MS)
    for provider_id, status in [("1", "PENDING"), ("2", "IN_APPEAL"), ("3", "APPROVED")]:
        await add_template(store, tenant, provider_id, status)
    await store.claim_sync(tenant.workspace_id, "cli", NOW_MS, 1000)
    found = {summary.id: summary for summary in await store.workspace_summaries()}
    mine, theirs = found[tenant.workspace_id], found[other.workspace_id]
    assert len(found) == 2
    assert (mine.id, mine.name, mine.created_at) == (tenant.workspace_id, "Acme", NOW_MS)
    assert (mine.channels, mine.tokens, mine.active_tokens) == (2, 2, 1)
    assert (mine.templates, mine.pending_templates, mine.sync_runs) == (3, 2, 1)
    assert theirs == WorkspaceSummary(other.workspace_id, "Acme", NOW_MS, 1, 1, 1, 0, 0, 0)
    assert await store.workspace_summaries(other.workspace_id) == [theirs]
    assert await store.workspace_summaries("no-such-workspace") == []


async def seed_everything(store: Store, tenant: Tenant) -> int:
    """A template with webhook history, a sync run, poll state, a webhook subscription
    with a queued event and a logged attempt, an idempotency key and an upstream; returns
    the template id."""
    await store.add_subscription(tenant.workspace_id, "https://app.example/", [], "enc", NOW_MS)
    await store.record_delivery(b"{}", NOW_MS, [status_change("PENDING")], None)
    await store.record_delivery(b"{}", NOW_MS, [status_change("APPROVED", 1751247600)], None)
    assert await store.fan_out(NOW_MS, 100) == 3  # created, pending, approved
    [attempted, *_] = await store.claim_outbox("replica", NOW_MS, 1000, 1)
    assert await store.record_notification(
        attempted, "replica", NOW_MS, 500, "HTTP 500", NOW_MS + 5000, None
    )
    await store.claim_sync(tenant.workspace_id, "api", NOW_MS, 1000)
    assert await store.claim_poll(tenant.workspace_id, "replica", NOW_MS + 5000, 1000, 10)
    assert await store.begin_idempotent(tenant.workspace_id, "key-1", "print", NOW_MS) is None
    await store.set_upstream(tenant.workspace_id, "https://lp.example", "ws", "enc", NOW_MS)
    [template], _ = await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 10)
    return template.id


async def test_delete_workspace_removes_all_it_holds_and_nothing_else(
    store: Store, settings: Settings, tenant: Tenant
) -> None:
    other = await make_tenant(store, settings, waba_id="777")
    theirs = await add_template(store, other, "5")
    await seed_everything(store, tenant)
    before = {table: await table_rows(store, table) for table, _ in WORKSPACE_ROWS}

    held = await store.delete_workspace(tenant.workspace_id)
    assert (held.channels, held.tokens, held.templates, held.sync_runs) == (1, 1, 1, 1)
    assert await store.get_workspace(tenant.workspace_id) is None
    assert await store.find_token(tenant.token_id) is None
    assert await store.channel_for_waba(WABA_ID) is None
    assert await store.poll_state(tenant.workspace_id) is None
    assert await store.last_sync_run(tenant.workspace_id) is None
    after = {table: await table_rows(store, table) for table, _ in WORKSPACE_ROWS}
    assert {table: before[table] - after[table] for table in before} == {
        "outbox": 3, "notification_attempts": 1, "webhook_subscriptions": 1,
        "template_events": 3, "templates": 1, "channels": 1, "api_tokens": 1,
        "sync_runs": 1, "workspace_polls": 1, "idempotency_keys": 1, "upstreams": 1,
        "workspaces": 1,
    }  # fmt: skip
    other_key = await store.begin_idempotent(other.workspace_id, "key-1", "print", NOW_MS)
    assert other_key is None  # the deleted workspace's key was its own
    assert await store.template_history(other.workspace_id, theirs) is not None
    with pytest.raises(NotFound, match="does not exist"):
        await store.delete_workspace(tenant.workspace_id)
    late = await store.record_delivery(b"{}", NOW_MS, [status_change("REJECTED", 1751247700)], None)
    assert (late.unknown_waba, late.created) == (1, 0)  # its WABA is nobody's now


async def test_delete_workspace_covers_every_table_that_refers_to_one(store: Store) -> None:
    """A table added later that refers to a workspace or a template (by foreign key or by a
    workspace_id column) must be in WORKSPACE_ROWS, or deleting a workspace would fail."""
    assert isinstance(store, SqlStore)
    if not isinstance(store._db, SqliteBackend):
        pytest.skip("the schema is written once for both dialects; SQLite's is read here")
    keys = await rows(
        store,
        'SELECT m.name AS child, k."table" AS parent FROM sqlite_master AS m, '
        "pragma_foreign_key_list(m.name) AS k WHERE m.type = 'table'",
    )
    columns = await rows(
        store,
        "SELECT m.name AS child FROM sqlite_master AS m, pragma_table_info(m.name) AS c "
        "WHERE m.type = 'table' AND c.name = 'workspace_id'",
    )
    owned = {"workspaces"} | {row["child"] for row in columns}
    while grown := {k["child"] for k in keys if k["parent"] in owned} - owned:
        owned |= grown
    deleted = [table for table, _ in WORKSPACE_ROWS]
    # The outbox names its target (a relay or a subscription) by id, with no key: two kinds.
    assert owned | {"outbox"} == set(deleted)
    for row in keys:  # children before parents
        if row["child"] in owned and row["child"] != row["parent"]:
            assert deleted.index(row["child"]) < deleted.index(row["parent"]), row


WAITING_FOR_ME = (
    "SELECT COUNT(*) FROM pg_locks AS w JOIN pg_locks AS me ON me.pid = pg_backend_pid() "
    "AND me.locktype = 'transactionid' AND me.granted "
    "WHERE w.locktype = 'transactionid' AND NOT w.granted "
    "AND w.transactionid::text = me.transactionid::text"
)


async def test_delete_workspace_waits_for_history_written_under_it(
    store: Store, tenant: Tenant, database_url: str
) -> None:
    """A webhook's transaction has locked a template and added history when the delete
    starts: the delete waits for its commit and removes that history too."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite runs one writer at a time")
    template_id = await add_template(store, tenant, "1")
    writer = await asyncpg.connect(database_url)
    try:
        webhook = writer.transaction()
        await webhook.start()
        await writer.execute("SELECT id FROM templates WHERE id = $1 FOR UPDATE", template_id)
        await writer.execute(
            "INSERT INTO template_events (template_id, waba_id, provider_id, field, event, "
            "source, received_at, applied) VALUES ($1, $2, '1', 'status', 'APPROVED', "
            "'webhook', 0, TRUE)",
            template_id,
            WABA_ID,
        )
        deleting = asyncio.ensure_future(store.delete_workspace(tenant.workspace_id))
        await eventually(
            lambda: writer.fetchval(WAITING_FOR_ME), 10,
            message="the delete never waited for the webhook's transaction",
        )  # fmt: skip
        await webhook.commit()
        await deleting
    finally:
        await writer.close()
    assert await table_rows(store, "template_events") == 0


async def test_remove_channel_keeps_its_templates_unchanged(store: Store, tenant: Tenant) -> None:
    template_id = await seed_everything(store, tenant)
    await store.remove_channel(WABA_ID)
    assert await store.channel_for_waba(WABA_ID) is None
    kept = await store.get_template(tenant.workspace_id, template_id)
    assert kept is not None and kept.status == "APPROVED"
    history = await store.template_history(tenant.workspace_id, template_id)
    assert history is not None and [h.row.event for h in history] == [
        "CREATED", "PENDING", "APPROVED",
    ]  # fmt: skip
    late = await store.record_delivery(b"{}", NOW_MS, [status_change("REJECTED", 1751247700)], None)
    assert late.unknown_waba == 1
    assert await store.get_template(tenant.workspace_id, template_id) == kept
    with pytest.raises(NotFound, match=f"no channel for WABA {WABA_ID}"):
        await store.remove_channel(WABA_ID)


async def test_remove_template_removes_its_history_only(
    store: Store, settings: Settings, tenant: Tenant
) -> None:
    removed = await seed_everything(store, tenant)
    kept = await add_template(store, tenant, "43")
    theirs = await add_template(store, await make_tenant(store, settings, waba_id="777"), "5")
    with pytest.raises(NotFound):  # another workspace's template
        await store.remove_template(tenant.workspace_id, theirs)
    await store.remove_template(tenant.workspace_id, removed)
    assert await store.get_template(tenant.workspace_id, removed) is None
    assert await table_rows(store, "template_events") == 4  # those of `kept` and `theirs`
    history = await store.template_history(tenant.workspace_id, kept)
    assert history is not None and [h.row.field for h in history] == ["template", "status"]
    with pytest.raises(NotFound, match=f"has no template {removed}"):
        await store.remove_template(tenant.workspace_id, removed)


async def test_migration_14_keeps_channels_and_makes_their_token_optional(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store made before upstream mode: its channels and their tokens survive migration
    14 (SQLite rebuilds the table), and a channel without a token can be added after it."""
    monkeypatch.setattr("service.storage.sql_store.MIGRATIONS", MIGRATIONS[:13])
    store = await open_store(database_url)
    try:
        assert await store.migrate() == list(range(1, 14))
        workspace = await store.create_workspace("Old", NOW_MS)
        before = await store.add_channel(workspace.id, WABA_ID, "sealed-token", NOW_MS)
        monkeypatch.setattr("service.storage.sql_store.MIGRATIONS", MIGRATIONS[:14])
        assert await store.migrate() == [14]
        assert await store.list_channels(workspace.id) == [before]
        added = await store.add_channel(workspace.id, "999", None, NOW_MS + 1)
        assert await store.channel_for_waba("999") == added
        with pytest.raises(Conflict):
            await store.add_channel(workspace.id, WABA_ID, None, NOW_MS)  # still unique
    finally:
        await store.close()
