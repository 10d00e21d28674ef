"""The dispatcher alone: how fast it drains a full outbox (issue #16's "drains at 2,000/s").

    .venv/bin/python bench/drain.py [--deliveries 2000] [--rounds 3] [--per-target 4 16]
        [--postgres-url URL]

A store is filled with `--deliveries` webhook deliveries, each a status change of its own
template, with one relay and one notification subscription configured: a relay row per
delivery and a notification row per history row (a new template's first change writes two:
CREATED and its status). Then `template-sync dispatch` runs alone, pinned to core 0, against
bench/outbox.py's receivers (answering 200, pinned to core 1) until the outbox is empty:
rows sent per second, from the first row's removal (its start-up left out) to the last's.
Each `--per-target` (TEMPLATE_SYNC_DISPATCH_PER_TARGET) is measured `--rounds` times, each
on a fresh store.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import ingest
import outbox
from openloop import body_digest  # noqa: F401  (outbox.py's receivers need it importable)

from service import meta_webhooks
from service.config import Secret
from service.crypto import TokenCipher, generate_key
from service.events import STATUS_FIELD, Change
from service.storage import Store, open_store

WABA_ID = "102290129340398"
TIMEOUT_S = 300.0


async def fill(url: str, key: str, deliveries: int, receivers: outbox.Receivers) -> int:
    """A migrated store with the relay, the subscription and the deliveries; rows queued."""
    store = await open_store(url)
    try:
        await store.migrate()
        workspace = await store.create_workspace("bench", 0)
        cipher = TokenCipher((Secret(key),))
        await store.add_channel(workspace.id, WABA_ID, cipher.encrypt("t"), 0)
        await store.add_relay(f"http://127.0.0.1:{receivers.relay_port}/", [], "bench", 0)
        await store.add_subscription(
            workspace.id, f"http://127.0.0.1:{receivers.hook_port}/", [],
            cipher.encrypt("whsec_" + "a" * 32), 0,
        )  # fmt: skip
        for n in range(deliveries):
            await _deliver(store, n)
        while await store.fan_out(1, 1000):
            pass
        return await _depth(store)
    finally:
        await store.close()


async def _deliver(store: Store, n: int) -> None:
    template_id = str(10**15 + n)
    change = meta_webhooks.status_change("APPROVED", template_id, f"t_{n}", "en_US")
    body = meta_webhooks.encode(
        meta_webhooks.delivery(meta_webhooks.entry(WABA_ID, 1_751_247_500 + n, change))
    )
    parsed = Change(WABA_ID, STATUS_FIELD, "APPROVED", template_id, f"t_{n}", "en_US", None,
                    None, 1_751_247_500 + n)  # fmt: skip
    fields = frozenset({"message_template_status_update"})
    await store.record_delivery(body, 1, [parsed], None, "sha256=00", fields)


async def _depth(store: Store) -> int:
    return sum(d.rows for d in await store.outbox_depth() if d.state == "queued")


def drained(url: str, env: dict[str, str], rows: int) -> tuple[int, float]:
    """Rows `template-sync dispatch` sent, and the seconds it took, from its first row's
    removal (its start-up left out) to an empty outbox."""
    command = ingest.pinned(0, [sys.executable, "-m", "service", "dispatch"])
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    deadline = time.perf_counter() + TIMEOUT_S
    try:
        while (first := asyncio.run(_left(url))) >= rows:
            _before(deadline)
        started = time.perf_counter()
        while asyncio.run(_left(url)):
            _before(deadline)
        return first, time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=30)


def _before(deadline: float) -> None:
    if time.perf_counter() > deadline:
        sys.exit(f"the outbox did not drain within {TIMEOUT_S:.0f} s")
    time.sleep(0.02)


async def _left(url: str) -> int:
    store = await open_store(url)
    try:
        return await _depth(store)
    finally:
        await store.close()


def one_round(args: argparse.Namespace, per_target: int, receivers: outbox.Receivers,
              work: Path) -> float:  # fmt: skip
    """Rows per second of one drain on a fresh store."""
    if args.postgres_url:
        schema = f"drain_{uuid.uuid4().hex[:8]}"
        asyncio.run(ingest.admin(args.postgres_url, f'CREATE SCHEMA "{schema}"'))
        url = f"{args.postgres_url}?search_path={schema}"
    else:
        url = f"sqlite:///{work}/drain-{uuid.uuid4().hex[:8]}.db"
    key = generate_key()
    rows = asyncio.run(fill(url, key, args.deliveries, receivers))
    env = {
        **os.environ, "TEMPLATE_SYNC_DATABASE_URL": url, "TEMPLATE_SYNC_ENCRYPTION_KEYS": key,
        "TEMPLATE_SYNC_WEBHOOKS_ALLOW_PRIVATE": "true", "TEMPLATE_SYNC_LOG_LEVEL": "WARNING",
        "TEMPLATE_SYNC_DISPATCH_PER_TARGET": str(per_target),
    }  # fmt: skip
    sent, seconds = drained(url, env, rows)
    if args.postgres_url:
        asyncio.run(ingest.admin(args.postgres_url, f'DROP SCHEMA "{schema}" CASCADE'))
    print(f"  per target {per_target}: {sent} of {rows} rows in {seconds:.2f} s", file=sys.stderr)
    return sent / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-target", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--postgres-url", help="measure on this PostgreSQL instead of SQLite")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})  # this process fills and watches: on the receivers' core
    work = Path(tempfile.mkdtemp(prefix="template-sync-bench-drain-"))
    try:
        with outbox.receiving() as receivers:
            for per_target in args.per_target:
                rates = [one_round(args, per_target, receivers, work) for _ in range(args.rounds)]
                print(f"per target {per_target:>3}: {statistics.median(rates):7.0f} rows/s "
                      f"(rounds: {', '.join(f'{r:.0f}' for r in rates)})")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
