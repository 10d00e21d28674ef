"""The outbox's crash ledger: kill -9 while relaying and notifying loses nothing.

Issue 16: after any crash, every acknowledged delivery is relayed and every applied change
notified, at least once; a PostgreSQL outage only delays them. A real `serve` process, with one
relay and one notification subscription added by the CLI as an operator does, both pointing at
tests/test_dispatch.py's receiver on loopback. Deliveries are sent open loop while the process
is killed with SIGKILL and restarted; what the receiver got is then reconciled with what was
acknowledged and what the store applied, in a ledger that must show nothing lost.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from service.config import Settings
from service.storage import Store
from service.times import now_ms
from service.webhooks import verify_signature

from .conftest import APP_SECRET, Tenant
from .raw_sql import rows
from .service_process import Ledger, ServiceProcess, run_cli, send_open_loop, service_env
from .test_app import CuttableProxy, proxied_settings  # noqa: F401 (a fixture used here)
from .test_dispatch import Receiver, deliver, receiver_fixture  # noqa: F401 (a fixture)
from .test_reliability import GRACEFUL, deliveries, resend
from .waiting import eventually

RATE_PER_S = 60
DURATION_S = 5.0
KILLS = 3
RELAY_PATH, NOTIFY_PATH = "/relay", "/notify"
EVENTS_PER_DELIVERY = 2  # each delivery makes a template known (CREATED), then APPROVES it
# A row leased to a killed process is sent again once its lease (the shortest allowed) has
# expired.
LEASE_S = 16
SETTLE_S = LEASE_S + 20
OUTAGE_S = 3.0
TICK_S = 0.05
# Failed passes logged in an outage of OUTAGE_S: one per tick would be OUTAGE_S / TICK_S = 60;
# a loop that backs off exponentially from the tick logs about log2(60) ~ 6.
MAX_OUTAGE_FAILURES = 10
RESUME_S = 20.0


@dataclass(frozen=True)
class Reconciled:
    """What the receiver got, checked: the deliveries (by index) whose exact bytes came with
    Meta's signature, the events (by history id) whose notification verified, and repeats."""

    relayed: set[int]
    notified: set[int]
    duplicates: int


def reconcile(receiver: Receiver, bodies: list[bytes], secret: str) -> Reconciled:
    """Every receipt must be a sent delivery, or an event signed with the subscription's
    secret under its `webhook-id`; a bad one fails the test at once."""
    index = {body: i for i, body in enumerate(bodies)}
    relays = Counter(r.body for r in receiver.at(RELAY_PATH))
    for receipt in receiver.at(RELAY_PATH):
        verify_signature(
            receipt.body, receipt.headers["X-Hub-Signature-256"], [APP_SECRET.encode()]
        )
    unknown = [body[:80] for body in relays if body not in index]
    assert not unknown, f"relayed bytes that were never sent: {unknown}"
    events: Counter[int] = Counter()
    for receipt in receiver.at(NOTIFY_PATH):
        history_id = Webhook(secret).verify(receipt.body, receipt.headers)["data"]["history_id"]
        assert receipt.headers["webhook-id"] == f"evt_{history_id}"
        events[history_id] += 1
    duplicates = relays.total() - len(relays) + events.total() - len(events)
    return Reconciled({index[body] for body in relays}, set(events), duplicates)


async def applied_events(store: Store, tenant: Tenant) -> set[int]:
    """The history ids of every change the store applied in the workspace: each is an event."""
    found = await store.events_after(0, 10**6, workspace_id=tenant.workspace_id)
    return {e.event.id for e in found}


async def outbox_rows(store: Store) -> list[dict[str, object]]:
    """Rows still queued, leased or failed (sent rows are deleted), as a failure shows them."""
    return await rows(
        store, "SELECT kind, state, attempts, lease_until > 0 AS leased, last_error FROM outbox"
    )


@dataclass(frozen=True)
class Setup:
    """A service with a relay and a subscription to `receiver`, and that subscription's
    signing secret."""

    service: ServiceProcess
    secret: str


async def configured(env: dict[str, str], cwd: Path, receiver: Receiver, tenant: Tenant) -> Setup:
    """`relay add` and `webhook add` as an operator runs them; the service not started yet."""
    code, out, err = await run_cli(env, cwd, "relay", "add", receiver.url + RELAY_PATH)
    assert code == 0, err
    code, out, err = await run_cli(
        env, cwd, "webhook", "add", "--workspace", tenant.workspace_id, receiver.url + NOTIFY_PATH
    )
    assert code == 0 and out.startswith("whsec_"), err
    return Setup(ServiceProcess(env, cwd), out.strip())


def outbound_env(settings: Settings) -> dict[str, str]:
    """The receiver is on loopback, and a short tick sends notifications soon."""
    return service_env(
        settings,
        TEMPLATE_SYNC_WEBHOOKS_ALLOW_PRIVATE="true",
        TEMPLATE_SYNC_DISPATCH_TICK_S=str(TICK_S),
        TEMPLATE_SYNC_DISPATCH_LEASE_S=str(LEASE_S),
    )


@asynccontextmanager
async def started(service: ServiceProcess) -> AsyncIterator[ServiceProcess]:
    """`service` running for the block; killed if the block failed and left it running."""
    await service.start()
    try:
        yield service
    finally:
        if service.process is not None and service.process.poll() is None:
            await service.stop(signal.SIGKILL)


async def kill_at_random_moments(service: ServiceProcess, rng: random.Random) -> None:
    """SIGKILL the service KILLS times within the sending window, restarting it each time."""
    started = time.monotonic()
    for moment in sorted(rng.uniform(0.5, DURATION_S - 1) for _ in range(KILLS)):
        await asyncio.sleep(max(0.0, started + moment - time.monotonic()))  # a moment, not a wait
        assert await service.stop(signal.SIGKILL) == -signal.SIGKILL
        await service.start()


def lost_count(
    store: Store, tenant: Tenant, receiver: Receiver, bodies: list[bytes], secret: str
) -> Callable[[], Awaitable[tuple[int, Reconciled, set[int]]]]:
    """Acknowledged deliveries not relayed plus applied events not notified, now; with the
    reconciliation and the applied events it was counted from."""

    async def count() -> tuple[int, Reconciled, set[int]]:
        seen = reconcile(receiver, bodies, secret)
        events = await applied_events(store, tenant)
        lost = len(set(range(len(bodies))) - seen.relayed) + len(events - seen.notified)
        return lost, seen, events

    return count


async def settled(
    count: Callable[[], Awaitable[tuple[int, Reconciled, set[int]]]], store: Store, timeout_s: float
) -> None:
    """Wait until nothing is lost and the outbox is empty."""
    last: list[object] = []

    async def done() -> bool:
        lost, seen, _ = await count()
        left = await outbox_rows(store)
        last[:] = [f"lost {lost}, duplicates {seen.duplicates}, outbox rows left {left[:5]}"]
        return lost == 0 and not left

    await eventually(done, timeout_s, message=lambda: last, interval_s=0.2)


@pytest.mark.timeout(SETTLE_S + 60)  # sending, restarts and resending: about 20 s
async def test_kill_9_while_relaying_and_notifying_loses_nothing(
    settings: Settings, store: Store, tenant: Tenant, receiver: Receiver, tmp_path: Path
) -> None:
    setup = await configured(outbound_env(settings), tmp_path, receiver, tenant)
    seed = random.randrange(2**32)
    print(f"kill moments from seed {seed}")  # pytest shows it with a failure
    bodies, ledger = deliveries(int(DURATION_S * RATE_PER_S)), Ledger()
    count = lost_count(store, tenant, receiver, bodies, setup.secret)
    async with started(setup.service) as service:
        sender = asyncio.create_task(send_open_loop(service.url, bodies, RATE_PER_S, ledger))
        await kill_at_random_moments(service, random.Random(seed))
        await sender
        unanswered = ledger.ids("failed") + ledger.ids("refused")
        await resend(service.url, bodies, unanswered)  # Meta's retries: now all acknowledged
        resent = time.monotonic()
        await settled(count, store, SETTLE_S)
        settle_s = time.monotonic() - resent
        assert await service.stop() in GRACEFUL
    lost, seen, events = await count()
    acked = ledger.counts()["acked"]
    assert 0 < acked < len(bodies) and unanswered, "the kills did not interrupt the intake"
    assert len(events) == EVENTS_PER_DELIVERY * len(bodies)  # every delivery applied
    assert lost == 0
    print(f"outbox ledger: sent {len(bodies)}, acknowledged {acked} (+{len(unanswered)} on "
          f"Meta's retry), relayed {len(seen.relayed)}, notified {len(seen.notified)} of "
          f"{len(events)} applied events, duplicates {seen.duplicates}, lost {lost}, kills "
          f"{KILLS}, settled {settle_s:.1f} s after the last resend")  # fmt: skip


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_postgres_outage_with_rows_queued_backs_off_then_delivers_them_all(
    proxied_settings: tuple[Settings, CuttableProxy],  # noqa: F811 (the fixture imported)
    store: Store,
    tenant: Tenant,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    settings, proxy = proxied_settings
    setup = await configured(outbound_env(settings), tmp_path, receiver, tenant)
    bodies, log = deliveries(40), tmp_path / "service.log"
    async with started(setup.service) as service:
        await resend(service.url, bodies, [0])
        # Nothing in flight when the outage starts: a row sent but not recorded would wait
        # out its lease (LEASE_S) before being sent again.
        first = lost_count(store, tenant, receiver, bodies[:1], setup.secret)
        await settled(first, store, RESUME_S)
        proxy.cut()  # the service's connections to PostgreSQL drop; the test's own stay
        for body in bodies[1:]:  # queued meanwhile, as by a replica that still reaches it
            await deliver(store, body, now_ms())
        await eventually(lambda: failed_passes(log) > 0, message="the outage went unnoticed")
        await asyncio.sleep(OUTAGE_S)  # how long the outage lasts, not a wait for anything
        failures = failed_passes(log)
        assert len(receiver.at(RELAY_PATH)) == 1  # nothing could be claimed meanwhile
        proxy.open = True
        await settled(lost_count(store, tenant, receiver, bodies, setup.secret), store, RESUME_S)
        assert await service.stop() in GRACEFUL
    assert failures <= MAX_OUTAGE_FAILURES, f"{failures} failed passes logged in {OUTAGE_S} s"


def failed_passes(log: Path) -> int:
    """The dispatcher's failed passes the service has logged so far."""
    return sum("dispatch pass failed" in line for line in log.read_text().splitlines())
