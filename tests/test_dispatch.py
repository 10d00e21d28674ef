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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from service import meta_webhooks
from service.config import ConfigError, Settings
from service.crypto import TokenCipher
from service.dispatch import Dispatcher, DispatchReport
from service.metrics import Metrics
from service.relays import FIRST_RETRY_S, MAX_RETRY_S, retry_at
from service.retention import DAY_MS, prune
from service.safe_urls import safe_session_connector
from service.simulator import bound_port
from service.storage import DeliveryResult, RelaySummary, Store, open_store
from service.times import now_ms
from service.webhooks import parse_delivery, verify_signature

from .conftest import APP_SECRET, NOW_MS, WABA_ID, fixture_body, serving, sign
from .service_process import run_cli, service_env
from .test_app import CuttableProxy, proxied_settings  # noqa: F401 (a fixture used here)
from .waiting import eventually

DAY_S = DAY_MS // 1000
ATTEMPTS = "template_sync_outbox_attempts_total"
MESSAGES_BODY = "webhook-batch-mixed.json"  # has a `messages` change besides template ones
TEMPLATES_BODY = "webhook-status-approved.json"  # template changes only


# --- a receiver on loopback, and the parts a dispatcher runs on -----------------------------


@dataclass
class Receipt:
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Receiver:
    """An application's webhook endpoint: records each request, answers the statuses it is
    told in turn (then 200); while `gate` is clear, requests wait before being answered."""

    url: str = ""
    receipts: list[Receipt] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        headers = {name: ", ".join(request.headers.getall(name)) for name in request.headers}
        self.receipts.append(Receipt(request.path, await request.read(), headers))
        await self.gate.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        location = {"Location": "/moved"} if 300 <= status < 400 else None
        return web.Response(status=status, headers=location)

    def at(self, path: str) -> list[Receipt]:
        return [r for r in self.receipts if r.path == path]


@pytest.fixture(name="receiver")
async def receiver_fixture() -> AsyncIterator[Receiver]:
    found = Receiver()
    found.gate.set()
    app = web.Application()
    app.router.add_post("/{path:.*}", found.handle)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    found.url = f"http://127.0.0.1:{bound_port(runner)}"
    try:
        yield found
    finally:
        found.gate.set()
        await runner.cleanup()


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


async def test_dispatch_runs_until_sigterm_and_sends_as_rows_come(
    store: Store, settings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    await store.add_relay(receiver.url + "/hook", [], None, now_ms())
    env = service_env(settings, TEMPLATE_SYNC_DISPATCH_TICK_S="0.05")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "dispatch", env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await deliver(store, fixture_body(TEMPLATES_BODY), now_ms())
        await eventually(lambda: receiver.receipts, 15, message="`dispatch` sent nothing")
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            _, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert "dispatching every 0.05 s" in err.decode() and "Traceback" not in err.decode()


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
