"""Group commit: deliveries that arrive together are committed together.

Each caller waits for the commit of the batch its delivery is in, so no webhook is
acknowledged before its bytes are durable, while one commit (and, on SQLite, one fsync
and one thread hop) serves many requests. There is no timer: a batch is whatever queued
up while the previous one was committing, so a lone delivery is written at once.
(Measured: bench/RESULTS.md, "Why the code is as it is".)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .delivery_batch import NewDelivery
from .models import DeliveryResult, StoreUnavailable

logger = logging.getLogger(__name__)

MAX_BATCH = 256
MAX_BATCH_BYTES = 16 * 1024 * 1024
# Deliveries waiting before a batch starts beside one being committed: a PostgreSQL batch
# costs about eight round trips whatever its size, so fuller batches cost less CPU per
# delivery (bench/RESULTS.md, "Why the code is as it is").
PARALLEL_AFTER = 16

Commit = Callable[[list[NewDelivery]], Awaitable[list[DeliveryResult]]]
Waiter = tuple[NewDelivery, "asyncio.Future[DeliveryResult]"]


class GroupCommit:
    """`parallel` batches may commit at once: 1 for SQLite's single writer; more for
    PostgreSQL, whose row locks order concurrent batches (and replicas) per template.
    A batch starts beside one being committed only when PARALLEL_AFTER deliveries wait:
    under a light load, what arrives meanwhile waits for that commit and goes as one batch.
    """

    def __init__(self, commit: Commit, parallel: int = 1) -> None:
        self._commit = commit
        self._queue: list[Waiter] = []
        self._wakeup = asyncio.Event()
        self._parallel = parallel
        self._tasks: list[asyncio.Task[None]] = []
        self._committing = 0
        self._closing = False

    async def submit(self, item: NewDelivery) -> DeliveryResult:
        """Resolves once `item` is committed; StoreUnavailable when it could not be."""
        future: asyncio.Future[DeliveryResult] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._may_start():
            self._tasks = [task for task in self._tasks if not task.done()]
            if len(self._tasks) <= self._committing and len(self._tasks) < self._parallel:
                self._tasks.append(asyncio.create_task(self._run(), name="group commit"))
            self._wakeup.set()
        # A caller gone away cancels only its future: the committing task still commits the
        # delivery, and skips answering a future that is done.
        return await future

    def _may_start(self) -> bool:
        """Whether a batch may start now (each task that finishes a commit asks again)."""
        waiting = len(self._queue)
        return waiting > 0 and (self._committing == 0 or waiting >= PARALLEL_AFTER)

    async def _run(self) -> None:
        while True:
            while self._may_start() and self._committing < self._parallel:
                self._committing += 1
                try:
                    await self._commit_one(self._take())
                finally:
                    self._committing -= 1
            if self._closing:
                return  # a late submit still gets its commit attempted, never a hang
            await self._wakeup.wait()
            self._wakeup.clear()

    def _take(self) -> list[Waiter]:
        size = count = 0
        for item, _ in self._queue[:MAX_BATCH]:
            size += len(item.body)
            if count and size > MAX_BATCH_BYTES:
                break
            count += 1
        batch, self._queue = self._queue[:count], self._queue[count:]
        return batch

    async def _commit_one(self, batch: list[Waiter]) -> None:
        try:
            results = await self._commit([item for item, _ in batch])
        except Exception as error:
            if not isinstance(error, StoreUnavailable):
                logger.exception(
                    "a batch of %d deliveries failed; asking Meta to retry", len(batch)
                )
                error = StoreUnavailable(f"batch failed: {type(error).__name__}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        """Let the batches being committed finish, commit what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        await asyncio.gather(*self._tasks)
