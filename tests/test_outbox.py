"""The outbox's store methods (storage/outbox.py) on both backends: relay rows queued in the
delivery's commit, leases, outcomes, retry, pruning."""

from __future__ import annotations

import asyncio

import pytest

from service.storage import NotFound, OutboxItem, Store

from .conftest import NOW_MS, Tenant
from .raw_sql import rows
from .test_storage import status_change

LEASE_MS = 60_000
MESSAGES = frozenset({"messages"})
TEMPLATES = frozenset({"message_template_status_update"})


async def relayed(store: Store, body: bytes, fields: frozenset[str], at: int = NOW_MS) -> int:
    result = await store.record_delivery(body, at, [], None, "sha256=abc", fields)
    return result.relayed


async def test_a_delivery_is_queued_for_each_relay_that_takes_it(store: Store) -> None:
    everything = await store.add_relay("http://127.0.0.1:9/all", [], None, NOW_MS)
    only_messages = await store.add_relay("http://127.0.0.1:9/m", ["messages"], "app", NOW_MS)
    assert await relayed(store, b'{"a":1}', MESSAGES) == 2
    assert await relayed(store, b'{"a":2}', TEMPLATES) == 1
    assert await relayed(store, b'{"a":3}', frozenset()) == 1  # no field at all: "all" only
    summaries = {s.relay.id: s for s in await store.list_relays()}
    assert (summaries[everything.id].queued, summaries[only_messages.id].queued) == (3, 1)
    assert summaries[only_messages.id].relay.fields == ("messages",)
    assert summaries[only_messages.id].relay.name == "app"


async def test_no_relay_queues_nothing_and_a_replay_is_relayed_once(store: Store) -> None:
    assert await relayed(store, b'{"a":1}', MESSAGES) == 0
    await store.add_relay("http://127.0.0.1:9/", [], None, NOW_MS)
    assert await relayed(store, b'{"a":2}', MESSAGES) == 1
    assert await relayed(store, b'{"a":2}', MESSAGES) == 0  # Meta's retry of the same bytes
    [summary] = await store.list_relays()
    assert summary.queued == 1


async def test_a_quarantined_delivery_is_relayed_too(store: Store, tenant: Tenant) -> None:
    await store.add_relay("http://127.0.0.1:9/", [], None, NOW_MS)
    result = await store.record_delivery(b"not json", NOW_MS, [], "body is not JSON", "sha256=x")
    assert (result.outcome, result.relayed) == ("quarantined", 1)


async def test_a_claim_carries_the_bytes_and_signature_and_leases_the_row(store: Store) -> None:
    relay = await store.add_relay("http://127.0.0.1:9/hook", [], None, NOW_MS)
    result = await store.record_delivery(b'{"x":1}', NOW_MS, [], None, "sha256=sig", MESSAGES)
    [item] = await store.claim_outbox("a", NOW_MS, LEASE_MS, 10)
    assert (item.kind, item.target_id, item.item_id, item.url) == (
        "relay", relay.id, result.delivery_id, "http://127.0.0.1:9/hook",
    )  # fmt: skip
    assert (item.body, item.signature, item.attempts) == (b'{"x":1}', "sha256=sig", 0)
    assert await store.claim_outbox("b", NOW_MS, LEASE_MS, 10) == []  # leased to "a"
    [again] = await store.claim_outbox("b", NOW_MS + LEASE_MS, LEASE_MS, 10)  # "a" died
    assert again.id == item.id
    assert not await store.finish_outbox(item, "a", NOW_MS + LEASE_MS, None, None)  # lost it
    assert await store.finish_outbox(again, "b", NOW_MS + LEASE_MS, None, None)
    assert await store.claim_outbox("c", NOW_MS + 10 * LEASE_MS, LEASE_MS, 10) == []  # sent


async def test_a_failed_attempt_waits_for_its_retry_then_fails_for_good(store: Store) -> None:
    relay = await store.add_relay("http://127.0.0.1:9/", [], None, NOW_MS)
    await relayed(store, b"{}", MESSAGES)
    [item] = await store.claim_outbox("a", NOW_MS, LEASE_MS, 10)
    assert await store.finish_outbox(item, "a", NOW_MS + 1, "HTTP 503", NOW_MS + 5_000)
    assert await store.claim_outbox("a", NOW_MS + 4_999, LEASE_MS, 10) == []
    [second] = await store.claim_outbox("a", NOW_MS + 5_000, LEASE_MS, 10)
    assert second.attempts == 1
    assert await store.finish_outbox(second, "a", NOW_MS + 5_001, "timeout after 10 s", None)
    assert await store.claim_outbox("a", NOW_MS + 10**9, LEASE_MS, 10) == []
    [summary] = await store.list_relays()
    assert (summary.queued, summary.failed, summary.last_error) == (0, 1, "timeout after 10 s")
    assert await store.retry_relay(relay.id, NOW_MS + 10**6) == 1
    [third] = await store.claim_outbox("a", NOW_MS + 10**6, LEASE_MS, 10)
    assert (third.attempts, third.created_at) == (0, NOW_MS + 10**6)  # a fresh age


async def test_claims_take_the_longest_due_first_up_to_the_limit(store: Store) -> None:
    await store.add_relay("http://127.0.0.1:9/", [], None, NOW_MS)
    for n in range(5):
        await relayed(store, f'{{"n":{n}}}'.encode(), MESSAGES, at=NOW_MS + 5 - n)
    first = await store.claim_outbox("a", NOW_MS + 10, LEASE_MS, 2)
    assert {item.body for item in first} == {b'{"n":4}', b'{"n":3}'}


async def test_concurrent_claims_never_share_a_row(store: Store) -> None:
    await store.add_relay("http://127.0.0.1:9/", [], None, NOW_MS)
    for n in range(40):
        await relayed(store, f'{{"n":{n}}}'.encode(), MESSAGES)
    claims = await asyncio.gather(
        *(store.claim_outbox(f"o{n}", NOW_MS, LEASE_MS, 7) for n in range(8))
    )
    ids = [item.id for claim in claims for item in claim]
    assert len(ids) == len(set(ids)) == 40


async def test_a_queued_delivery_outlives_retention_until_it_is_sent(store: Store) -> None:
    await store.record_delivery(b'{"plain":1}', NOW_MS, [], None)  # before any relay
    await store.add_relay("http://127.0.0.1:9/", [], None, NOW_MS)
    await relayed(store, b'{"queued":1}', MESSAGES)
    assert await store.prune_deliveries(NOW_MS + 1, 100) == 1  # only the one no relay waits for
    [item] = await store.claim_outbox("a", NOW_MS, LEASE_MS, 10)
    assert await store.finish_outbox(item, "a", NOW_MS, None, None)
    assert await store.prune_deliveries(NOW_MS + 1, 100) == 1


async def test_only_failed_rows_are_pruned(store: Store) -> None:
    await store.add_relay("http://127.0.0.1:9/", [], None, NOW_MS)
    await relayed(store, b'{"a":1}', MESSAGES)
    await relayed(store, b'{"a":2}', MESSAGES)
    first, _ = await store.claim_outbox("a", NOW_MS, LEASE_MS, 10)
    await store.finish_outbox(first, "a", NOW_MS, "HTTP 500", None)
    assert await store.prune_outbox(NOW_MS + 1, 100) == 1
    [summary] = await store.list_relays()
    assert (summary.queued, summary.failed) == (1, 0)


async def test_removing_a_relay_drops_its_rows(store: Store) -> None:
    relay = await store.add_relay("http://127.0.0.1:9/", [], None, NOW_MS)
    await relayed(store, b"{}", MESSAGES)
    await store.remove_relay(relay.id)
    assert await store.list_relays() == []
    assert await rows(store, "SELECT id FROM outbox") == []
    with pytest.raises(NotFound):
        await store.remove_relay(relay.id)
    with pytest.raises(NotFound):
        await store.retry_relay(relay.id, NOW_MS)


async def test_webhook_changes_and_relays_commit_together(store: Store, tenant: Tenant) -> None:
    await store.add_relay("http://127.0.0.1:9/", [], None, NOW_MS)
    result = await store.record_delivery(
        b'{"t":1}', NOW_MS, [status_change("APPROVED")], None, "sha256=s", TEMPLATES
    )
    assert (result.applied, result.relayed) == (1, 1)
    [item] = await store.claim_outbox("a", NOW_MS, LEASE_MS, 10)
    assert isinstance(item, OutboxItem) and item.item_id == result.delivery_id
