"""Background loops of passes (the poller's, the dispatcher's): one pass after another,
`tick_s` apart or sooner when woken, until stopped; run as a task for a block's duration."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from typing import Any

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0  # failed passes back off exponentially from the tick up to this


class Signals:
    """What a loop is told from outside: wake up now, or stop after the current pass."""

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self.stopping = False

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self.stopping = True
        self._wake.set()

    async def sleep(self, seconds: float) -> None:
        """Until `seconds` have passed or someone wakes (or stops) the loop."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        self._wake.clear()


async def repeat(
    what: str, one_pass: Callable[[], Awaitable[object]], tick_s: float, signals: Signals
) -> None:
    """`one_pass` until `signals` says stop. A failed pass is tried again after twice the
    previous wait, from `tick_s` up to MAX_BACKOFF_S (a store outage is not hammered, nor
    the log flooded): the first failure is logged with its traceback, later ones in a line
    each, and the first pass that works again says so."""
    failures = 0
    while not signals.stopping:
        try:
            await one_pass()
        except Exception:
            failures += 1
            delay_s = min(tick_s * 2 ** min(failures - 1, 32), max(tick_s, MAX_BACKOFF_S))
            if failures == 1:
                logger.exception("%s pass failed; next try in %.1f s", what, delay_s)
            else:
                logger.warning(
                    "%s pass failed %d times in a row; next try in %.1f s", what, failures, delay_s
                )
            await signals.sleep(delay_s)
            continue
        if failures:
            logger.warning("%s passes resumed after %d failed", what, failures)
            failures = 0
        await signals.sleep(tick_s)


@asynccontextmanager
async def in_background(
    what: str,
    run: Callable[[], Coroutine[Any, Any, None]],
    signals: Signals,
    stop_timeout_s: float,
) -> AsyncIterator[None]:
    """`run()` as a task for the block's duration. On exit the loop is told to stop, its
    current pass gets `stop_timeout_s` to finish and is cancelled after that. A crash of
    the loop is re-raised on exit (unless the block itself raised, which then wins and the
    crash is logged)."""
    signals.stopping = False
    task = asyncio.create_task(run(), name=what)
    task.add_done_callback(lambda done: _log_crash(what, done))
    try:
        yield
    except BaseException:
        await _stop(what, task, signals, stop_timeout_s)
        raise
    crash = await _stop(what, task, signals, stop_timeout_s)
    if crash is not None:
        raise crash


async def _stop(
    what: str, task: asyncio.Task[None], signals: Signals, timeout_s: float
) -> BaseException | None:
    """Stop the loop, cancel it after `timeout_s`; its crash, if any."""
    signals.stop()
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        logger.warning("%s pass still running after %.1f s; cancelling it", what, timeout_s)
        task.cancel()
        await asyncio.wait({task})
    return None if task.cancelled() else task.exception()


def _log_crash(what: str, task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("the %s loop crashed", what, exc_info=task.exception())
