"""Group commit: requests that arrive together are served by one batch.

Webhook deliveries (deliveries.py): each caller waits for the commit of the batch its
delivery is in, so no webhook is acknowledged before its bytes are durable, while one commit
(and, on SQLite, one fsync and one thread hop) serves many requests. PostgreSQL's lookups
(postgres.py): the API's one-row reads that arrive together go to the server as one
statement. There is no timer: a batch is whatever queued up while the previous one was being
served, so a lone request is served at once. (Measured: bench/RESULTS.md, "Why the code is
as it is".)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

MAX_BATCH = 256
MAX_BATCH_WEIGHT = 16 * 1024 * 1024  # of the items' weights: for deliveries, body bytes
# Items waiting before a batch starts beside one being served: a PostgreSQL batch costs
# about eight round trips whatever its size, so fuller batches cost less CPU per delivery
# (bench/RESULTS.md, "Why the code is as it is").
PARALLEL_AFTER = 16

# Serves a batch: one result per item, in order; an item's own failure as its exception.
# A batch that fails as a whole raises, and every caller of the batch gets that error.
Serve = Callable[[list[Item]], Awaitable[Sequence["Result | Exception"]]]


class GroupCommit(Generic[Item, Result]):
    """`parallel` batches may be served at once: for deliveries, 1 for SQLite's single
    writer; more for PostgreSQL, whose row locks order concurrent batches (and replicas) per
    template. A batch starts beside one being served only when PARALLEL_AFTER items wait:
    under a light load, what arrives meanwhile waits for that batch and goes as the next.
    """

    def __init__(
        self,
        serve: Serve[Item, Result],
        parallel: int = 1,
        weight: Callable[[Item], int] = lambda _: 0,
    ) -> None:
        self._serve = serve
        self._weight = weight
        self._queue: list[tuple[Item, asyncio.Future[Result]]] = []
        self._wakeup = asyncio.Event()
        self._parallel = parallel
        self._tasks: list[asyncio.Task[None]] = []
        self._serving = 0
        self._closing = False

    async def submit(self, item: Item) -> Result:
        """`item`'s result once its batch is served; its error, or its batch's, otherwise."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._may_start():
            self._tasks = [task for task in self._tasks if not task.done()]
            if len(self._tasks) <= self._serving and len(self._tasks) < self._parallel:
                self._tasks.append(asyncio.create_task(self._run(), name="group commit"))
            self._wakeup.set()
        # A caller gone away cancels only its future: the batch still serves the item (a
        # delivery is still committed), and skips answering a future that is done.
        return await future

    def _may_start(self) -> bool:
        """Whether a batch may start now (each task that finishes a batch asks again)."""
        waiting = len(self._queue)
        return waiting > 0 and (self._serving == 0 or waiting >= PARALLEL_AFTER)

    async def _run(self) -> None:
        while True:
            while self._may_start() and self._serving < self._parallel:
                self._serving += 1
                try:
                    await self._serve_one(self._take())
                finally:
                    self._serving -= 1
            if self._closing:
                return  # a late submit is still served, never left to hang
            await self._wakeup.wait()
            self._wakeup.clear()

    def _take(self) -> list[tuple[Item, asyncio.Future[Result]]]:
        weight = count = 0
        for item, _ in self._queue[:MAX_BATCH]:
            weight += self._weight(item)
            if count and weight > MAX_BATCH_WEIGHT:
                break
            count += 1
        batch, self._queue = self._queue[:count], self._queue[count:]
        return batch

    async def _serve_one(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results: Sequence[Result | Exception] = await self._serve([item for item, _ in batch])
        except Exception as error:
            results = [error] * len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self) -> None:
        """Let the batches being served finish, serve what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        await asyncio.gather(*self._tasks)
