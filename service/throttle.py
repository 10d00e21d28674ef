"""Meta's throttle window: one rule for every caller of Graph (sync, import, doctor).

A throttled call (service.graph_errors.ThrottledError) blocks its WABA for the time Meta
names in its usage header, or DEFAULT_REGAIN_ACCESS_S without a hint. The block is stored,
so every path and every replica sees it, and nothing calls Graph for that WABA until it
ends: calling on would extend Meta's block. Webhooks still arrive meanwhile.
"""

from __future__ import annotations

from .graph_errors import ThrottledError
from .storage import Store, Throttle


def block_until(error: ThrottledError, now_ms: int) -> int:
    """When the block of a call that Meta throttled at `now_ms` ends (epoch ms)."""
    return now_ms + int(error.regain_access_s * 1000)


async def record(store: Store, waba_id: str, error: ThrottledError, now_ms: int) -> Throttle:
    """Store the block that a throttled call to `waba_id` leads to; returns it."""
    block = Throttle(waba_id, block_until(error, now_ms), error.code)
    await store.set_throttle(block)
    return block


async def blocked(store: Store, waba_id: str, now_ms: int) -> Throttle | None:
    """The stored block that keeps callers away from `waba_id` at `now_ms`, if any."""
    block = (await store.throttles([waba_id])).get(waba_id)
    return block if block is not None and block.blocked_until > now_ms else None


def remaining_s(block: Throttle, now_ms: int) -> float:
    """Seconds until the block ends (0 once it has)."""
    return max(block.blocked_until - now_ms, 0) / 1000
