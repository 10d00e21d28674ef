"""Retention: raw deliveries, sync runs, failed outbox rows, old dedupe keys and idempotency
keys are pruned, so the store stays bounded.

Raw deliveries are kept `RETENTION_DAYS` (30 by default) after they arrive: long enough to
replay or inspect them. Sync runs are kept as long after they started, and each
workspace's latest whatever its age (the API shows it). A history row is kept for good, but
its dedupe key is cleared `DEDUPE_DAYS` (8 by default, never under 7) after the event was
received (and after its `entry.time`, which its key leads with; see
SqlStore.forget_dedupe_keys): Meta stops retrying a delivery 7 days after its first attempt,
so no copy can come later. Outbox rows that failed for good (dispatch.py) go as long after
they were queued, before the deliveries, so their deliveries can go in the same pass: a
delivery a relay still has to send, or failed to, is kept while its row is. An idempotency
key goes 24 h after its first use, when it no longer names a request
(storage/idempotency.py).

`serve` prunes at start and then hourly; `template-sync prune` does it once, with progress.
Work goes in chunks of a short transaction each, so webhooks are never held up for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass

from .config import Settings
from .metrics import Metrics
from .storage import Store, StoreUnavailable
from .storage.idempotency import KEY_TTL_MS
from .times import now_ms

logger = logging.getLogger(__name__)

DAY_MS = 86_400_000
EVERY_S = 3600.0
CHUNK = 1000


@dataclass
class Pruned:  # one field per kind of pruning
    deliveries: int = 0
    dedupe_keys: int = 0
    sync_runs: int = 0
    outbox_rows: int = 0
    idempotency_keys: int = 0

    def describe(self) -> str:
        counts = asdict(self).items()
        return ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in counts)


async def prune(
    store: Store,
    settings: Settings,
    at_ms: int,
    progress: Callable[[Pruned], None] | None = None,
    chunk: int = CHUNK,
) -> Pruned:
    """Delete failed outbox rows, deliveries and sync runs and clear dedupe keys older than
    the settings allow, and delete idempotency keys past their 24 h, as of `at_ms`."""
    pruned = Pruned()
    retained_from = at_ms - round(settings.retention_days * DAY_MS)
    keys_before = at_ms - round(settings.dedupe_days * DAY_MS)
    steps: dict[str, Callable[[], Awaitable[int]]] = {
        "outbox_rows": lambda: store.prune_outbox(retained_from, chunk),
        "deliveries": lambda: store.prune_deliveries(retained_from, chunk),
        "dedupe_keys": lambda: store.forget_dedupe_keys(keys_before, chunk),
        "sync_runs": lambda: store.prune_sync_runs(retained_from, chunk),
        "idempotency_keys": lambda: store.prune_idempotency_keys(at_ms - KEY_TTL_MS, chunk),
    }
    for kind, step in steps.items():
        while count := await step():
            setattr(pruned, kind, getattr(pruned, kind) + count)
            if progress:
                progress(pruned)
            if count < chunk:
                break
    return pruned


@contextlib.asynccontextmanager
async def pruning(
    store: Store, settings: Settings, metrics: Metrics, every_s: float = EVERY_S
) -> AsyncIterator[None]:
    """Prune now and then every `every_s` while the block runs."""
    task = asyncio.create_task(_loop(store, settings, metrics, every_s), name="pruner")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _loop(store: Store, settings: Settings, metrics: Metrics, every_s: float) -> None:
    while True:
        try:
            pruned = await prune(store, settings, now_ms())
        except StoreUnavailable as error:
            logger.warning("pruning skipped, store unavailable: %s", error)
        except Exception:
            logger.exception("pruning failed; trying again in %.0f s", every_s)
        else:
            counts = asdict(pruned)
            for kind, count in counts.items():
                metrics.pruned.labels(kind).inc(count)
            if any(counts.values()):
                logger.info("pruned %s", pruned.describe())
            metrics.last_prune.set(now_ms() / 1000)
        await asyncio.sleep(every_s)
