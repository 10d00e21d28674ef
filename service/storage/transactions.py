"""Every store method is a transaction written once, as a generator of SQL statements.

A method yields `Statement`s and receives each one's rows; the backend (a `Database`) runs
the generator: PostgreSQL with awaits on a pooled asyncpg connection, SQLite whole inside
a thread of its own, so a method costs one thread hop however many statements it runs.
Each method is marked with how it runs, and nothing else reaches the database:
- `@transaction`: BEGIN, its statements, COMMIT, rolled back on any error; on SQLite in
  the writing thread, one at a time. Every method that writes, or reads more than once.
- `@read`: one statement that only reads, without BEGIN and COMMIT; on SQLite in a
  reading thread of its own, so it never waits for a commit (WAL) nor stalls the loop.
- `@lookup`: a `@read` of one row by primary key on the API's hot path; on SQLite right on
  the event loop's thread, on PostgreSQL in one statement with those arriving together
  (see there why).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

T = TypeVar("T")
P = ParamSpec("P")


@dataclass(frozen=True)
class Statement:
    kind: str  # "fetch" (answers row dicts), "fetchrow" (one or None), "execute", "executemany"
    sql: str  # `?` placeholders
    args: tuple[Any, ...]


Transaction = Generator[Statement, Any, T]


def fetch(sql: str, *args: Any) -> Statement:
    return Statement("fetch", sql, args)


def fetchrow(sql: str, *args: Any) -> Statement:
    return Statement("fetchrow", sql, args)


def execute(sql: str, *args: Any) -> Statement:
    return Statement("execute", sql, args)


def executemany(sql: str, rows: list[tuple[Any, ...]]) -> Statement:
    return Statement("executemany", sql, (rows,))


def count_returned(sql: str, *args: Any) -> Transaction[int]:
    """Run one statement with RETURNING; how many rows it returned."""
    rows: list[Any] = yield fetch(sql, *args)
    return len(rows)


class Connection(Protocol):
    """Answers statements: asyncpg-backed methods return awaitables, sqlite3-backed ones
    values."""

    def fetch(self, sql: str, *args: Any) -> Any: ...
    def fetchrow(self, sql: str, *args: Any) -> Any: ...
    def execute(self, sql: str, *args: Any) -> Any: ...
    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> Any: ...


async def drive(conn: Connection, tx: Transaction[T]) -> T:
    """Run `tx`'s statements on `conn`; a failing one's exception is thrown into `tx`."""
    reply: Any = None
    error: Exception | None = None
    while True:
        try:
            statement = tx.throw(error) if error else tx.send(reply)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        reply, error = None, None
        try:
            reply = getattr(conn, statement.kind)(statement.sql, *statement.args)
            if inspect.isawaitable(reply):
                reply = await reply
        except Exception as exc:
            error = exc


def drive_blocking(conn: Connection, tx: Transaction[T]) -> T:
    """`drive` on a connection whose methods return values (sqlite3): it never suspends."""
    coroutine = drive(conn, tx)
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("a blocking connection returned an awaitable")


class Database(Protocol):
    """A backend: what differs in its SQL, and how it runs a transaction."""

    parallel_batches: int  # webhook batches that may commit at once (group_commit.py)
    schema_words: Mapping[str, str]  # schema.py
    migration_lock: str | None  # a statement that serialises migrations, where needed
    # Taken just before a transaction's first history row, held to its commit, so history
    # ids are in commit order: a reader resuming after an id never misses a row committed
    # later with a smaller one (template_rows.insert_events). None where writers are serial.
    history_lock: str | None
    table_exists: str  # one `?`: the table name
    for_update: str  # appended to a SELECT that locks its rows ("" where BEGIN locks all)
    batch_setup: str | None  # argument-less statements that open a webhook batch

    def unavailable(self, error: Exception) -> bool:
        """Whether `error` means "the database cannot be used now", not "the SQL is wrong"."""
        ...

    def row_source(
        self, types: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """`rows` (of the SQL `types`) as table expressions with columns column1, column2...,
        each with its arguments: one per statement to run, as few as the database allows."""
        ...

    async def run(self, tx: Transaction[T]) -> T:
        """`tx` as one transaction; StoreUnavailable when the database is out of reach."""
        ...

    async def read(self, tx: Transaction[T]) -> T:
        """`tx`, a `@read`, without a transaction around it."""
        ...

    async def look_up(self, tx: Transaction[T]) -> T:
        """`tx`, a `@lookup`, without a transaction around it."""
        ...

    async def close(self) -> None: ...


class Queries:
    """Base of the classes holding store methods, one per aggregate (sql_store.SqlStore)."""

    _db: Database


Q = TypeVar("Q", bound=Queries)
Method = Callable[Concatenate[Q, P], Transaction[T]]
AsyncMethod = Callable[Concatenate[Q, P], Coroutine[Any, Any, T]]


def transaction(method: Method[Q, P, T]) -> AsyncMethod[Q, P, T]:
    """The store method `method`, run by the database as one transaction."""

    @functools.wraps(method)
    async def run(self: Q, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._db.run(method(self, *args, **kwargs))

    return run


def read(method: Method[Q, P, T]) -> AsyncMethod[Q, P, T]:
    """The store method `method`, one statement that only reads, run without a transaction
    (the statement is its own snapshot)."""

    @functools.wraps(method)
    async def run(self: Q, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._db.read(method(self, *args, **kwargs))

    return run


def lookup(method: Method[Q, P, T]) -> AsyncMethod[Q, P, T]:
    """A `@read` of the API's hot path: one statement of at most one row by primary key (a
    token, a template).

    On SQLite it runs right here, on the event loop's thread, on a connection of its own:
    such a read costs less than the hop to a thread (a template GET's read: about 20 us
    here, 50 us through a thread; bench/RESULTS.md), WAL lets it proceed while the writer
    commits, and that connection never waits for a lock (busy_timeout 0). Nothing slower
    may be a lookup: it would stall every request, webhook acknowledgements included.

    On PostgreSQL the lookups that arrive while a batch of them is at the server go as the
    next batch, one statement for all those of one SQL text (postgres.py): a round trip
    costs the service far more CPU than the read (bench/RESULTS.md). So a lookup's SQL is a
    SELECT whose `?` are each an int or a str, answering at most one row.
    """

    @functools.wraps(method)
    async def run(self: Q, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._db.look_up(method(self, *args, **kwargs))

    return run
