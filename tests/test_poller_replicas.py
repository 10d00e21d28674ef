"""Three poller processes on one PostgreSQL: each due workspace synced exactly once,
also when one process is killed mid-run."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from service.config import Settings
from service.simulator import Simulator, make_templates
from service.storage import Store

from .conftest import APP_SECRET, META_TOKEN, add_template, make_tenant, simulated

WORKSPACES = 30
DEADLINE_S = 2.0  # sync lease 2.7 s, poll claim 6.7 s: a dead replica's work moves on quickly


@pytest.fixture
async def sim() -> AsyncIterator[tuple[Simulator, str]]:
    async with simulated(Simulator(app_secret=APP_SECRET)) as running:
        yield running


async def succeeded_runs(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT workspace_id, COUNT(*) AS n FROM sync_runs "
            "WHERE status = 'succeeded' AND trigger = 'poller' GROUP BY workspace_id"
        )
    finally:
        await conn.close()
    return {row["workspace_id"]: row["n"] for row in rows}


def start_poller(env: dict[str, str], cwd: Path, name: str) -> subprocess.Popen[bytes]:
    with (cwd / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "service", "poll"], env=env, cwd=cwd,
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip


async def exit_code(process: subprocess.Popen[bytes], timeout_s: float = 15) -> int:
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        assert time.monotonic() < deadline, f"process {process.pid} did not stop"
        await asyncio.sleep(0.05)
    return process.returncode


async def claims_of(database_url: str, pid: int) -> int:
    """Unexpired poll leases held by the replica with this process id."""
    conn = await asyncpg.connect(database_url)
    try:
        count = await conn.fetchval(
            "SELECT COUNT(*) FROM workspace_polls WHERE lease_owner LIKE $1 AND lease_until > $2",
            f"%:{pid}:%", int(time.time() * 1000),
        )  # fmt: skip
    finally:
        await conn.close()
    return int(count)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_three_replicas_sync_each_workspace_once_despite_a_kill(
    database_url: str, settings: Settings, store: Store, sim: tuple[Simulator, str], tmp_path: Path
) -> None:
    simulator, graph_url = sim
    workspaces, pending_ids = [], []
    for index in range(WORKSPACES):
        waba_id = str(102290129340500 + index)
        tenant = await make_tenant(store, settings, waba_id)
        simulator.add_waba(waba_id, META_TOKEN)
        [template] = make_templates(waba_id, 1, pending=1)
        simulator.add_templates(waba_id, [template])
        simulator.set_status(template["id"], "APPROVED")  # decided at Meta, webhook lost
        await add_template(store, tenant, template["id"])
        workspaces.append(tenant.workspace_id)
        pending_ids.append(template["id"])
    simulator.fail(None, "slow", delay_s=0.3, sticky=True)  # syncs are in flight at the kill
    env = {**os.environ, "TEMPLATE_SYNC_DATABASE_URL": database_url,
           "TEMPLATE_SYNC_GRAPH_URL": graph_url, "TEMPLATE_SYNC_META_APP_SECRET": APP_SECRET,
           "TEMPLATE_SYNC_ENCRYPTION_KEYS": settings.encryption_keys[0].value,
           "TEMPLATE_SYNC_POLL_TICK_S": "0.2", "TEMPLATE_SYNC_POLL_GRACE_S": "0",
           "TEMPLATE_SYNC_POLL_INTERVAL_S": "3600",
           "TEMPLATE_SYNC_SYNC_DEADLINE_S": str(DEADLINE_S),
           "TEMPLATE_SYNC_LOG_FORMAT": "json"}  # fmt: skip
    replicas = [start_poller(env, tmp_path, f"replica{i}") for i in range(3)]
    try:
        deadline = time.monotonic() + 20
        while not await claims_of(database_url, replicas[0].pid):
            assert time.monotonic() < deadline, "the first replica never claimed a workspace"
            await asyncio.sleep(0.02)
        replicas[0].kill()  # SIGKILL while it holds claims, its syncs in flight
        while len(await succeeded_runs(database_url)) < WORKSPACES:
            assert time.monotonic() < deadline + 20, await succeeded_runs(database_url)
            await asyncio.sleep(0.2)
        calls_when_done = len(simulator.calls)
        await asyncio.sleep(1.5)  # several more ticks: nothing is due within the interval
        assert len(simulator.calls) == calls_when_done
    finally:
        for process in replicas[1:]:
            process.send_signal(signal.SIGTERM)
        codes = [await exit_code(process) for process in replicas]
    assert codes[0] == -signal.SIGKILL and codes[1:] == [0, 0]  # the survivors stop gracefully
    # each workspace synced exactly once, the killed replica's ones after its leases expired
    assert await succeeded_runs(database_url) == dict.fromkeys(workspaces, 1)
    templates = [await store.get_template(ws, 1 + i) for i, ws in enumerate(workspaces)]
    assert {t.status for t in templates if t} == {"APPROVED"} and len(templates) == WORKSPACES
    calls = [call.object_id for call in simulator.calls]
    assert set(calls) == set(pending_ids)
    # only what the killed replica had in flight (at most its concurrency, 4) was asked twice
    assert len(calls) - WORKSPACES <= 4 and max(calls.count(i) for i in pending_ids) <= 2
