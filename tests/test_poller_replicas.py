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
from .service_process import exit_code
from .waiting import GatedSimulator, eventually

WORKSPACES = 30
DEADLINE_S = 2.0  # sync lease 2.7 s, poll claim 6.7 s: a dead replica's work moves on quickly


@pytest.fixture
async def sim() -> AsyncIterator[tuple[Simulator, str]]:
    async with simulated(Simulator(app_secret=APP_SECRET)) as running:
        yield running


@pytest.fixture
async def unanswering() -> AsyncIterator[tuple[GatedSimulator, str]]:
    """A Graph API that never answers: the replica to be killed talks to it, so its syncs are
    in flight for as long as the test needs."""
    never = GatedSimulator(app_secret=APP_SECRET)
    never.shut()
    async with simulated(never) as running:
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
    database_url: str,
    settings: Settings,
    store: Store,
    sim: tuple[Simulator, str],
    unanswering: tuple[GatedSimulator, str],
    tmp_path: Path,
) -> None:
    simulator, graph_url = sim
    workspaces, template_ids, pending_ids = [], [], []
    for index in range(WORKSPACES):
        waba_id = str(102290129340500 + index)
        tenant = await make_tenant(store, settings, waba_id)
        simulator.add_waba(waba_id, META_TOKEN)
        [template] = make_templates(waba_id, 1, pending=1)
        simulator.add_templates(waba_id, [template])
        simulator.set_status(template["id"], "APPROVED")  # decided at Meta, webhook lost
        template_ids.append(await add_template(store, tenant, template["id"]))
        workspaces.append(tenant.workspace_id)
        pending_ids.append(template["id"])
    env = {**os.environ, "TEMPLATE_SYNC_DATABASE_URL": database_url,
           "TEMPLATE_SYNC_META_APP_SECRET": APP_SECRET,
           "TEMPLATE_SYNC_ENCRYPTION_KEYS": settings.encryption_keys[0].value,
           "TEMPLATE_SYNC_POLL_TICK_S": "0.2", "TEMPLATE_SYNC_POLL_GRACE_S": "0",
           "TEMPLATE_SYNC_POLL_INTERVAL_S": "3600",
           "TEMPLATE_SYNC_SYNC_DEADLINE_S": str(DEADLINE_S),
           "TEMPLATE_SYNC_LOG_FORMAT": "json"}  # fmt: skip
    never, never_url = unanswering
    replicas = [start_poller({**env, "TEMPLATE_SYNC_GRAPH_URL": never_url}, tmp_path, "replica0")]
    try:
        # the first replica alone: it claims workspaces and its syncs wait for Meta's answer
        await eventually(lambda: never.waiting, 20, message="replica 0 never called Meta")
        assert await claims_of(database_url, replicas[0].pid)
        replicas[0].kill()  # SIGKILL while it holds claims, its syncs in flight
        replicas += [start_poller({**env, "TEMPLATE_SYNC_GRAPH_URL": graph_url}, tmp_path,
                                  f"replica{i}") for i in (1, 2)]  # fmt: skip

        async def all_synced() -> bool:
            return len(await succeeded_runs(database_url)) == WORKSPACES

        await eventually(all_synced, 40, interval_s=0.2)
        calls_when_done = len(simulator.calls)
        await asyncio.sleep(1.5)  # several more ticks: nothing is due within the interval
        assert len(simulator.calls) == calls_when_done
    finally:
        for process in replicas:
            if process.poll() is None:  # the killed one is gone, unless the test failed first
                process.send_signal(signal.SIGTERM)
        codes = [await exit_code(process, 15) for process in replicas]
    assert codes[0] == -signal.SIGKILL and codes[1:] == [0, 0]  # the survivors stop gracefully
    # each workspace synced exactly once, the killed replica's ones after its leases expired
    assert await succeeded_runs(database_url) == dict.fromkeys(workspaces, 1)
    pairs = zip(workspaces, template_ids, strict=True)
    templates = [await store.get_template(workspace_id, i) for workspace_id, i in pairs]
    assert [t.status if t else None for t in templates] == ["APPROVED"] * WORKSPACES
    # Meta answered each workspace's one pending template once: nothing was asked twice
    assert sorted(call.object_id or "" for call in simulator.calls) == sorted(pending_ids)
