"""The dispatcher: relays reach a real receiver over loopback, exactly as Meta signed them.

Real stores on both backends, a real aiohttp receiver on loopback, an injected clock (no
waiting for backoff delays); serve and the CLI run for real.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from service import meta_webhooks
from service.config import ConfigError, Settings
from service.crypto import TokenCipher
from service.dispatch import (
    DEPTH_EVERY_S,
    LEASE_S,
    SEND_TIMEOUT_S,
    STOP_TIMEOUT_S,
    Dispatcher,
    DispatchReport,
)
from service.metrics import Metrics
from service.relays import FIRST_RETRY_S, MAX_RETRY_S, retry_at
from service.retention import DAY_MS, prune
from service.safe_urls import safe_session_connector
from service.signing import new_secret
from service.simulator import serving_app
from service.storage import DeliveryResult, RelaySummary, Store, open_store
from service.times import now_ms
from service.webhooks import parse_delivery, verify_signature

from .conftest import APP_SECRET, NOW_MS, WABA_ID, Tenant, fixture_body, serving, sign
from .service_process import run_cli, service_env
from .test_app import CuttableProxy, proxied_settings  # noqa: F401 (a fixture used here)
from .waiting import eventually

DAY_S = DAY_MS // 1000
ATTEMPTS = "template_sync_outbox_attempts_total"
MESSAGES_BODY = "webhook-batch-mixed.json"  # has a `messages` change besides template ones
TEMPLATES_BODY = "webhook-status-approved.json"  # template changes only
CHUNK = b"x" * 65_536
ENDLESS_BYTES = 1 << 30  # an endless body stops here, should a client read it all


# --- a receiver on loopback, and the parts a dispatcher runs on -----------------------------


@dataclass
class Receipt:
    path: str
    body: bytes
    headers: dict[str, str]
    at_s: float = 0.0  # when it arrived (time.monotonic)


@dataclass
class Receiver:
    """An application's webhook endpoint: records each request, answers the statuses it is
    told in turn (then 200); while `gate` is clear, requests wait before being answered, and
    each is answered `delay_s` after that, with a body that never ends if `endless`. Counts
    the requests it holds at once, per path and in all, and notes when each ended."""

    url: str = ""
    receipts: list[Receipt] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    delay_s: float = 0.0
    endless: bool = False
    written: int = 0  # bytes of endless bodies written before the client went
    ended_s: list[float] = field(default_factory=list)  # answered, or dropped by the client
    in_flight: Counter[str] = field(default_factory=Counter)
    most_in_flight: Counter[str] = field(default_factory=Counter)  # per path; "" in all

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers = {name: ", ".join(request.headers.getall(name)) for name in request.headers}
        arrived = Receipt(request.path, await request.read(), headers, time.monotonic())
        self.receipts.append(arrived)
        self._count(request.path, 1)
        try:
            await self.gate.wait()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)  # a slow application, not a wait of the test
            if self.endless:
                return await self._stream(request)
            status = self.statuses.pop(0) if self.statuses else 200
            location = {"Location": "/moved"} if 300 <= status < 400 else None
            return web.Response(status=status, headers=location)
        finally:
            self._count(request.path, -1)
            self.ended_s.append(time.monotonic())

    def _count(self, path: str, change: int) -> None:
        for key in (path, ""):
            self.in_flight[key] += change
            self.most_in_flight[key] = max(self.most_in_flight[key], self.in_flight[key])

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """200, then a body written until the client goes (or ENDLESS_BYTES, if it reads)."""
        response = web.StreamResponse()
        await response.prepare(request)
        with suppress(ConnectionError):
            while self.written < ENDLESS_BYTES:
                await response.write(CHUNK)
                self.written += len(CHUNK)
        return response

    def at(self, path: str) -> list[Receipt]:
        return [r for r in self.receipts if r.path == path]


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    """A Receiver served on a loopback port for the block's duration."""
    found = Receiver()
    found.gate.set()
    app = web.Application()
    app.router.add_post("/{path:.*}", found.handle)
    async with serving_app(app) as origin:
        found.url = origin
        try:
            yield found
        finally:
            found.gate.set()  # a send held at the gate ends before the server stops


@pytest.fixture(name="receiver")
async def receiver_fixture() -> AsyncIterator[Receiver]:
    async with receiving() as found:
        yield found


class Clock:
    """Wall time in seconds, moved by hand."""

    def __init__(self, now_ms: int = NOW_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> float:
        return self.now_ms / 1000

    def advance(self, seconds: float) -> None:
        self.now_ms += round(seconds * 1000)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(name="webhooks")
async def webhooks_fixture() -> AsyncIterator[aiohttp.ClientSession]:
    """The notifications' session as assembly.py builds it, internal addresses allowed (the
    receivers of tests are on loopback)."""
    connector = safe_session_connector(allow_private=True)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as client:
        yield client


@pytest.fixture(name="dispatcher")
def dispatcher_fixture(
    store: Store,
    session: aiohttp.ClientSession,
    webhooks: aiohttp.ClientSession,
    settings: Settings,
    clock: Clock,
) -> Callable[..., Dispatcher]:
    """Builds a dispatcher over `store` (or another connection), jitter fixed at none."""

    def build(on: Store | None = None, **options: Any) -> Dispatcher:
        options = {
            "owner": "replica-a", "max_age_s": 7 * DAY_S, "tick_s": 0.01,
            "webhook_session": webhooks, "cipher": TokenCipher(settings.encryption_keys),
            **options,
        }  # fmt: skip
        metrics = options.pop("metrics", None) or Metrics()
        return Dispatcher(on or store, session, metrics, clock=clock, jitter=lambda: 0.5, **options)

    return build


async def deliver(store: Store, body: bytes, at_ms: int = NOW_MS) -> DeliveryResult:
    """Store `body` as the webhook route does: parsed, with the signature Meta sent."""
    changes, _, fields = parse_delivery(body)
    return await store.record_delivery(body, at_ms, changes, None, sign(body), fields)


async def summary(store: Store) -> RelaySummary:
    [found] = await store.list_relays()
    return found


# --- the schedule: pure -------------------------------------------------------------------


def test_retries_start_near_five_seconds_double_and_stay_within_an_hour() -> None:
    max_age_ms = 7 * DAY_MS

    def delay_s(failures: int, jitter: float = 0.5) -> float:
        at = retry_at(failures, NOW_MS, NOW_MS + 1000, max_age_ms, jitter)
        assert at is not None
        return (at - NOW_MS - 1000) / 1000

    assert [delay_s(n) for n in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert delay_s(1, jitter=0.0) == pytest.approx(0.8 * FIRST_RETRY_S)
    assert delay_s(1, jitter=0.999999) == pytest.approx(1.2 * FIRST_RETRY_S, rel=1e-5)
    assert delay_s(11) == MAX_RETRY_S  # 5 s x 2^10 is past the cap
    assert delay_s(11, jitter=0.0) == pytest.approx(0.8 * MAX_RETRY_S)  # capped, still spread
    assert delay_s(11, jitter=0.99) == MAX_RETRY_S
    assert delay_s(10**6) == MAX_RETRY_S  # no overflow however many failures


def test_a_row_older_than_the_max_age_is_failed_for_good() -> None:
    age_ms = 3_600_000
    assert retry_at(3, NOW_MS, NOW_MS + age_ms, age_ms, 0.5) is not None  # at the limit
    assert retry_at(3, NOW_MS, NOW_MS + age_ms + 1, age_ms, 0.5) is None


def test_the_max_age_setting_defaults_to_a_week_and_must_be_positive() -> None:
    assert Settings.from_env({}, dotenv=None).outbox_max_age_s == 604_800
    variables = {"TEMPLATE_SYNC_OUTBOX_MAX_AGE_S": "3600", "TEMPLATE_SYNC_DISPATCH_TICK_S": "0.5"}
    parsed = Settings.from_env(variables, dotenv=None)
    assert (parsed.outbox_max_age_s, parsed.dispatch_tick_s) == (3600, 0.5)
    with pytest.raises(ConfigError, match="TEMPLATE_SYNC_OUTBOX_MAX_AGE_S must be between"):
        Settings.from_env({"TEMPLATE_SYNC_OUTBOX_MAX_AGE_S": "0"}, dotenv=None)


# --- attempts ------------------------------------------------------------------------------


async def test_the_receiver_gets_the_exact_bytes_and_verifies_meta_signature_unchanged(
    store: Store, receiver: Receiver, dispatcher: Callable[..., Dispatcher]
) -> None:
    await store.add_relay(receiver.url + "/hook", [], "app", NOW_MS)
    body = fixture_body(MESSAGES_BODY)
    result = await deliver(store, body)
    metrics = Metrics()

    report = await dispatcher(metrics=metrics).run_once()

    assert report == DispatchReport(claimed=1, sent=1)
    [receipt] = receiver.receipts
    assert receipt.body == body
    verify_signature(receipt.body, receipt.headers["X-Hub-Signature-256"], [APP_SECRET.encode()])
    assert receipt.headers["X-Hub-Signature-256"] == sign(body)
    assert receipt.headers["Content-Type"] == "application/json"
    assert receipt.headers["X-Template-Sync-Delivery"] == str(result.delivery_id)
    assert receipt.headers["X-Template-Sync-Attempt"] == "1"
    assert (await summary(store)).queued == 0
    sent = {"kind": "relay", "result": "sent"}
    assert metrics.registry.get_sample_value(ATTEMPTS, sent) == 1


async def test_a_failed_attempt_is_retried_after_its_backoff_with_the_same_delivery_id(
    store: Store,
    receiver: Receiver,
    dispatcher: Callable[..., Dispatcher],
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    relay = await store.add_relay(receiver.url + "/hook", [], None, NOW_MS)
    result = await deliver(store, fixture_body(TEMPLATES_BODY))
    receiver.statuses = [500]
    relays = dispatcher()

    assert (await relays.run_once()).retried == 1
    assert (await summary(store)).last_error == "HTTP 500"
    [warning] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert warning.getMessage() == (
        f"relay {relay.id} of delivery {result.delivery_id}, attempt 1: HTTP 500"
    )
    clock.advance(FIRST_RETRY_S - 0.001)
    assert await relays.run_once() == DispatchReport()  # not due yet
    clock.advance(0.001)
    assert await relays.run_once() == DispatchReport(claimed=1, sent=1)

    first, second = receiver.receipts
    assert first.body == second.body
    delivery = {r.headers["X-Template-Sync-Delivery"] for r in receiver.receipts}
    assert delivery == {str(result.delivery_id)}
    assert [r.headers["X-Template-Sync-Attempt"] for r in receiver.receipts] == ["1", "2"]


async def test_metrics_show_the_outbox_depth_and_the_delay_from_commit_to_receipt(
    store: Store, receiver: Receiver, dispatcher: Callable[..., Dispatcher], clock: Clock
) -> None:
    await store.add_relay(receiver.url + "/hook", [], None, NOW_MS)
    await deliver(store, fixture_body(TEMPLATES_BODY), NOW_MS)
    receiver.statuses = [500]
    metrics = Metrics()
    relays = dispatcher(metrics=metrics)
    clock.advance(2)

    def sample(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(f"template_sync_outbox_{name}", labels)

    assert (await relays.run_once()).retried == 1  # the pass read the depth before sending
    assert sample("rows", kind="relay", state="queued") == 1
    assert sample("rows", kind="relay", state="failed") == 0
    assert sample("oldest_age_seconds", kind="relay") == 2.0
    assert sample("oldest_age_seconds", kind="notification") == 0
    clock.advance(FIRST_RETRY_S)
    assert (await relays.run_once()).sent == 1
    assert sample("delivered_seconds_count", kind="relay") == 1
    assert sample("delivered_seconds_sum", kind="relay") == 2 + FIRST_RETRY_S
    assert sample("rows", kind="relay", state="queued") == 1  # read within DEPTH_EVERY_S
    clock.advance(DEPTH_EVERY_S)
    await relays.run_once()
    assert sample("rows", kind="relay", state="queued") == 0
    assert sample("oldest_age_seconds", kind="relay") == 0


async def test_after_the_max_age_a_row_is_failed_listed_and_requeued_by_retry(
    store: Store,
    receiver: Receiver,
    dispatcher: Callable[..., Dispatcher],
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    relay = await store.add_relay(receiver.url + "/hook", [], None, NOW_MS)
    await deliver(store, fixture_body(TEMPLATES_BODY))
    receiver.statuses = [503] * 3
    metrics = Metrics()
    relays = dispatcher(max_age_s=60, metrics=metrics)
    caplog.set_level(logging.INFO, logger="service.dispatch")

    assert (await relays.run_once()).retried == 1
    clock.advance(61)  # past the max age: this attempt is the last
    assert (await relays.run_once()).failed == 1
    clock.advance(MAX_RETRY_S * 10)
    assert await relays.run_once() == DispatchReport()  # failed rows are not tried again

    listed = await summary(store)
    assert (listed.queued, listed.failed, listed.last_error) == (0, 1, "HTTP 503")
    assert f"relay {relay.id} of delivery" in caplog.text and "failed for good" in caplog.text
    failed = {"kind": "relay", "result": "failed"}
    assert metrics.registry.get_sample_value(ATTEMPTS, failed) == 1

    assert await store.retry_relay(relay.id, clock.now_ms) == 1
    receiver.statuses = []
    assert (await relays.run_once()).sent == 1
    assert [r.headers["X-Template-Sync-Attempt"] for r in receiver.receipts] == ["1", "2", "1"]
    assert (await summary(store)).failed == 0


async def test_a_redirect_is_a_failure_and_is_not_followed(
    store: Store, receiver: Receiver, dispatcher: Callable[..., Dispatcher]
) -> None:
    await store.add_relay(receiver.url + "/hook", [], None, NOW_MS)
    await deliver(store, fixture_body(TEMPLATES_BODY))
    receiver.statuses = [307]

    assert (await dispatcher().run_once()).retried == 1
    assert [r.path for r in receiver.receipts] == ["/hook"]  # never /moved
    assert (await summary(store)).last_error == "HTTP 307"


async def test_a_receiver_that_never_answers_costs_one_bounded_attempt(
    store: Store, receiver: Receiver, dispatcher: Callable[..., Dispatcher]
) -> None:
    await store.add_relay(receiver.url + "/hook", [], None, NOW_MS)
    await deliver(store, fixture_body(TEMPLATES_BODY))
    receiver.gate.clear()  # holds every request: no answer, ever

    started = time.monotonic()
    async with asyncio.timeout(5):
        report = await dispatcher(send_timeout_s=0.2).run_once()

    assert report.retried == 1 and time.monotonic() - started < 2
    assert len(receiver.receipts) == 1
    assert (await summary(store)).last_error == "timeout after 0.2 s"


async def test_errors_and_logs_never_show_the_urls_secrets_the_body_or_the_signature(
    store: Store, dispatcher: Callable[..., Dispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    port = await unused_port()
    url = f"http://relay-user:url-password@127.0.0.1:{port}/hook?token=query-secret"
    await store.add_relay(url, [], None, NOW_MS)
    body = fixture_body(MESSAGES_BODY)
    await deliver(store, body)

    assert (await dispatcher().run_once()).retried == 1

    assert (await summary(store)).last_error == "connection refused"
    shown = caplog.text + str((await summary(store)).last_error)
    for secret in ("url-password", "query-secret", "relay-user", sign(body), body.decode()[:40]):
        assert secret not in shown


async def unused_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()
    return port


# --- replicas and leases ------------------------------------------------------------------


async def test_two_replicas_never_send_a_row_twice(
    store: Store, database_url: str, receiver: Receiver, dispatcher: Callable[..., Dispatcher]
) -> None:
    await store.add_relay(receiver.url + "/hook", [], None, NOW_MS)
    for n in range(150):
        body = meta_webhooks.status_delivery(
            waba_id=WABA_ID, template_id=str(n), event="APPROVED", name="t", language="en",
            entry_time=1_780_000_000,
        )  # fmt: skip
        await deliver(store, body)
    other = await open_store(database_url)
    try:
        replicas = [dispatcher(batch=16), dispatcher(on=other, owner="replica-b", batch=16)]
        reports: list[DispatchReport] = []
        async with asyncio.timeout(30):
            while (await summary(store)).queued:
                reports += await asyncio.gather(*(r.run_once() for r in replicas))
    finally:
        await other.close()

    deliveries = [r.headers["X-Template-Sync-Delivery"] for r in receiver.receipts]
    assert len(deliveries) == len(set(deliveries)) == 150
    assert sum(r.sent for r in reports) == 150
    assert all(r.sent for r in reports[:2])  # both replicas took part from the first pass


async def test_a_lease_that_expired_mid_send_is_taken_over(
    store: Store, receiver: Receiver, dispatcher: Callable[..., Dispatcher], clock: Clock
) -> None:
    await store.add_relay(receiver.url + "/hook", [], None, NOW_MS)
    result = await deliver(store, fixture_body(TEMPLATES_BODY))
    held = receiver.gate
    held.clear()  # replica A's send hangs
    slow, other = dispatcher(lease_s=60), dispatcher(owner="replica-b", lease_s=60)
    first = asyncio.create_task(slow.run_once())
    await eventually(lambda: receiver.receipts)

    assert await other.run_once() == DispatchReport()  # still leased to A
    clock.advance(60)  # A's lease runs out, as if A had died
    receiver.gate = asyncio.Event()
    receiver.gate.set()  # B's request is answered at once; A's stays held
    assert await other.run_once() == DispatchReport(claimed=1, sent=1)
    held.set()  # A's answer comes after all: too late to record it

    assert await first == DispatchReport(claimed=1, lost_lease=1)
    deliveries = {r.headers["X-Template-Sync-Delivery"] for r in receiver.receipts}
    assert deliveries == {str(result.delivery_id)} and len(receiver.receipts) == 2
    assert (await summary(store)).queued == 0


async def test_a_pass_defers_what_it_could_not_send_within_its_lease(
    store: Store, receiver: Receiver, dispatcher: Callable[..., Dispatcher], clock: Clock
) -> None:
    await store.add_relay(receiver.url + "/hook", [], None, NOW_MS)
    for n in range(3):
        await deliver(store, f'{{"entry":[],"n":{n}}}'.encode())
    receiver.gate.clear()
    relays = dispatcher(per_target=1, lease_s=20, send_timeout_s=10)
    task = asyncio.create_task(relays.run_once())
    await eventually(lambda: receiver.receipts)
    clock.advance(11)  # the next send would outlive the lease
    receiver.gate.set()

    assert await task == DispatchReport(claimed=3, sent=1, deferred=2)
    assert len(receiver.receipts) == 1
    clock.advance(10)  # the deferred rows' lease has run out
    assert (await relays.run_once()).sent == 2


# --- the loop's pipeline: a target's trouble stays its own ---------------------------------


@pytest.mark.parametrize("fault", ["hangs", "slow"])
async def test_a_target_that_hangs_or_is_slow_never_holds_up_the_others(
    fault: str,
    store: Store,
    settings: Settings,
    tenant: Tenant,
    receiver: Receiver,
    dispatcher: Callable[..., Dispatcher],
) -> None:
    """The stuck relay's 30 rows are due first: a loop that claimed a batch and awaited it
    would have sent them alone, a few at a time, each wave taking the whole fault."""
    async with receiving() as stuck:
        if fault == "hangs":
            stuck.gate.clear()  # never answers: each attempt ends at its timeout
        else:
            stuck.delay_s = 1.0
        await store.add_relay(stuck.url + "/hook", [], None, NOW_MS)
        for n in range(30):
            await deliver(store, f'{{"entry":[],"n":{n}}}'.encode(), NOW_MS - 60_000)
        await store.add_relay(receiver.url + "/relay", [], None, NOW_MS)
        secret = TokenCipher(settings.encryption_keys).encrypt(new_secret())
        await store.add_subscription(tenant.workspace_id, receiver.url + "/events", (), secret, 0)
        for n in range(3):  # each makes a template known, then approves it: two events
            await deliver(store, approval(tenant, n))
        relays = dispatcher(batch=8, per_target=2, send_timeout_s=2.0)

        def healthy() -> tuple[int, int]:
            return len(receiver.at("/relay")), len(receiver.at("/events"))

        async with relays.running(stop_timeout_s=0.1):
            await eventually(lambda: healthy() == (3, 6), message=lambda: healthy())
            await eventually(lambda: stuck.ended_s, 10, message="the stuck target never ended")
        first_stuck_end_s = min(stuck.ended_s)

    assert max(r.at_s for r in receiver.receipts) < first_stuck_end_s
    assert stuck.most_in_flight[""] == 2


def approval(tenant: Tenant, n: int) -> bytes:
    """A signed status webhook that approves the tenant's template `n`, unknown before."""
    return meta_webhooks.status_delivery(
        waba_id=tenant.waba_id, template_id=str(n), event="APPROVED", name=f"t{n}",
        language="en", entry_time=NOW_MS // 1000,
    )  # fmt: skip


async def test_the_loop_sends_per_target_at_once_to_a_target_and_batch_in_all(
    store: Store, receiver: Receiver, dispatcher: Callable[..., Dispatcher]
) -> None:
    for path in ("/a", "/b"):
        await store.add_relay(receiver.url + path, [], None, NOW_MS)
    for n in range(20):
        await deliver(store, f'{{"entry":[],"n":{n}}}'.encode())
    receiver.delay_s = 0.05  # each request is held a while, so sends overlap

    # A tick far longer than the wait: only the wakes of the sends that end can be in time.
    async with dispatcher(batch=5, per_target=3, tick_s=60).running():
        await eventually(lambda: len(receiver.receipts) == 40, 10)

    most = receiver.most_in_flight
    assert most["/a"] <= 3 and most["/b"] <= 3 and max(most["/a"], most["/b"]) == 3
    assert most[""] == 5
    assert [listed.queued for listed in await store.list_relays()] == [0, 0]


async def test_stopping_mid_send_cuts_it_short_and_leaves_its_row_to_send_again(
    store: Store,
    receiver: Receiver,
    dispatcher: Callable[..., Dispatcher],
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await store.add_relay(receiver.url + "/hook", [], None, NOW_MS)
    for n in range(3):
        await deliver(store, f'{{"entry":[],"n":{n}}}'.encode())
    receiver.gate.clear()
    relays = dispatcher()

    async with relays.running(stop_timeout_s=0.2):
        await eventually(lambda: receiver.in_flight[""] == 3)
        stopped = time.monotonic()
    assert time.monotonic() - stopped < 2  # the stop's timeout, not the send's 10 s
    assert "sends cut short by the stop: 3;" in caplog.text
    listed = await summary(store)
    assert (listed.queued, listed.failed, listed.last_error) == (3, 0, None)  # not attempts

    receiver.gate.set()
    restarted = dispatcher()
    assert await restarted.run_once() == DispatchReport()  # leased until the lease expires
    clock.advance(LEASE_S)
    assert await restarted.run_once() == DispatchReport(claimed=3, sent=3)
    deliveries = Counter(r.headers["X-Template-Sync-Delivery"] for r in receiver.receipts)
    assert sorted(deliveries.values()) == [2, 2, 2]  # each sent again, at least once
    assert {r.headers["X-Template-Sync-Attempt"] for r in receiver.receipts} == {"1"}


async def test_a_huge_answer_is_never_read(
    store: Store, receiver: Receiver, dispatcher: Callable[..., Dispatcher]
) -> None:
    await store.add_relay(receiver.url + "/hook", [], None, NOW_MS)
    await deliver(store, fixture_body(TEMPLATES_BODY))
    receiver.endless = True  # 200, then a body that goes on until the client leaves

    async with asyncio.timeout(5):
        assert await dispatcher().run_once() == DispatchReport(claimed=1, sent=1)
    await eventually(lambda: receiver.ended_s, message="the body was still being read")
    assert receiver.written < ENDLESS_BYTES // 16  # the socket's buffers, not the body


# --- what is relayed ----------------------------------------------------------------------


async def test_a_replayed_delivery_is_relayed_once(
    store: Store, receiver: Receiver, dispatcher: Callable[..., Dispatcher]
) -> None:
    await store.add_relay(receiver.url + "/hook", [], None, NOW_MS)
    body = fixture_body(MESSAGES_BODY)
    await deliver(store, body)
    assert (await deliver(store, body, NOW_MS + 1000)).outcome == "replayed"  # Meta's retry

    assert (await dispatcher().run_once()).sent == 1
    assert [r.body for r in receiver.receipts] == [body]


async def test_a_relay_with_fields_gets_only_deliveries_with_such_a_change(
    store: Store, receiver: Receiver, dispatcher: Callable[..., Dispatcher]
) -> None:
    await store.add_relay(receiver.url + "/everything", [], None, NOW_MS)
    await store.add_relay(receiver.url + "/messages", ["messages"], None, NOW_MS)
    mixed, templates_only = fixture_body(MESSAGES_BODY), fixture_body(TEMPLATES_BODY)
    await deliver(store, mixed)
    await deliver(store, templates_only)

    assert (await dispatcher().run_once()).sent == 3
    assert sorted(r.body for r in receiver.at("/everything")) == sorted([mixed, templates_only])
    assert [r.body for r in receiver.at("/messages")] == [mixed]


# --- retention ----------------------------------------------------------------------------


async def test_a_delivery_still_queued_is_not_pruned_and_failed_rows_go_after_retention(
    store: Store,
    settings: Settings,
    receiver: Receiver,
    dispatcher: Callable[..., Dispatcher],
    clock: Clock,
) -> None:
    await store.add_relay(receiver.url + "/hook", [], None, NOW_MS)
    old_ms = NOW_MS - 40 * DAY_MS
    queued = await deliver(store, b'{"entry":[],"n":1}', old_ms)
    failing = await deliver(store, b'{"entry":[],"n":2}', old_ms)

    assert await store.prune_deliveries(NOW_MS - 30 * DAY_MS, 100) == 0
    assert {d.id for d in await store.list_deliveries(None, 10)} == {
        queued.delivery_id, failing.delivery_id,
    }  # fmt: skip
    receiver.statuses = [200, 503]  # one is sent; the other fails, past the max age already
    assert await dispatcher().run_once() == DispatchReport(claimed=2, sent=1, failed=1)

    pruned = await prune(store, settings, NOW_MS)
    assert (pruned.outbox_rows, pruned.deliveries) == (1, 2)
    assert await store.list_deliveries(None, 10) == []
    assert (await summary(store)).failed == 0


# --- the loop, serve and the command line ---------------------------------------------------


async def test_serve_relays_a_signed_webhook_at_once(
    store: Store, settings: Settings, receiver: Receiver
) -> None:
    await store.add_relay(receiver.url + "/hook", [], None, NOW_MS)
    body = fixture_body(MESSAGES_BODY)
    # A tick far longer than the wait below: only the webhook route's nudge can be in time.
    async with serving(replace(settings, dispatch_tick_s=60)) as server:
        status, _, _ = await server.deliver(body)
        assert status == 200
        await eventually(lambda: receiver.receipts, 1.0, message="no relay within a second")

        async def counted() -> bool:
            _, metrics, _ = await server.request("GET", "/metrics")
            return f'{ATTEMPTS}{{kind="relay",result="sent"}} 1.0' in metrics

        await eventually(counted, message="the attempt was not counted in /metrics")

    [receipt] = receiver.receipts
    assert receipt.body == body and receipt.headers["X-Hub-Signature-256"] == sign(body)


async def test_dispatch_once_prints_what_the_pass_did(
    store: Store, settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    await store.add_relay(receiver.url + "/hook", [], None, now_ms())
    await deliver(store, fixture_body(TEMPLATES_BODY), now_ms())

    code, out, err = await run_cli(service_env(settings), tmp_path, "dispatch", "--once")

    assert code == 0, err
    assert json.loads(out) == dataclasses.asdict(DispatchReport(claimed=1, sent=1))
    assert len(receiver.receipts) == 1


@dataclass
class Stopped:
    """How a `dispatch` process ended after SIGTERM."""

    code: int | None = None
    err: str = ""
    took_s: float = 0.0  # from the signal to the exit


@asynccontextmanager
async def dispatching(settings: Settings, cwd: Path) -> AsyncIterator[Stopped]:
    """`template-sync dispatch` as a process for the block's duration, then SIGTERM."""
    env = service_env(settings, TEMPLATE_SYNC_DISPATCH_TICK_S="0.05")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "dispatch", env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stopped = Stopped()
    try:
        yield stopped
    finally:
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        async with asyncio.timeout(15):
            _, err = await process.communicate()
        stopped.code, stopped.err = process.returncode, err.decode()
        stopped.took_s = time.monotonic() - signalled


async def test_dispatch_runs_until_sigterm_and_sends_as_rows_come(
    store: Store, settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    await store.add_relay(receiver.url + "/hook", [], None, now_ms())
    async with dispatching(settings, tmp_path) as stopped:
        await deliver(store, fixture_body(TEMPLATES_BODY), now_ms())
        await eventually(lambda: receiver.receipts, 15, message="`dispatch` sent nothing")
    assert stopped.code == 0, stopped.err
    assert "dispatching every 0.05 s" in stopped.err and "Traceback" not in stopped.err


async def test_sigterm_gives_a_send_in_flight_the_stop_timeout_then_cuts_it_short(
    store: Store, settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    await store.add_relay(receiver.url + "/hook", [], None, now_ms())
    receiver.gate.clear()  # the send would outlast the stop timeout (not its own)
    async with dispatching(settings, tmp_path) as stopped:
        await deliver(store, fixture_body(TEMPLATES_BODY), now_ms())
        await eventually(lambda: receiver.receipts, 15, message="`dispatch` sent nothing")
    assert stopped.code == 0, stopped.err
    assert STOP_TIMEOUT_S <= stopped.took_s < SEND_TIMEOUT_S
    assert "sends cut short by the stop: 1;" in stopped.err
    listed = await summary(store)
    assert (listed.queued, listed.last_error) == (1, None)  # sent again once its lease expires


async def test_running_stops_the_loop_and_leaves_no_task(
    store: Store, receiver: Receiver, dispatcher: Callable[..., Dispatcher]
) -> None:
    await store.add_relay(receiver.url + "/hook", [], None, NOW_MS)
    relays = dispatcher(tick_s=60)
    async with relays.running():
        await deliver(store, fixture_body(TEMPLATES_BODY))
        relays.nudge()
        await eventually(lambda: receiver.receipts)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("dispatcher ")]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_pass_that_fails_on_the_store_is_logged_and_the_loop_goes_on(
    proxied_settings: tuple[Settings, CuttableProxy],  # noqa: F811 (the fixture imported)
    store: Store,
    receiver: Receiver,
    dispatcher: Callable[..., Dispatcher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings, proxy = proxied_settings
    await store.add_relay(receiver.url + "/hook", [], None, NOW_MS)
    cut_off = await open_store(settings.database_url)
    try:
        relays = dispatcher(on=cut_off)
        async with relays.running():
            proxy.cut()
            await eventually(lambda: "dispatch pass failed" in caplog.text)
            proxy.open = True
            await deliver(store, fixture_body(TEMPLATES_BODY))
            await eventually(lambda: receiver.receipts, 10, message="no pass after the outage")
    finally:
        await cut_off.close()
