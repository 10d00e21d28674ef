"""Signed outbound webhooks (design section 11): events reach a real receiver on loopback,
signed so that the Standard Webhooks reference library verifies them, retried on schedule,
and a subscription that keeps failing is disabled.

Real stores on both backends, the dispatcher of tests/test_dispatch.py over a session with
safe_urls' connector, and a clock moved by hand (starting at the real time, so the reference
library's timestamp tolerance accepts what is sent first).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from standardwebhooks import Webhook

from service import meta_webhooks, notifications
from service.assembly import assembled
from service.config import Settings
from service.crypto import TokenCipher
from service.dispatch import Dispatcher, DispatchReport
from service.metrics import Metrics
from service.signing import new_secret
from service.storage import Store, Subscription
from service.template_json import template_json
from service.times import iso, now_ms

from .conftest import NOW_MS, Tenant, add_template
from .test_dispatch import (  # noqa: F401 (fixtures used here)
    ATTEMPTS,
    DAY_S,
    Clock,
    Receipt,
    Receiver,
    deliver,
    dispatcher_fixture,
    receiver_fixture,
    webhooks_fixture,
)

PROVIDER_ID = "1689556908129832"
NAME, LANGUAGE = "order_confirmation", "en_US"
ENTRY_TIME = NOW_MS // 1000
HOUR_S = 3600


@pytest.fixture
def clock() -> Clock:
    """The dispatcher's clock, from the real time in whole seconds."""
    return Clock(now_ms() // 1000 * 1000)


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
def subscribe(
    store: Store, settings: Settings, tenant: Tenant, receiver: Receiver, secret: str
) -> Callable[..., Any]:
    """Adds a subscription of the tenant's workspace to `receiver` at `path`."""
    cipher = TokenCipher(settings.encryption_keys)

    async def add(path: str = "/hook", events: tuple[str, ...] = ()) -> Subscription:
        url = receiver.url + path
        return await store.add_subscription(
            tenant.workspace_id, url, events, cipher.encrypt(secret), NOW_MS
        )

    return add


async def status_change(
    store: Store, tenant: Tenant, event: str, entry_time: int = ENTRY_TIME, template: str = ""
) -> None:
    """A signed status webhook for a template (the registered one unless named) is stored."""
    body = meta_webhooks.status_delivery(
        waba_id=tenant.waba_id, template_id=template or PROVIDER_ID, event=event, name=NAME,
        language=LANGUAGE, entry_time=entry_time,
    )  # fmt: skip
    await deliver(store, body, entry_time * 1000 + 500)


async def quality_change(store: Store, tenant: Tenant, score: str) -> None:
    change = meta_webhooks.quality_change(meta_webhooks.meta_id(PROVIDER_ID), NAME, LANGUAGE, score)
    entry = meta_webhooks.entry(tenant.waba_id, ENTRY_TIME + 60, change)
    await deliver(store, meta_webhooks.encode(meta_webhooks.delivery(entry)), NOW_MS + 60_000)


def document(receipt: Receipt) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(receipt.body)
    return found


def types(receipts: list[Receipt]) -> list[str]:
    return [document(r)["type"] for r in sorted(receipts, key=history_id)]


def history_id(receipt: Receipt) -> int:
    found: int = document(receipt)["data"]["history_id"]
    return found


# --- the payload and its signature --------------------------------------------------------


async def test_a_status_change_reaches_the_receiver_signed_as_standard_webhooks_verify(
    store: Store,
    tenant: Tenant,
    receiver: Receiver,
    dispatcher: Callable[..., Dispatcher],
    subscribe: Callable[..., Any],
    secret: str,
) -> None:
    template_id = await add_template(store, tenant, PROVIDER_ID, name=NAME, language=LANGUAGE)
    await subscribe()  # after the template's CREATED row: only later events reach it
    await status_change(store, tenant, "APPROVED")
    metrics = Metrics()

    assert await dispatcher(metrics=metrics).run_once() == DispatchReport(
        claimed=1, sent=1, queued=1
    )

    [receipt] = receiver.receipts
    assert receipt.headers["Content-Type"] == "application/json"
    verified = Webhook(secret).verify(receipt.body, receipt.headers)
    assert verified == document(receipt)
    [*_, row] = await store.template_history(tenant.workspace_id, template_id) or []
    template = await store.get_template(tenant.workspace_id, template_id)
    assert template is not None
    assert verified == {
        "type": "template.status_changed",
        "timestamp": iso(row.row.received_at),
        "data": {
            "workspace_id": tenant.workspace_id, "history_id": row.id, "source": "webhook",
            "event": "APPROVED", "event_time": iso(ENTRY_TIME * 1000), "reason": row.row.reason,
            "previous": {
                "status": "PENDING", "flagged": False, "quality_score": None,
                "category": "UTILITY",
            },
            "template": template_json(template),
        },
    }  # fmt: skip
    assert receipt.headers["webhook-id"] == f"evt_{row.id}"
    assert b" " not in receipt.body  # compact
    sent = {"kind": "notification", "result": "sent"}
    assert metrics.registry.get_sample_value(ATTEMPTS, sent) == 1


async def test_a_template_first_known_from_a_webhook_is_created_then_changes_status(
    store: Store,
    tenant: Tenant,
    receiver: Receiver,
    dispatcher: Callable[..., Dispatcher],
    subscribe: Callable[..., Any],
) -> None:
    await subscribe()
    await status_change(store, tenant, "APPROVED", template="777000111")

    assert (await dispatcher().run_once()).sent == 2

    created, changed = sorted(receiver.receipts, key=history_id)
    assert types([created, changed]) == ["template.created", "template.status_changed"]
    assert document(created)["data"]["previous"] is None
    assert document(created)["data"]["template"]["provider_id"] == "777000111"
    assert document(created)["data"]["template"]["name"] == NAME
    assert document(changed)["data"]["template"]["status"] == "APPROVED"
    assert history_id(created) < history_id(changed)


# --- which events are sent ------------------------------------------------------------------


async def test_a_subscription_gets_only_the_event_types_it_asked_for(
    store: Store,
    tenant: Tenant,
    receiver: Receiver,
    dispatcher: Callable[..., Dispatcher],
    subscribe: Callable[..., Any],
) -> None:
    await add_template(store, tenant, PROVIDER_ID, name=NAME, language=LANGUAGE)
    await subscribe("/all")
    await subscribe("/quality", ("template.quality_changed",))
    await status_change(store, tenant, "APPROVED")
    await quality_change(store, tenant, "YELLOW")

    assert (await dispatcher().run_once()).sent == 3

    assert types(receiver.at("/all")) == ["template.status_changed", "template.quality_changed"]
    assert types(receiver.at("/quality")) == ["template.quality_changed"]


async def test_duplicate_and_stale_webhook_events_send_nothing(
    store: Store,
    tenant: Tenant,
    receiver: Receiver,
    dispatcher: Callable[..., Dispatcher],
    subscribe: Callable[..., Any],
) -> None:
    await add_template(store, tenant, PROVIDER_ID, name=NAME, language=LANGUAGE)
    await subscribe()
    await status_change(store, tenant, "APPROVED")
    sender = dispatcher()
    assert (await sender.run_once()).sent == 1

    await status_change(store, tenant, "APPROVED")  # Meta's retry of the same delivery
    await status_change(store, tenant, "REJECTED", entry_time=ENTRY_TIME - 60)  # stale

    assert await sender.run_once() == DispatchReport()
    assert len(receiver.receipts) == 1


async def test_another_workspaces_events_and_earlier_ones_are_not_sent(
    store: Store,
    tenant: Tenant,
    receiver: Receiver,
    dispatcher: Callable[..., Dispatcher],
    subscribe: Callable[..., Any],
    settings: Settings,
    secret: str,
) -> None:
    await add_template(store, tenant, PROVIDER_ID, name=NAME, language=LANGUAGE)
    await status_change(store, tenant, "APPROVED")  # before the subscription: not sent
    other = await store.create_workspace("Other", NOW_MS)
    cipher = TokenCipher(settings.encryption_keys)
    await store.add_subscription(other.id, receiver.url + "/other", (), cipher.encrypt(secret), 1)
    await subscribe()
    await status_change(store, tenant, "PAUSED", entry_time=ENTRY_TIME + 60)

    assert (await dispatcher().run_once()).sent == 1
    [receipt] = receiver.receipts
    assert receipt.path == "/hook" and document(receipt)["data"]["event"] == "PAUSED"


# --- retries and the deliveries log ---------------------------------------------------------


async def test_failures_are_retried_on_schedule_with_a_stable_id_and_fresh_timestamps(
    store: Store,
    tenant: Tenant,
    receiver: Receiver,
    dispatcher: Callable[..., Dispatcher],
    subscribe: Callable[..., Any],
    clock: Clock,
    secret: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await add_template(store, tenant, PROVIDER_ID, name=NAME, language=LANGUAGE)
    subscription = await subscribe("/hook?token=query-secret")
    await status_change(store, tenant, "APPROVED")
    attempts = len(notifications.RETRY_SCHEDULE_S) + 1
    receiver.statuses = [500] * attempts
    metrics = Metrics()
    sender = dispatcher(metrics=metrics)

    assert (await sender.run_once()).retried == 1
    Webhook(secret).verify(receiver.receipts[0].body, receiver.receipts[0].headers)
    for delay_s in notifications.RETRY_SCHEDULE_S:
        clock.advance(delay_s - 0.001)
        assert (await sender.run_once()).claimed == 0, f"due before {delay_s} s"
        clock.advance(0.001)
        report = await sender.run_once()
        assert report.retried + report.failed == 1, f"not due after {delay_s} s"
    assert report.failed == 1  # the last attempt: failed for good
    clock.advance(DAY_S)
    assert await sender.run_once() == DispatchReport()

    assert len(receiver.receipts) == attempts
    assert len({r.body for r in receiver.receipts}) == 1
    assert len({r.headers["webhook-id"] for r in receiver.receipts}) == 1
    stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.receipts]
    gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    assert gaps == [round(delay) for delay in notifications.RETRY_SCHEDULE_S]

    log = await store.subscription_attempts(tenant.workspace_id, subscription.id, 100)
    assert [a.attempt for a in log] == list(range(attempts, 0, -1))  # newest first
    assert {(a.status_code, a.error, a.event_type) for a in log} == {
        (500, "HTTP 500", "template.status_changed")
    }
    assert log[0].next_attempt_at is None and log[1].next_attempt_at == log[0].at
    [listed] = await store.list_subscriptions(tenant.workspace_id)
    assert listed.enabled and listed.failing_since == log[-1].at  # 27 h of failures: enabled
    failed = {"kind": "notification", "result": "failed"}
    assert metrics.registry.get_sample_value(ATTEMPTS, failed) == 1
    for hidden in ("query-secret", secret, receiver.receipts[0].body.decode()[:40]):
        assert hidden not in caplog.text


def test_retry_delays_follow_the_schedule_within_ten_percent() -> None:
    def delay_s(failures: int, jitter: float) -> float | None:
        at = notifications.retry_at(failures, NOW_MS, NOW_MS, 7 * DAY_S * 1000, jitter)
        return None if at is None else (at - NOW_MS) / 1000

    assert [delay_s(n, 0.5) for n in range(1, 9)] == [
        5, 300, 1800, 2 * HOUR_S, 5 * HOUR_S, 10 * HOUR_S, 10 * HOUR_S, None,
    ]  # fmt: skip
    assert delay_s(1, 0.0) == pytest.approx(4.5)
    assert delay_s(7, 0.999999) == pytest.approx(11 * HOUR_S, rel=1e-5)
    past_max_age = notifications.retry_at(1, NOW_MS, NOW_MS + 3_600_001, 3_600_000, 0.5)
    assert past_max_age is None


async def test_a_success_is_logged_and_clears_the_failing_state(
    store: Store,
    tenant: Tenant,
    receiver: Receiver,
    dispatcher: Callable[..., Dispatcher],
    subscribe: Callable[..., Any],
    clock: Clock,
) -> None:
    await add_template(store, tenant, PROVIDER_ID, name=NAME, language=LANGUAGE)
    subscription = await subscribe()
    await status_change(store, tenant, "APPROVED")
    receiver.statuses = [503]
    sender = dispatcher()
    await sender.run_once()
    clock.advance(5)
    assert (await sender.run_once()).sent == 1

    second, first = await store.subscription_attempts(tenant.workspace_id, subscription.id, 10)
    assert (first.attempt, first.status_code, first.error) == (1, 503, "HTTP 503")
    assert first.next_attempt_at == first.at + 5000
    assert (second.attempt, second.status_code, second.error) == (2, 200, None)
    assert second.next_attempt_at is None and second.at == clock.now_ms
    [listed] = await store.list_subscriptions(tenant.workspace_id)
    assert (listed.last_success_at, listed.failing_since) == (clock.now_ms, None)


async def test_an_event_whose_template_was_removed_fails_without_a_request(
    store: Store,
    tenant: Tenant,
    receiver: Receiver,
    dispatcher: Callable[..., Dispatcher],
    subscribe: Callable[..., Any],
    clock: Clock,
) -> None:
    template_id = await add_template(store, tenant, PROVIDER_ID, name=NAME, language=LANGUAGE)
    subscription = await subscribe()
    await status_change(store, tenant, "APPROVED")
    receiver.statuses = [500]
    sender = dispatcher()
    await sender.run_once()
    await store.remove_template(tenant.workspace_id, template_id)
    clock.advance(5)

    assert (await sender.run_once()).failed == 1
    assert len(receiver.receipts) == 1
    latest, _ = await store.subscription_attempts(tenant.workspace_id, subscription.id, 10)
    assert (latest.error, latest.next_attempt_at) == (notifications.EVENT_GONE, None)


# --- disabling --------------------------------------------------------------------------------


async def test_410_disables_at_once_and_enabling_delivers_what_came_meanwhile(
    store: Store,
    tenant: Tenant,
    receiver: Receiver,
    dispatcher: Callable[..., Dispatcher],
    subscribe: Callable[..., Any],
    clock: Clock,
) -> None:
    await add_template(store, tenant, PROVIDER_ID, name=NAME, language=LANGUAGE)
    subscription = await subscribe()
    await status_change(store, tenant, "APPROVED")
    receiver.statuses = [410]
    sender = dispatcher()

    assert await sender.run_once() == DispatchReport(claimed=1, retried=1, queued=1, disabled=1)
    [listed] = await store.list_subscriptions(tenant.workspace_id)
    assert (listed.enabled, listed.disabled_reason) == (False, "410 Gone from the URL")
    await status_change(store, tenant, "PAUSED", entry_time=ENTRY_TIME + 60)  # while disabled
    clock.advance(HOUR_S)
    assert await sender.run_once() == DispatchReport()
    assert len(receiver.receipts) == 1

    enabled = await store.enable_subscription(tenant.workspace_id, subscription.id)
    assert (enabled.enabled, enabled.disabled_reason, enabled.failing_since) == (True, None, None)
    assert (await sender.run_once()).sent == 2

    first, *again = sorted(receiver.receipts, key=lambda r: int(r.headers["webhook-timestamp"]))
    assert sorted(document(r)["data"]["event"] for r in again) == ["APPROVED", "PAUSED"]
    assert first.headers["webhook-id"] in {r.headers["webhook-id"] for r in again}


async def test_five_days_of_failures_without_a_success_disable_the_subscription(
    store: Store,
    tenant: Tenant,
    receiver: Receiver,
    dispatcher: Callable[..., Dispatcher],
    subscribe: Callable[..., Any],
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await add_template(store, tenant, PROVIDER_ID, name=NAME, language=LANGUAGE)
    subscription = await subscribe()
    await status_change(store, tenant, "APPROVED")
    receiver.statuses = [500] * 3
    sender = dispatcher()
    assert (await sender.run_once()).retried == 1

    clock.advance(5 * DAY_S - 1)  # the second attempt: failing for a second less than 5 days
    assert await sender.run_once() == DispatchReport(claimed=1, retried=1)
    clock.advance(notifications.RETRY_SCHEDULE_S[1])
    assert await sender.run_once() == DispatchReport(claimed=1, retried=1, disabled=1)

    [listed] = await store.list_subscriptions(tenant.workspace_id)
    assert (listed.enabled, listed.disabled_reason) == (False, "failing for 5 days")
    assert f"webhook subscription {subscription.id} disabled: failing for 5 days" in caplog.text
    await status_change(store, tenant, "PAUSED", entry_time=ENTRY_TIME + 60)
    clock.advance(DAY_S)
    assert await sender.run_once() == DispatchReport()
    assert len(receiver.receipts) == 3


# --- the outbound URL policy, as serve and `dispatch` assemble it -------------------------------


@pytest.mark.parametrize("allow_private", [False, True])
async def test_a_loopback_url_is_refused_at_connect_time_unless_private_addresses_are_allowed(
    store: Store,
    settings: Settings,
    tenant: Tenant,
    receiver: Receiver,
    subscribe: Callable[..., Any],
    allow_private: bool,
) -> None:
    await add_template(store, tenant, PROVIDER_ID, name=NAME, language=LANGUAGE)
    subscription = await subscribe()  # as if registered while allowed, or DNS had changed
    await status_change(store, tenant, "APPROVED")

    async with assembled(replace(settings, webhooks_allow_private=allow_private)) as parts:
        report = await parts.dispatcher.run_once()

    [attempt] = await store.subscription_attempts(tenant.workspace_id, subscription.id, 10)
    if allow_private:
        assert (report.sent, len(receiver.receipts), attempt.error) == (1, 1, None)
        return
    assert (report.retried, receiver.receipts) == (1, [])
    assert attempt.status_code is None and attempt.error is not None
    assert "refusing to connect to 127.0.0.1, a loopback address" in attempt.error
    assert "TEMPLATE_SYNC_WEBHOOKS_ALLOW_PRIVATE=true" in attempt.error


async def test_the_dispatcher_logs_no_secret_when_sending_and_names_events_by_id(
    store: Store,
    tenant: Tenant,
    receiver: Receiver,
    dispatcher: Callable[..., Dispatcher],
    subscribe: Callable[..., Any],
    secret: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="service.dispatch")
    await add_template(store, tenant, PROVIDER_ID, name=NAME, language=LANGUAGE)
    subscription = await subscribe()
    await status_change(store, tenant, "APPROVED")
    receiver.statuses = [502]

    await dispatcher().run_once()

    [receipt] = receiver.receipts
    event = receipt.headers["webhook-id"]
    assert f"webhook {subscription.id} of {event}, attempt 1: HTTP 502" in caplog.text
    for hidden in (secret, receipt.headers["webhook-signature"], receiver.url):
        assert hidden not in caplog.text
