"""Waiting in tests: a condition with a deadline that fails loudly, and gates the test opens.

A test never sleeps for "long enough": it waits for what it needs (`eventually`), or holds
the work it wants to catch in the middle until it has looked (`GatedSimulator`, or an
`asyncio.Event` its own fake awaits).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

from aiohttp import web

from service.simulator import Handler, Simulator

T = TypeVar("T")

TIMEOUT_S = 5.0
INTERVAL_S = 0.01

Message = str | Callable[[], object] | None


@overload
async def eventually(
    condition: Callable[[], Awaitable[T | None]],
    timeout_s: float = ...,
    *,
    message: Message = ...,
    interval_s: float = ...,
) -> T: ...


@overload
async def eventually(
    condition: Callable[[], T | None],
    timeout_s: float = ...,
    *,
    message: Message = ...,
    interval_s: float = ...,
) -> T: ...


async def eventually(
    condition: Callable[[], Any],
    timeout_s: float = TIMEOUT_S,
    *,
    message: Message = None,
    interval_s: float = INTERVAL_S,
) -> Any:
    """Poll `condition` (sync or async) until it returns something true, and return that.

    When `timeout_s` passes first the test fails (AssertionError) saying what it waited for:
    `message` (a string, or a callable giving the state worth showing), else the condition's
    source. The condition is asked once more after the deadline; an exception it raises
    (a process that died, say) propagates at once.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout_s} s: {_describe(condition, message)}")
        await asyncio.sleep(interval_s)


def _describe(condition: Callable[[], object], message: Message) -> str:
    if message is not None:
        return str(message() if callable(message) else message)
    if getattr(condition, "__name__", "") == "<lambda>":
        try:
            return inspect.getsource(condition).strip()
        except (OSError, TypeError):
            pass
    return getattr(condition, "__qualname__", repr(condition))


class GatedSimulator(Simulator):
    """The Meta simulator; while the gate is shut, each Graph call waits before Meta sees it.

    `waiting` counts the calls held now, so a test knows what is in flight before it opens
    the gate. The gate starts open; the control API (`/_sim/`) is never held.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._gate = asyncio.Event()
        self._gate.set()
        self.waiting = 0

    def shut(self) -> None:
        self._gate.clear()

    def open(self) -> None:
        self._gate.set()

    def build_app(self) -> web.Application:
        app = super().build_app()
        app.middlewares.insert(0, self._hold)
        return app

    @web.middleware
    async def _hold(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith("/_sim/"):
            self.waiting += 1
            try:
                await self._gate.wait()
            finally:
                self.waiting -= 1
        return await handler(request)
