"""Group commit: order kept, one bad delivery isolated, nothing acknowledged before its commit."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field

import asyncpg
import pytest

from service.events import STATUS_FIELD, Change
from service.storage import (
    DeliveryResult,
    Store,
    StoreUnavailable,
    TemplateFilter,
    deliveries,
    open_store,
)
from service.storage.delivery_batch import NewDelivery, _select_templates, record_batch
from service.storage.group_commit import MAX_BATCH, PARALLEL_AFTER, GroupCommit
from service.storage.postgres import _numbered
from service.storage.sql_store import SqlStore
from service.storage.transactions import Transaction, execute

from .conftest import NOW_MS, WABA_ID, Tenant
from .waiting import eventually


def change(event: str, entry_time: int, template_id: str = "42", name: str = "promo") -> Change:
    return Change(WABA_ID, STATUS_FIELD, event, template_id, name, "en", None, None, entry_time)


def body_of(*changes: Change) -> bytes:
    """A body of its own for each delivery, as Meta's are (the store keeps one per body)."""
    return repr(changes).encode()


def delivery(*changes: Change) -> NewDelivery:
    return NewDelivery(body_of(*changes), NOW_MS, changes, None)


def sql_store(store: Store) -> SqlStore:
    assert isinstance(store, SqlStore)
    return store


def counting_writer(store: Store) -> tuple[GroupCommit[NewDelivery, DeliveryResult], list[int]]:
    """A writer over the store's own commit that records each batch's size."""
    batches: list[int] = []
    real = sql_store(store)

    async def counted(items: list[NewDelivery]) -> list[DeliveryResult]:
        batches.append(len(items))
        return await real._commit_deliveries(items)

    return GroupCommit(counted), batches


async def test_concurrent_deliveries_share_a_commit_and_keep_their_order(
    store: Store, tenant: Tenant
) -> None:
    writer, batches = counting_writer(store)
    events = [change("PENDING" if i % 2 else "APPROVED", 1000 + i) for i in range(40)]
    results = await asyncio.gather(*(writer.submit(delivery(e)) for e in events))
    await writer.close()
    assert batches == [40]  # queued together, committed together
    ids = [r.delivery_id for r in results]
    assert ids == sorted(ids) and len(set(ids)) == 40  # stored in arrival order
    [template], _ = await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 10)
    assert template.status == "PENDING"  # entry.time 1039, the last, wins
    history = await store.template_history(tenant.workspace_id, template.id)
    assert history is not None and [(h.row.field, h.row.event_time) for h in history] == [
        ("template", NOW_MS),  # created by the first delivery, received at NOW_MS
        *(("status", (1000 + i) * 1000) for i in range(40)),
    ]


async def test_batches_are_capped(store: Store, tenant: Tenant) -> None:
    writer, batches = counting_writer(store)
    count = MAX_BATCH + 10
    await asyncio.gather(
        *(writer.submit(delivery(change("APPROVED", i, str(i)))) for i in range(count))
    )
    await writer.close()
    assert batches == [MAX_BATCH, 10]


async def test_one_unstorable_delivery_is_quarantined_and_the_batch_lands(
    store: Store, tenant: Tenant
) -> None:
    good = [delivery(change("APPROVED", 1, str(i))) for i in range(5)]
    bad = delivery(change("APPROVED", 1, "99", name="bad\ud800"))  # no store can hold this
    items = [*good[:2], bad, *good[2:]]
    results = await asyncio.gather(*(store.record_delivery(i.body, NOW_MS, i.changes, None)
                                     for i in items))  # fmt: skip
    assert [r.outcome for r in results] == ["processed"] * 2 + ["quarantined"] + ["processed"] * 3
    assert [r.created for r in results] == [1, 1, 0, 1, 1, 1]
    templates, total = await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 10)
    assert total == 5 and "99" not in {t.provider_id for t in templates}
    [quarantined] = await store.list_deliveries("quarantined", 10)
    assert quarantined.id == results[2].delivery_id and "could not apply" in (
        quarantined.error or ""
    )


@dataclass
class Gate:
    """`entered` is set when a commit starts; the commit goes on once `release` is set."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def gated_writer(store: Store) -> tuple[GroupCommit[NewDelivery, DeliveryResult], Gate]:
    """A writer over the store's own commit that waits at the gate before each commit."""
    gate = Gate()
    real = sql_store(store)

    async def slow_commit(items: list[NewDelivery]) -> list[DeliveryResult]:
        gate.entered.set()
        await gate.release.wait()
        return await real._commit_deliveries(items)

    return GroupCommit(slow_commit), gate


async def test_no_caller_is_answered_before_its_commit(
    database_url: str, store: Store, tenant: Tenant
) -> None:
    writer, gate = gated_writer(store)
    pending = asyncio.create_task(writer.submit(delivery(change("APPROVED", 1))))
    await eventually(gate.entered.is_set)
    assert not pending.done()  # the commit has not happened: no answer yet
    gate.release.set()
    result = await pending
    reader = await open_store(database_url)  # another connection sees it: it is committed
    try:
        [stored] = await reader.list_deliveries(None, 10)
        assert stored.id == result.delivery_id
    finally:
        await reader.close()
        await writer.close()


async def test_a_caller_gone_away_does_not_cancel_the_commit(store: Store, tenant: Tenant) -> None:
    writer, gate = gated_writer(store)
    caller = asyncio.create_task(writer.submit(delivery(change("APPROVED", 1))))
    await eventually(gate.entered.is_set)
    caller.cancel()  # the client hung up while its delivery was being committed
    gate.release.set()
    await writer.close()
    assert caller.cancelled()
    assert len(await store.list_deliveries(None, 10)) == 1


@pytest.mark.parametrize("failure", [StoreUnavailable("disk full"), RuntimeError("bug")])
async def test_a_failed_batch_refuses_every_caller_of_the_batch(failure: Exception) -> None:
    async def failing(items: list[NewDelivery]) -> list[DeliveryResult]:
        raise failure

    writer = GroupCommit(failing)
    outcomes = await asyncio.gather(
        *(writer.submit(delivery(change("APPROVED", i))) for i in range(3)), return_exceptions=True
    )
    await writer.close()
    assert outcomes == [failure] * 3


async def test_an_items_own_failure_reaches_its_caller_alone() -> None:
    refused = LookupError("this one")

    async def serve(items: list[int]) -> list[int | Exception]:
        return [refused if item == 2 else item * 10 for item in items]

    batches: GroupCommit[int, int] = GroupCommit(serve)
    outcomes = await asyncio.gather(*(batches.submit(i) for i in range(4)), return_exceptions=True)
    await batches.close()
    assert outcomes == [0, 10, refused, 30]


@pytest.mark.parametrize("failure", [StoreUnavailable("disk full"), RuntimeError("bug")])
async def test_a_delivery_batch_that_fails_is_refused_for_a_retry(
    store: Store, tenant: Tenant, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    """Whatever the failure, a delivery that could not be committed is answered 503, so
    Meta sends it again."""

    def failing(items: list[NewDelivery], db: object) -> Transaction[list[DeliveryResult]]:
        raise failure
        yield  # a transaction: a generator

    monkeypatch.setattr(deliveries, "record_batch", failing)
    outcomes = await asyncio.gather(
        *(store.record_delivery(body_of(c), NOW_MS, [c], None)
          for c in (change("APPROVED", i) for i in range(3))),
        return_exceptions=True,
    )  # fmt: skip
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)  # 503: Meta retries
    monkeypatch.undo()
    assert await store.list_deliveries(None, 10) == []  # nothing half-stored


async def test_an_older_event_later_in_the_same_batch_is_stale(
    store: Store, tenant: Tenant
) -> None:
    newer, older = change("APPROVED", 200), change("REJECTED", 100)
    results = await asyncio.gather(*(writer_submit(store, d) for d in (newer, older)))
    assert [(r.applied, r.stale) for r in results] == [(1, 0), (0, 1)]
    [template], _ = await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 10)
    history = await store.template_history(tenant.workspace_id, template.id)
    assert template.status == "APPROVED" and history is not None
    assert [(h.row.event, h.row.applied) for h in history] == [
        ("CREATED", True),
        ("APPROVED", True),
        ("REJECTED", False),
    ]


async def test_a_delivery_larger_than_one_statement_applies_whole(
    store: Store, tenant: Tenant
) -> None:
    # 1,200 changes over 600 templates: more rows than one statement carries (delivery_batch.py).
    changes = [change("PENDING" if i < 600 else "APPROVED", 1 + i // 600, str(i % 600))
               for i in range(1200)]  # fmt: skip
    stranger = Change("999", STATUS_FIELD, "APPROVED", "1", "n", "en", None, None, 1)
    result = await store.record_delivery(body_of(stranger), NOW_MS, [*changes, stranger], None)
    assert (result.created, result.applied, result.unknown_waba) == (600, 1200, 1)
    templates, total = await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 600)
    assert total == 600 and {t.status for t in templates} == {"APPROVED"}
    history = await store.template_history(tenant.workspace_id, templates[0].id)
    assert history is not None and [(h.row.event, h.row.new_status) for h in history] == [
        ("CREATED", "UNKNOWN"),
        ("PENDING", "PENDING"),
        ("APPROVED", "APPROVED"),
    ]


def writer_submit(store: Store, event: Change) -> Awaitable[DeliveryResult]:
    return store.record_delivery(body_of(event), NOW_MS, [event], None)


@pytest.mark.parametrize(
    ("parallel", "waiting", "side_by_side"),
    [(1, PARALLEL_AFTER, 1), (2, PARALLEL_AFTER, 2), (4, PARALLEL_AFTER - 1, 1)],
)
async def test_batches_commit_side_by_side_up_to_the_backends_limit_when_enough_wait(
    parallel: int, waiting: int, side_by_side: int
) -> None:
    """Fewer than PARALLEL_AFTER waiting: they wait for the commit in flight, as one batch."""
    gate, running, most = asyncio.Event(), 0, 0
    batches: list[int] = []

    async def slow(items: list[NewDelivery]) -> list[DeliveryResult]:
        nonlocal running, most
        batches.append(len(items))
        running += 1
        most = max(most, running)
        await gate.wait()
        running -= 1
        return [DeliveryResult(delivery_id=i, outcome="processed") for i in range(len(items))]

    writer, submitted = GroupCommit(slow, parallel), 0

    async def submit(entry_time: int) -> DeliveryResult:
        nonlocal submitted
        submitted += 1  # in the same step as writer.submit() queues it: counted means queued
        return await writer.submit(delivery(change("APPROVED", entry_time)))

    first = asyncio.create_task(submit(1))
    await eventually(lambda: running == 1)  # the first batch is committing
    later = [asyncio.create_task(submit(2 + i)) for i in range(waiting)]
    await eventually(lambda: submitted == 1 + waiting and running >= side_by_side)
    assert not any(task.done() for task in [first, *later])  # nobody answered before commit
    gate.set()
    await asyncio.gather(first, *later)
    await writer.close()
    assert (batches, most) == ([1, waiting], side_by_side)


async def test_a_delivery_submitted_after_close_is_still_answered() -> None:
    committed: list[int] = []

    async def commit(items: list[NewDelivery]) -> list[DeliveryResult]:
        committed.append(len(items))
        return [DeliveryResult(delivery_id=1, outcome="processed") for _ in items]

    writer = GroupCommit(commit)
    await writer.close()
    late = writer.submit(delivery(change("APPROVED", 1)))
    assert (await asyncio.wait_for(late, timeout=5)).outcome == "processed"
    assert committed == [1]


async def test_a_batch_larger_than_one_statement_takes_is_stored_whole(
    store: Store, tenant: Tenant
) -> None:
    """600 deliveries and 1,100 changes: more rows than SQLite takes in one statement
    (sqlite.ROWS_PER_STATEMENT), each list of them of a size that is no power of two."""
    many = [delivery(change("APPROVED", 1000 + i, str(i))) for i in range(600)]
    wide = delivery(*(change("PAUSED", 5000, str(i)) for i in range(1100)))
    results = await sql_store(store)._commit_deliveries([*many, wide, many[0]])
    assert len({r.delivery_id for r in results}) == 601
    assert [r.created for r in results[:600]] == [1] * 600
    assert (results[600].applied, results[600].created) == (1100, 500)
    replay = results[601]  # the first body again, in the same batch: stored once
    assert (replay.delivery_id, replay.outcome) == (results[0].delivery_id, "replayed")
    assert (replay.duplicate, replay.applied) == (1, 0)
    assert len(await store.list_deliveries(None, 1000)) == 601
    templates, total = await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 100)
    assert total == 1100 and {t.status for t in templates} == {"PAUSED"}


def pruned_after_the_insert(
    batch: Transaction[list[DeliveryResult]],
) -> Transaction[list[DeliveryResult]]:
    """`batch`'s steps, with every stored delivery deleted right after the bodies' insert."""
    reply = None
    while True:
        try:
            step = batch.send(reply)
        except StopIteration as done:
            return list(done.value)
        reply = yield step
        if step.sql.startswith("INSERT INTO webhook_deliveries"):
            yield execute("DELETE FROM webhook_deliveries")


async def test_a_replay_whose_stored_copy_is_pruned_meanwhile_is_refused_for_a_retry(
    store: Store, tenant: Tenant
) -> None:
    """On PostgreSQL retention may delete the stored copy between the insert that found it
    and the read of its id: the batch is refused (503, Meta retries), nothing half-stored."""
    body = body_of(change("APPROVED", 1))
    first = await store.record_delivery(body, NOW_MS, [], None)
    real = sql_store(store)
    replay = [NewDelivery(body, NOW_MS, [], None)]
    with pytest.raises(StoreUnavailable, match="pruned meanwhile"):
        await real._db.run(pruned_after_the_insert(record_batch(replay, real._db)))
    [kept] = await store.list_deliveries(None, 10)  # rolled back: the copy is still there
    assert kept.id == first.delivery_id


async def test_a_batchs_template_lookup_uses_the_unique_index_on_a_young_table(
    database_url: str, store: Store
) -> None:
    """PostgreSQL plans a batch's statements once per connection (a generic plan) and keeps
    the plan, however the table grows: planned on an empty table, the template lookup must
    already take the (waba_id, provider_id) index, not one led by waba_id alone, which would
    read every template of the WABA for each key."""
    if not database_url.startswith("postgres"):
        pytest.skip("SQLite plans each statement when it prepares it, from its own rules")
    db = sql_store(store)._db
    lookup = next(_select_templates([(WABA_ID, "1"), (WABA_ID, "2")], db))
    arrays = ", ".join(
        "ARRAY[" + ", ".join(f"'{value}'" for value in column) + "]" for column in lookup.args
    )
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            assert db.batch_setup is not None
            await conn.execute(db.batch_setup)  # the generic plan, as a batch has it
            await conn.execute(f"PREPARE lookup AS {_numbered(lookup.sql)}")
            rows = await conn.fetch(f"EXPLAIN EXECUTE lookup({arrays})")
    finally:
        await conn.close()
    plan = "\n".join(row[0] for row in rows)
    assert "templates_waba_id_provider_id_key on templates t" in plan, plan
    assert "templates_name" not in plan, plan
