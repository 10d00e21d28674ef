"""History ids are in commit order on both backends, so a reader that resumes after the last
id it saw (an event stream, a dispatcher's cursor) never misses a row (design section 11)."""

from __future__ import annotations

import asyncio

from service.storage import DeliveryResult, Store
from service.storage.delivery_batch import NewDelivery, record_batch
from service.storage.sql_store import SqlStore
from service.storage.sqlite import SqliteBackend
from service.storage.transactions import Transaction, fetch

from .conftest import NOW_MS, Tenant, add_template
from .raw_sql import rows
from .test_storage import status_change
from .waiting import eventually

PAUSE_S = 0.5


def paused_after_its_history(
    store: SqlStore, delivery: NewDelivery
) -> Transaction[list[DeliveryResult]]:
    """A webhook batch that, its history rows written, waits before it commits (PostgreSQL:
    on the server; SQLite's single writer runs nothing else meanwhile anyway)."""
    results = yield from record_batch([delivery], store._db)
    if not isinstance(store._db, SqliteBackend):
        yield fetch(f"SELECT 1 AS paused FROM pg_sleep({PAUSE_S})")
    return results


async def test_a_later_writer_waits_so_a_resuming_reader_misses_nothing(
    store: Store, tenant: Tenant
) -> None:
    assert isinstance(store, SqlStore)
    await add_template(store, tenant, "41")
    await add_template(store, tenant, "42")
    seen: list[int] = []

    async def read_after_the_last_seen() -> None:
        while True:
            after = seen[-1] if seen else 0
            seen.extend(r["id"] for r in await rows(
                store, "SELECT id FROM template_events WHERE id > ? ORDER BY id", after
            ))  # fmt: skip
            await asyncio.sleep(0.01)

    reader = asyncio.create_task(read_after_the_last_seen())
    first = NewDelivery(b'{"first":1}', NOW_MS, [status_change("APPROVED", template_id="41")], None)
    slow = asyncio.create_task(store._db.run(paused_after_its_history(store, first)))
    if not isinstance(store._db, SqliteBackend):  # the first holds its rows, uncommitted
        await eventually(lambda: _sleeping(store), 5)
    second = [status_change("REJECTED", template_id="42")]
    await store.record_delivery(b'{"second":1}', NOW_MS, second, None)  # waits for the first
    await slow
    all_ids = [r["id"] for r in await rows(store, "SELECT id FROM template_events ORDER BY id")]
    await eventually(lambda: seen[-1:] == all_ids[-1:])
    reader.cancel()
    assert seen == all_ids  # nothing skipped, nothing out of order


async def _sleeping(store: Store) -> bool:
    found = await rows(
        store,
        "SELECT COUNT(*) AS n FROM pg_stat_activity WHERE query LIKE 'SELECT 1 AS paused%'",
    )
    return bool(found[0]["n"])
