"""The outbox's store methods (storage/outbox.py) on both backends: relay rows queued in the
delivery's commit, leases, outcomes, retry, pruning."""

from __future__ import annotations

import asyncio

import pytest

from service.config import Settings
from service.storage import NotFound, OutboxItem, Previous, Store, TemplateFilter

from .conftest import NOW_MS, Tenant, make_tenant
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


async def test_a_capped_claim_passes_over_a_busy_targets_rows_for_the_others(
    store: Store,
) -> None:
    busy = await store.add_relay("http://127.0.0.1:9/busy", ["busy"], None, NOW_MS)
    other = await store.add_relay("http://127.0.0.1:9/other", ["other"], None, NOW_MS)
    for n in range(10):  # all due before the other target's
        await relayed(store, f'{{"b":{n}}}'.encode(), frozenset({"busy"}), at=NOW_MS - 100 + n)
    for n in range(3):
        await relayed(store, f'{{"o":{n}}}'.encode(), frozenset({"other"}))

    claimed = await store.claim_outbox("a", NOW_MS, LEASE_MS, 4, 2, busy={busy.id: 1})
    assert [item.target_id for item in claimed] == [busy.id, other.id, other.id]
    assert await store.claim_outbox("a", NOW_MS, LEASE_MS, 4, 2, {busy.id: 2, other.id: 2}) == []
    rest = await store.claim_outbox("b", NOW_MS, LEASE_MS, 100)  # passed over, not leased
    assert [item.target_id for item in rest] == [busy.id] * 9 + [other.id]


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


# --- notifications (storage/notifications.py) ------------------------------------------


async def subscribe(store: Store, tenant: Tenant, events: list[str] | None = None) -> str:
    added = await store.add_subscription(
        tenant.workspace_id, "https://app.example/hook", events or [], "secret-enc", NOW_MS
    )
    return added.id


async def change(store: Store, event: str, at: int, template_id: str = "42") -> None:
    await store.record_delivery(
        f'{{"{event}":{at}}}'.encode(), NOW_MS, [status_change(event, at, template_id)], None
    )


async def test_fan_out_queues_each_applied_event_once_for_each_taker(
    store: Store, tenant: Tenant
) -> None:
    await change(store, "PENDING", 1751247500)  # before any subscription: never sent
    everything = await subscribe(store, tenant)
    statuses = await subscribe(store, tenant, ["template.status_changed"])
    await change(store, "APPROVED", 1751247600)
    await change(store, "APPROVED", 1751247600)  # Meta's retry: a duplicate, no row
    await change(store, "PENDING", 1751247550)  # stale: a row, not applied
    await change(store, "REJECTED", 1751247700, template_id="43")  # created, then status
    assert await store.fan_out(NOW_MS, 100) == 3 + 2
    assert await store.fan_out(NOW_MS, 100) == 0  # the cursors moved
    claimed = await store.claim_outbox("a", NOW_MS, LEASE_MS, 100)
    assert {(i.kind, i.url) for i in claimed} == {("notification", "https://app.example/hook")}
    by_target: dict[str, list[str]] = {everything: [], statuses: []}
    for item in claimed:
        found = await store.notification(item)
        assert found is not None
        by_target[item.target_id].append(f"{found.template.provider_id} {found.event.row.event}")
    assert sorted(by_target[everything]) == ["42 APPROVED", "43 CREATED", "43 REJECTED"]
    assert sorted(by_target[statuses]) == ["42 APPROVED", "43 REJECTED"]


async def test_a_notification_says_what_the_template_was_before(
    store: Store, tenant: Tenant
) -> None:
    await subscribe(store, tenant)
    await change(store, "PENDING", 1751247500)
    await change(store, "FLAGGED", 1751247600)
    await store.fan_out(NOW_MS, 100)
    created, pending, flagged = [
        await store.notification(item)
        for item in await store.claim_outbox("a", NOW_MS, LEASE_MS, 10)
    ]
    assert created is not None and created.previous is None  # its first row
    assert pending is not None and flagged is not None
    assert (pending.previous and pending.previous.status) == "UNKNOWN"
    assert flagged.previous == Previous("PENDING", False, None, None)
    assert flagged.template.flagged and flagged.template.status == "PENDING"


async def test_a_disabled_subscription_waits_and_gets_everything_when_enabled(
    store: Store, tenant: Tenant
) -> None:
    subscription = await subscribe(store, tenant)
    await change(store, "PENDING", 1751247500)
    await store.fan_out(NOW_MS, 100)
    first, second = await store.claim_outbox("a", NOW_MS, LEASE_MS, 10)
    assert await store.record_notification(first, "a", NOW_MS, 410, "HTTP 410", None, "410 Gone")
    [listed] = await store.list_subscriptions(tenant.workspace_id)
    assert (listed.enabled, listed.disabled_reason, listed.failing_since) == (
        False, "410 Gone", NOW_MS,
    )  # fmt: skip
    assert await store.record_notification(second, "a", NOW_MS, None, "timeout", NOW_MS, None)
    await change(store, "APPROVED", 1751247600)  # while disabled
    assert await store.fan_out(NOW_MS, 100) == 0
    assert await store.claim_outbox("a", NOW_MS + 1, LEASE_MS, 10) == []  # its rows wait
    enabled = await store.enable_subscription(tenant.workspace_id, subscription)
    assert (enabled.enabled, enabled.disabled_reason, enabled.failing_since) == (True, None, None)
    assert await store.fan_out(NOW_MS, 100) == 1  # the change made while it was disabled
    assert len(await store.claim_outbox("a", NOW_MS + 1, LEASE_MS, 10)) == 2
    attempts = await store.subscription_attempts(tenant.workspace_id, subscription, 10)
    assert [(a.attempt, a.status_code, a.error, a.event_type) for a in attempts] == [
        (1, None, "timeout", "template.status_changed"),
        (1, 410, "HTTP 410", "template.created"),
    ]


async def test_a_success_clears_the_failing_time(store: Store, tenant: Tenant) -> None:
    await subscribe(store, tenant)
    await change(store, "PENDING", 1751247500)
    await store.fan_out(NOW_MS, 100)
    first, second = await store.claim_outbox("a", NOW_MS, LEASE_MS, 10)
    await store.record_notification(first, "a", NOW_MS, 503, "HTTP 503", NOW_MS + 5000, None)
    await store.record_notification(second, "a", NOW_MS + 9, 204, None, None, None)
    [listed] = await store.list_subscriptions(tenant.workspace_id)
    assert (listed.failing_since, listed.last_success_at) == (None, NOW_MS + 9)
    assert not await store.record_notification(second, "b", NOW_MS, 204, None, None, None)


async def test_subscriptions_belong_to_their_workspace(
    store: Store, settings: Settings, tenant: Tenant
) -> None:
    subscription = await subscribe(store, tenant)
    other = await make_tenant(store, settings, waba_id="777")
    assert await store.list_subscriptions(other.workspace_id) == []
    for call in (
        store.remove_subscription(other.workspace_id, subscription),
        store.enable_subscription(other.workspace_id, subscription),
        store.subscription_attempts(other.workspace_id, subscription, 10),
    ):
        with pytest.raises(NotFound):
            await call
    await change(store, "PENDING", 1751247500)
    await store.fan_out(NOW_MS, 100)
    await store.remove_subscription(tenant.workspace_id, subscription)
    assert await store.claim_outbox("a", NOW_MS, LEASE_MS, 10) == []  # its queue went too


async def test_an_event_whose_template_was_removed_is_gone(store: Store, tenant: Tenant) -> None:
    await subscribe(store, tenant)
    await change(store, "PENDING", 1751247500)
    await store.fan_out(NOW_MS, 100)
    [template], _ = await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 10)
    await store.remove_template(tenant.workspace_id, template.id)
    for item in await store.claim_outbox("a", NOW_MS, LEASE_MS, 10):
        assert await store.notification(item) is None


async def test_fan_out_reads_at_most_its_limit_and_goes_on_next_time(
    store: Store, tenant: Tenant
) -> None:
    await subscribe(store, tenant)
    for n in range(5):
        await change(store, "PENDING" if n % 2 else "APPROVED", 1751247500 + n)
    assert await store.fan_out(NOW_MS, 2) == 2
    assert await store.fan_out(NOW_MS, 2) == 2
    assert await store.fan_out(NOW_MS, 2) == 2  # created + 5 changes = 6
    assert await store.fan_out(NOW_MS, 2) == 0


async def test_workspace_events_replay_after_an_id_in_order(
    store: Store, settings: Settings, tenant: Tenant
) -> None:
    await change(store, "PENDING", 1751247500)
    await change(store, "APPROVED", 1751247600)
    await change(store, "APPROVED", 1751247600)  # a duplicate: no event
    await change(store, "REJECTED", 1751247700, template_id="43")
    other = await make_tenant(store, settings, waba_id="777")
    everything = await store.events_after(0, 100, tenant.workspace_id)
    assert [(e.template.provider_id, e.event.row.event) for e in everything] == [
        ("42", "CREATED"), ("42", "PENDING"), ("42", "APPROVED"),
        ("43", "CREATED"), ("43", "REJECTED"),
    ]  # fmt: skip
    ids = [e.event.id for e in everything]
    assert ids == sorted(ids)
    later = await store.events_after(ids[1], 2, tenant.workspace_id)
    assert [e.event.id for e in later] == ids[2:4]
    one = await store.events_after(0, 100, tenant.workspace_id, everything[3].template.id)
    assert [e.event.row.event for e in one] == ["CREATED", "REJECTED"]
    assert await store.events_after(0, 100, other.workspace_id) == []


async def test_attempts_ending_together_are_each_recorded_with_their_own_lease(
    store: Store, tenant: Tenant
) -> None:
    """Many attempts at once, as a dispatcher with many sends in flight records them:
    relays and notifications of two subscriptions mixed, one whose lease was lost."""
    await store.add_relay("http://127.0.0.1:9/all", [], None, NOW_MS)
    subscriptions = [await subscribe(store, tenant) for _ in range(2)]
    for n in range(30):
        await change(store, "PENDING", 1751247500 + n, template_id=str(100 + n))
    assert await store.fan_out(NOW_MS, 1000) == 2 * 2 * 30  # CREATED and PENDING, twice
    items = await store.claim_outbox("a", NOW_MS, LEASE_MS, 1000)
    assert len(items) == 30 + 120
    stolen = items[7]
    outcomes = [
        (item, "b" if item is stolen else "a", None if n % 3 else "HTTP 503")
        for n, item in enumerate(items)
    ]

    async def record(item: OutboxItem, owner: str, error: str | None) -> bool:
        retry_at = NOW_MS + 5_000 if error else None
        if item.kind == "relay":
            return await store.finish_outbox(item, owner, NOW_MS + 1, error, retry_at)
        code = 503 if error else 204
        return await store.record_notification(item, owner, NOW_MS + 1, code, error, retry_at, None)

    recorded = await asyncio.gather(*(record(*o) for o in reversed(outcomes)))
    assert recorded[::-1] == [item is not stolen for item in items]
    left = await rows(store, "SELECT id, attempts, lease_owner FROM outbox ORDER BY id")
    retried = {o[0].id for o in outcomes if o[2] and o[0] is not stolen}
    assert {r["id"] for r in left} == retried | {stolen.id}
    assert all((r["attempts"], r["lease_owner"]) == (1, None) for r in left if r["id"] in retried)
    logged = 0
    for subscription in subscriptions:
        logged += len(await store.subscription_attempts(tenant.workspace_id, subscription, 500))
    assert logged == 120 - (stolen.kind == "notification")
