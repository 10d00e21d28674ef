"""Transactions written once as generators of SQL steps, run by either kind of driver.

The webhook hot path is a generator that yields `Step`s and receives each step's rows.
PostgreSQL drives it with awaits on an asyncpg connection; SQLite drives it inside its
database thread in one hop, so a batch of deliveries costs one thread switch and one
commit instead of one switch per statement.
"""

from __future__ import annotations

import inspect
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Step:
    kind: str  # "fetch" (answers row dicts), "fetchrow" (one or None), "execute", "executemany"
    sql: str
    args: tuple[Any, ...]


Steps = Generator[Step, Any, T]


def fetch(sql: str, *args: Any) -> Step:
    return Step("fetch", sql, args)


def fetchrow(sql: str, *args: Any) -> Step:
    return Step("fetchrow", sql, args)


def execute(sql: str, *args: Any) -> Step:
    return Step("execute", sql, args)


def executemany(sql: str, rows: list[tuple[Any, ...]]) -> Step:
    return Step("executemany", sql, (rows,))


class StepTx(Protocol):
    """Answers steps: asyncpg-backed methods return awaitables, sqlite3-backed ones values."""

    def fetch(self, sql: str, *args: Any) -> Any: ...
    def fetchrow(self, sql: str, *args: Any) -> Any: ...
    def execute(self, sql: str, *args: Any) -> Any: ...
    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> Any: ...


async def drive(tx: StepTx, steps: Steps[T]) -> T:
    """Run `steps`; a failing step's exception is thrown into the generator."""
    reply: Any = None
    error: Exception | None = None
    while True:
        try:
            step = steps.throw(error) if error else steps.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        reply, error = None, None
        try:
            reply = getattr(tx, step.kind)(step.sql, *step.args)
            if inspect.isawaitable(reply):
                reply = await reply
        except Exception as exc:
            error = exc


def drive_sync(tx: StepTx, steps: Steps[T]) -> T:
    """Run `steps` on a synchronous tx (inside a database thread): `drive` never suspends."""
    coroutine = drive(tx, steps)
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("a synchronous tx returned an awaitable")
