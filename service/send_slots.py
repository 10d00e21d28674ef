"""A dispatcher's sends in flight (dispatch.py), counted across its passes: at most
`per_target` at once to one relay or subscription, at most `total` rows held in all.

Each claimed row becomes a task that waits for a slot of its target, sends, and frees the
slot. The counts are what the next claim is told (Store.claim_outbox's `busy`), so the loop
claims only rows that can be sent at once, and a target that hangs holds its own slots and
no one else's. A send that ends calls `on_free` when the last claim may have left rows due
for want of its slot (its target got all the rows it had room for, or the claim filled every
free slot), so the loop claims again at once instead of at its next tick, and only then.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence


class SendSlots:
    """Sends in flight per target and in all; see the module docstring."""

    def __init__(self, per_target: int, total: int, on_free: Callable[[], None]) -> None:
        self.per_target = per_target
        self.total = total
        self._on_free = on_free
        self._held: Counter[str] = Counter()  # rows of each target: sending or waiting a slot
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._capped: set[str] = set()  # targets the last claim gave all the rows it could
        self._all_capped = False  # the last claim took as many rows as were free in all

    def free(self) -> int:
        """How many more rows may be held now."""
        return max(0, self.total - len(self._tasks))

    def busy(self) -> dict[str, int]:
        """The rows held for each target that has any."""
        return dict(self._held)

    def claimed(self, busy: Mapping[str, int], limit: int, target_ids: Sequence[str]) -> None:
        """Note what a claim told `busy` and `limit` took: rows of `target_ids`. Counted
        against the claim's own view (sends may have ended while it ran), so a slot that
        frees later wakes the loop whenever that claim was held back by it."""
        held = Counter(busy) + Counter(target_ids)
        self._capped = {target for target, n in held.items() if n >= self.per_target}
        self._all_capped = len(target_ids) >= limit

    def start(self, target_id: str, send: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """`send()` as a task, called once `target_id` has a free slot (at once, unless more
        than `per_target` of its rows were started)."""
        self._held[target_id] += 1
        slot = self._slots.setdefault(target_id, asyncio.Semaphore(self.per_target))
        task = asyncio.create_task(_in_slot(slot, send))
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._release(target_id, done))
        return task

    def _release(self, target_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._held[target_id] -= 1
        if not self._held[target_id]:  # forget idle targets: memory stays bounded by `total`
            del self._held[target_id], self._slots[target_id]
        if target_id in self._capped or self._all_capped:
            self._on_free()

    async def wait(self, timeout_s: float | None) -> None:
        """Until every send held has ended, or `timeout_s` (None: no limit) has passed."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    async def cancel(self) -> int:
        """Cancel every send held, and wait until they have ended; how many there were."""
        held = set(self._tasks)
        for task in held:
            task.cancel()
        if held:
            await asyncio.wait(held)
        return len(held)


async def _in_slot(slot: asyncio.Semaphore, send: Callable[[], Awaitable[None]]) -> None:
    async with slot:
        await send()
