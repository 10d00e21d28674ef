"""Retention: raw deliveries and old dedupe keys are pruned, so the store stays bounded.

Raw deliveries are kept `RETENTION_DAYS` (30 by default) after they arrive: long enough to
replay or inspect them. A history row is kept for good, but its dedupe key is cleared
`DEDUPE_DAYS` (8 by default, never under 7) after the event was received (and after its
`entry.time`, which its key leads with; see SqlStore.forget_dedupe_keys): Meta stops
retrying a delivery 7 days after its first attempt, so no copy can come later.

`serve` prunes at start and then hourly; `template-sync prune` does it once, with progress.
Work goes in chunks of a short transaction each, so webhooks are never held up for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from .config import Settings
from .metrics import Metrics
from .storage import Store, StoreUnavailable
from .times import now_ms

logger = logging.getLogger(__name__)

DAY_MS = 86_400_000
EVERY_S = 3600.0
CHUNK = 1000


@dataclass
class Pruned:
    deliveries: int = 0
    dedupe_keys: int = 0


async def prune(
    store: Store,
    settings: Settings,
    at_ms: int,
    progress: Callable[[Pruned], None] | None = None,
    chunk: int = CHUNK,
) -> Pruned:
    """Delete deliveries and clear dedupe keys older than the settings allow, as of `at_ms`."""
    pruned = Pruned()
    deliveries_before = at_ms - round(settings.retention_days * DAY_MS)
    keys_before = at_ms - round(settings.dedupe_days * DAY_MS)
    steps: dict[str, Callable[[], Awaitable[int]]] = {
        "deliveries": lambda: store.prune_deliveries(deliveries_before, chunk),
        "dedupe_keys": lambda: store.forget_dedupe_keys(keys_before, chunk),
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
            metrics.pruned.labels("deliveries").inc(pruned.deliveries)
            metrics.pruned.labels("dedupe_keys").inc(pruned.dedupe_keys)
            if pruned.deliveries or pruned.dedupe_keys:
                logger.info(
                    "pruned %d deliveries and %d dedupe keys",
                    pruned.deliveries,
                    pruned.dedupe_keys,
                )
        await asyncio.sleep(every_s)
