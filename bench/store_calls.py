"""CPU per call of the store's hot paths, in-process: no HTTP, no load generator.

    .venv/bin/python bench/store_calls.py [--postgres-url URL] [--outbox]

Ingest (64 concurrent deliveries of one change each, grouped as the webhook route's are),
a template GET's read (`find_token_and_template`) and a page of 100 templates, on a fresh
store of 300 templates: a temporary SQLite file, or with --postgres-url a database of its
own on that server, created and dropped. With --outbox, a relay and a webhook subscription
are configured first, so each delivery also queues a relay row (the fan-out to
subscriptions runs in the dispatcher, not here). Each figure is the best of three runs:
CPU time of this process (its database thread included) per call, and wall time. To
compare two commits,
run this file from a worktree of each (`git worktree add /tmp/before REV`), alternating:
it imports the `service` package next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.events import STATUS_FIELD, Change
from service.storage import NewTemplate, Store, TemplateFilter, open_store

TEMPLATES = 300
CONCURRENT = 64
RUNS = 3


async def measure(fn: Callable[[], Awaitable[object]], calls: int, per: int) -> tuple[float, float]:
    """Best of RUNS: (CPU, wall) microseconds per item, `per` items a call."""
    for _ in range(3):
        await fn()  # warm up
    cpu, wall = [], []
    for _ in range(RUNS):
        started_cpu, started = time.process_time(), time.perf_counter()
        for _ in range(calls):
            await fn()
        cpu.append(1e6 * (time.process_time() - started_cpu) / (calls * per))
        wall.append(1e6 * (time.perf_counter() - started) / (calls * per))
    return min(cpu), min(wall)


async def seeded(store: Store) -> tuple[str, list[int]]:
    await store.migrate()
    workspace = await store.create_workspace("bench", 0)
    await store.add_channel(workspace.id, "1", "token", 0)
    await store.create_token(workspace.id, "tok", "hash", None, 0)
    ids = []
    for n in range(TEMPLATES):
        new = NewTemplate(workspace.id, "1", f"p{n}", f"n{n}", "en", None, "PENDING")
        ids.append((await store.add_template(new, 0)).id)
    return workspace.id, ids


async def main(url: str, outbox: bool) -> None:
    store = await open_store(url)
    workspace_id, ids = await seeded(store)
    if outbox:
        await store.add_relay("http://127.0.0.1:9/app", [], None, 0)
        await store.add_subscription(workspace_id, "http://127.0.0.1:9/hook", [], "secret", 0)
    sent = 0

    async def ingest() -> None:
        nonlocal sent
        calls = []
        for _ in range(CONCURRENT):
            sent += 1
            change = Change("1", STATUS_FIELD, "APPROVED" if sent % 2 else "PAUSED",
                            f"p{sent % TEMPLATES}", None, None, None, None,
                            1_700_000_000 + sent)  # fmt: skip
            body = f'{{"n":{sent}}}'.encode()
            fields = frozenset({STATUS_FIELD})
            calls.append(store.record_delivery(body, sent, [change], None, "sha256=x", fields))
        await asyncio.gather(*calls)

    async def get_one() -> None:
        await store.find_token_and_template("tok", ids[7])

    async def page() -> None:
        await store.list_templates(workspace_id, TemplateFilter(), 0, 100)

    try:
        for name, fn, calls, per in (
            ("ingest, per delivery", ingest, 60, CONCURRENT),
            ("template GET's read", get_one, 4000, 1),
            ("page of 100", page, 300, 1),
        ):
            cpu, wall = await measure(fn, calls, per)
            print(f"{name}: {cpu:.1f} us CPU, {wall:.1f} us wall")
    finally:
        await store.close()


SCRATCH = "template_sync_bench_store_calls"


async def on_scratch_database(server_url: str, outbox: bool) -> None:
    """`main` on a database of its own on the server `server_url` names, dropped after."""
    import asyncpg  # only here: the store connects through service.storage

    server = server_url.rsplit("/", 1)[0]
    admin = await asyncpg.connect(f"{server}/postgres")
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {SCRATCH}")
        await admin.execute(f"CREATE DATABASE {SCRATCH}")
        await main(f"{server}/{SCRATCH}", outbox)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {SCRATCH}")
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres-url", help="measure PostgreSQL on this server instead")
    parser.add_argument("--outbox", action="store_true", help="with a relay and a subscription")
    args = parser.parse_args()
    if args.postgres_url:
        asyncio.run(on_scratch_database(args.postgres_url, args.outbox))
    else:
        asyncio.run(main(f"sqlite:///{tempfile.mkdtemp()}/bench.db", args.outbox))
