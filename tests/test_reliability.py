"""No acknowledged delivery is lost: kills, graceful restarts, a full disk, a locked store.

The service runs as a real `serve` process; deliveries are sent open-loop and every answer
is kept in a ledger that must balance: sent = acknowledged + refused + failed, and every
acknowledged delivery is in the store with its effect applied exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from service.config import Settings
from service.meta_webhooks import status_delivery
from service.storage import Store, TemplateFilter, open_store

from .conftest import WABA_ID, Tenant, sign
from .fault_server import CRASH_EXIT_CODE
from .service_process import Ledger, ServiceProcess, free_port, send_open_loop, service_env
from .waiting import eventually

FIRST_ID = 5_000_000_000_000_000
# uvicorn shuts down gracefully on SIGTERM, then re-raises the signal so the exit status
# says why it stopped (systemd counts that as a clean stop).
GRACEFUL = (0, -signal.SIGTERM)
SOAK_S = float(os.environ.get("TEMPLATE_SYNC_SOAK_S", "0"))
RATE_PER_S = 100


def deliveries(count: int) -> list[bytes]:
    """Distinct signed-to-be deliveries, each approving a template of its own."""
    return [
        status_delivery(waba_id=WABA_ID, template_id=str(FIRST_ID + i), event="APPROVED",
                        name=f"ledger_{i}", language="en_US", entry_time=1_751_000_000 + i)
        for i in range(count)
    ]  # fmt: skip


async def assert_applied_once(store: Store, tenant: Tenant, indexes: list[int]) -> None:
    """Each delivery's template exists, created by its webhook and APPROVED by exactly one
    history row (a retry of it added none)."""
    templates, _ = await store.list_templates(tenant.workspace_id, TemplateFilter(), 0, 10**6)
    by_provider = {t.provider_id: t for t in templates}
    for index in indexes:
        template = by_provider.get(str(FIRST_ID + index))
        assert template is not None, f"acknowledged delivery {index} is not in the store"
        assert template.status == "APPROVED"
        history = await store.template_history(tenant.workspace_id, template.id)
        assert history is not None and [
            (h.row.field, h.row.event, h.row.source) for h in history
        ] == [("template", "CREATED", "webhook"), ("status", "APPROVED", "webhook")]


async def resend(url: str, bodies: list[bytes], indexes: list[int]) -> None:
    """Meta's retries of what was not acknowledged: now every one must be."""
    async with aiohttp.ClientSession() as session:
        for index in indexes:
            body = bodies[index]
            headers = {"X-Hub-Signature-256": sign(body)}
            async with session.post(url + "/webhooks/meta", data=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()


def integrity_ok(database_url: str) -> bool:
    if not database_url.startswith("sqlite:///"):
        return True
    with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
        return bool(conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok")


async def test_crash_ledger_balances_across_sigkills(
    settings: Settings, store: Store, tenant: Tenant, tmp_path: Path
) -> None:
    """Short here; `make soak` runs it for TEMPLATE_SYNC_SOAK_S seconds with more kills."""
    duration_s = SOAK_S or 5.0
    kills = max(5, int(duration_s // 30)) if SOAK_S else 3
    service = ServiceProcess(service_env(settings), tmp_path)
    await service.start()
    bodies = deliveries(int(duration_s * RATE_PER_S))
    ledger = Ledger()
    sender = asyncio.create_task(send_open_loop(service.url, bodies, RATE_PER_S, ledger))
    rng = random.Random(7)
    started = time.monotonic()
    for moment in sorted(rng.uniform(0.5, duration_s - 1) for _ in range(kills)):
        await asyncio.sleep(max(0.0, started + moment - time.monotonic()))
        assert await service.stop(signal.SIGKILL) == -signal.SIGKILL
        await service.start()
    await sender
    counts = ledger.counts()
    assert sum(counts.values()) == len(bodies) == len(ledger.outcome)
    assert counts["acked"] > 0 and counts["failed"] + counts["refused"] > 0, counts
    await assert_applied_once(store, tenant, ledger.ids("acked"))
    stored = len(await store.list_deliveries(None, 10**7))
    print(f"ledger: sent {len(bodies)}, acknowledged {counts['acked']}, refused "
          f"{counts['refused']}, failed {counts['failed']}, stored {stored}, kills {kills}, "
          "and every acknowledged one found applied exactly once")  # fmt: skip
    await resend(service.url, bodies, ledger.ids("failed") + ledger.ids("refused"))
    assert await service.stop() in GRACEFUL
    await assert_applied_once(store, tenant, list(range(len(bodies))))
    assert integrity_ok(settings.database_url)


async def test_sigterm_under_load_loses_nothing_acknowledged(
    settings: Settings, store: Store, tenant: Tenant, tmp_path: Path
) -> None:
    service = ServiceProcess(service_env(settings), tmp_path)
    await service.start()
    bodies, ledger = deliveries(300), Ledger()
    sender = asyncio.create_task(send_open_loop(service.url, bodies, 150, ledger))
    await eventually(lambda: ledger.counts()["acked"] >= 50)  # under load...
    assert await service.stop(signal.SIGTERM) in GRACEFUL  # ...in-flight requests finish
    await sender
    await assert_applied_once(store, tenant, ledger.ids("acked"))
    await service.start()
    await resend(service.url, bodies, ledger.ids("failed") + ledger.ids("refused"))
    await service.stop()
    await assert_applied_once(store, tenant, list(range(len(bodies))))


async def test_crash_after_commit_before_response_has_one_effect_when_meta_retries(
    settings: Settings, store: Store, tenant: Tenant, tmp_path: Path
) -> None:
    env = service_env(settings)
    faulty = ServiceProcess(env, tmp_path, command=("-m", "tests.fault_server"))
    await faulty.start()
    [body] = deliveries(1)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):  # the process died before answering
            headers = {"X-Hub-Signature-256": sign(body)}
            await session.post(faulty.url + "/webhooks/meta", data=body, headers=headers)
    assert await faulty.stop() == CRASH_EXIT_CODE
    healthy = ServiceProcess(env, tmp_path, port=faulty.port)
    await healthy.start()
    await resend(healthy.url, [body], [0])  # Meta retries the unanswered delivery
    await healthy.stop()
    assert len(await store.list_deliveries(None, 10)) == 1  # the same bytes, stored once
    await assert_applied_once(store, tenant, [0])  # one effect, one history row


# --- SQLite outages ---------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs the test can fill up (needs root and mount, as on this kind of machine)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Write until the disk is full. Unbuffered: a buffered file would try to flush what it
    still holds when it is closed, and raise ENOSPC there."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError:
            pass  # full
    return filler


async def first_prune_done(session: aiohttp.ClientSession, url: str) -> None:
    """Wait for the pruning pass `serve` starts with: a fault injected while it runs makes a
    webhook wait for it too (one writer), which is not what these tests time."""

    async def done() -> bool:
        async with session.get(url + "/metrics") as resp:
            text = await resp.text()
        line = next(x for x in text.splitlines() if x.startswith("template_sync_last_prune_"))
        return float(line.split()[-1]) > 0

    await eventually(done)


async def expect_503_within_1s(session: aiohttp.ClientSession, url: str, body: bytes) -> None:
    started = time.monotonic()
    headers = {"X-Hub-Signature-256": sign(body)}
    async with session.post(url + "/webhooks/meta", data=body, headers=headers) as resp:
        assert resp.status == 503 and resp.headers["Retry-After"], await resp.text()
        assert "Traceback" not in await resp.text()
    assert time.monotonic() - started < 1.0
    async with session.get(url + "/readyz") as resp:
        assert resp.status == 503


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_full_disk_refuses_with_503_then_recovers(
    settings: Settings, small_disk: Path, tmp_path: Path
) -> None:
    settings = replace(settings, database_url=f"sqlite:///{small_disk}/template-sync.db")
    service = ServiceProcess(service_env(settings), tmp_path)
    await service.start()
    bodies = deliveries(3)
    try:
        async with aiohttp.ClientSession() as session:
            await resend(service.url, bodies, [0])
            await first_prune_done(session, service.url)
            filler = fill(small_disk)
            await expect_503_within_1s(session, service.url, bodies[1])
            filler.unlink()
            await resend(service.url, bodies, [1, 2])
            async with session.get(service.url + "/readyz") as resp:
                assert resp.status == 200
    finally:
        await service.stop()
    assert integrity_ok(settings.database_url)
    with sqlite3.connect(settings.database_url.removeprefix("sqlite:///")) as conn:
        assert conn.execute("SELECT COUNT(*) FROM webhook_deliveries").fetchone()[0] == 3


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_database_locked_by_another_process_refuses_with_503(
    settings: Settings, store: Store, tenant: Tenant, tmp_path: Path
) -> None:
    service = ServiceProcess(service_env(settings), tmp_path)
    await service.start()
    bodies = deliveries(1)
    path = settings.database_url.removeprefix("sqlite:///")
    try:
        async with aiohttp.ClientSession() as session:
            await first_prune_done(session, service.url)
            locker = sqlite3.connect(path, isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")  # e.g. a backup or a long CLI command
            try:
                await expect_503_within_1s(session, service.url, bodies[0])
            finally:
                locker.execute("ROLLBACK")
                locker.close()
            await resend(service.url, bodies, [0])
    finally:
        await service.stop()
    await assert_applied_once(store, tenant, [0])


# --- PostgreSQL outage: a private cluster the test starts and stops itself ----------------

PG_BIN = Path("/usr/lib/postgresql")


def pg_tool(name: str) -> str:
    found = sorted(PG_BIN.glob(f"*/bin/{name}"))
    if not found:
        pytest.skip(f"PostgreSQL server binaries ({name}) are not installed")
    return str(found[-1])


def as_postgres(*command: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True,
                   capture_output=True)  # fmt: skip


@pytest.fixture
def private_postgres() -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """(url, stop, start) of a throwaway cluster on a free port; never the machine's server."""
    root = Path(tempfile.mkdtemp(prefix="template-sync-pg-"))
    shutil.chown(root, "postgres")
    data, port = root / "data", free_port()
    as_postgres(pg_tool("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"

    def start() -> None:
        log = str(root / "postgres.log")  # the server must not hold our pipes open
        as_postgres(pg_tool("pg_ctl"), "-D", str(data), "-o", options, "-l", log, "-w", "start")

    def stop() -> None:
        as_postgres(pg_tool("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")

    start()
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres", stop, start
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the store is private here
async def test_postgres_stopped_refuses_with_503_then_stores_retries_once(
    settings: Settings,
    private_postgres: tuple[str, Callable[[], None], Callable[[], None]],
    tmp_path: Path,
) -> None:
    url, stop_postgres, start_postgres = private_postgres
    settings = replace(settings, database_url=url)
    service = ServiceProcess(service_env(settings), tmp_path)
    await service.start()
    bodies = deliveries(3)
    try:
        async with aiohttp.ClientSession() as session:
            await resend(service.url, bodies, [0])
            stop_postgres()
            await expect_503_within_1s(session, service.url, bodies[1])
            start_postgres()
            await resend(service.url, bodies, [1, 2])
            await resend(service.url, bodies, [1])  # a duplicate retry: no second row or effect
            async with session.get(service.url + "/readyz") as resp:
                assert resp.status == 200
    finally:
        await service.stop()
    opened = await open_store(url)
    try:
        assert len(await opened.list_deliveries(None, 10)) == 3
        assert [w.name for w in await opened.list_workspaces()] == []
    finally:
        await opened.close()
