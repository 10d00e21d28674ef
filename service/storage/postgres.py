"""PostgreSQL backend: an asyncpg pool; `?` placeholders become `$n`. The API's lookups
(transactions.lookup) that arrive together go to the server as one statement."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import asyncpg

from ..config import PREFIX
from .group_commit import GroupCommit
from .models import StoreUnavailable
from .transactions import Transaction, drive

T = TypeVar("T")

CONNECT_TIMEOUT_S = 5.0  # opening the pool at start-up
# Batches of lookups served side by side, of the pool's 10 connections (group_commit.py).
LOOKUP_PARALLEL = 2
ACQUIRE_TIMEOUT_S = 1.0  # a request waits this long for a connection before 503
# Errors that mean "the server cannot be used right now", not "the query is wrong".
_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    # The database or role is missing (or was dropped under a running service).
    asyncpg.exceptions.InvalidCatalogNameError,
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
)
DATABASE_URL = f"{PREFIX}DATABASE_URL"


@dataclass(frozen=True)
class _Target:
    """What a PostgreSQL URL names, for messages: everything but the password."""

    where: str  # host:port, or the hosts as written when there are several
    host: str | None = None
    port: int | None = None
    user: str | None = None
    database: str | None = None

    @classmethod
    def of(cls, url: str) -> _Target:
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError:  # several hosts, or a port that is not a number
            return cls(url.partition("://")[2].rpartition("@")[2].split("/")[0])
        shown = f"[{host}]" if host and ":" in host else host or "localhost"
        user = unquote(parts.username) if parts.username else None
        database = unquote(parts.path.lstrip("/")) or None
        return cls(f"{shown}:{port or 5432}", host, port, user, database)

    def command(self, program: str, *args: str, as_user: bool = True) -> str:
        """`program` pointed at this server (and as the URL's user), for a fix to paste."""
        options = [("-h", self.host), ("-p", str(self.port) if self.port else None)]
        options.append(("-U", self.user if as_user else None))
        flags = [item for flag, value in options if value for item in (flag, value)]
        return shlex.join([program, *flags, *args])


def connect_failure(url: str, error: BaseException) -> StoreUnavailable:
    """What went wrong connecting to `url`, and what to do; never the URL's password."""
    problem, fix = _explain(_Target.of(url), error)
    return StoreUnavailable(_scrub(problem, url), _scrub(fix, url))


def _scrub(text: str, url: str) -> str:
    userinfo = re.match(r"[^:/]*://([^@/]*)@", url)
    password = userinfo.group(1).partition(":")[2] if userinfo else ""
    for secret in {password, unquote(password)} - {""}:
        text = text.replace(secret, "***")
    return text


def _explain(target: _Target, error: BaseException) -> tuple[str, str]:
    on, or_fix = f"{error} on {target.where}", f"or fix {DATABASE_URL}"
    if isinstance(error, asyncpg.InvalidCatalogNameError):
        createdb = target.command("createdb", *filter(None, [target.database]))
        return on, f"create it ({createdb}) {or_fix}"
    if isinstance(error, asyncpg.InvalidPasswordError):
        return on, (
            f"put the role's password in {DATABASE_URL} "
            "(postgresql://USER:PASSWORD@HOST:PORT/DATABASE, with @ : / %-encoded)"
        )
    if isinstance(error, asyncpg.InvalidAuthorizationSpecificationError):
        if target.user and "does not exist" in str(error):
            createuser = target.command("createuser", target.user, as_user=False)
            return on, f"create it, as a superuser ({createuser}), {or_fix}"
        return on, f"allow this host and role in the server's pg_hba.conf {or_fix}"
    if isinstance(error, asyncpg.InsufficientPrivilegeError):
        return on, f"grant the role CONNECT on the database {or_fix}"
    if isinstance(error, asyncpg.TooManyConnectionsError):
        return on, "raise the server's max_connections or stop what holds its connections"
    if isinstance(error, asyncpg.PostgresError):
        refused = f"PostgreSQL at {target.where} refused the connection: {error}"
        return refused, f"check {DATABASE_URL} and the server's log"
    if isinstance(error, ValueError):
        invalid = f"{DATABASE_URL} is not a usable PostgreSQL URL: {error}"
        return invalid, "write it as postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
    cannot = f"cannot connect to PostgreSQL at {target.where}"
    if isinstance(error, TimeoutError):
        late = f"{cannot}: no answer within {CONNECT_TIMEOUT_S:g} s"
        return late, f"check that it runs and that this host may reach it, {or_fix}"
    reason: object = error
    if isinstance(error, OSError):  # asyncio's strerror names the address: say it once
        reason = os.strerror(error.errno) if error.errno and error.errno > 0 else error.strerror
    return f"{cannot}: {reason or error}", f"start the database {or_fix}"


@lru_cache(maxsize=512)
def _numbered(sql: str) -> str:
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """A released connection is only rolled back (asyncpg does that before this), not reset
    with a round trip of RESET ALL, UNLISTEN and friends: the service keeps no session state
    (its settings are SET LOCAL, its advisory locks end with their transaction)."""


Row = dict[str, Any]
Lookup = tuple[str, tuple[Any, ...]]  # a lookup's statement: SQL with `?`, and arguments
# What a lookup's arguments are sent as, in the arrays of a batch (`_in_one`).
_ARRAY_TYPES = {int: "bigint", str: "text"}


@lru_cache(maxsize=64)
def _in_one(sql: str, types: tuple[str, ...]) -> str:
    """`sql`, a lookup (at most one row), for many argument tuples sent as one array per
    placeholder: each row it answers carries its tuple's position, from 1, as `lookup_n_`.
    The text is the same whatever the batch's size, so it is prepared once."""
    names = [f"a{n}" for n in range(1, len(types) + 1)]
    placeholders = iter(names)
    one = re.sub(r"\?", lambda _: f"q.{next(placeholders)}", sql)
    arrays = ", ".join(f"${n}::{sql_type}[]" for n, sql_type in enumerate(types, 1))
    return (
        f"SELECT q.lookup_n_, s.* FROM unnest({arrays}) WITH ORDINALITY "
        f"AS q ({', '.join(names)}, lookup_n_) JOIN LATERAL ({one}) AS s ON true"
    )


def _array_types(arguments: list[tuple[Any, ...]]) -> tuple[str, ...] | None:
    """The SQL types of the lookups' arguments; None unless every tuple has the same
    types, each one an array can carry."""
    first = tuple(type(value) for value in arguments[0])
    if any(tuple(type(value) for value in args) != first for args in arguments):
        return None
    types = tuple(_ARRAY_TYPES.get(kind) for kind in first)
    return None if None in types else types  # type: ignore[return-value]


class _Lookup:
    """The connection a lookup runs on (transactions.Connection): its one fetchrow joins
    the backend's next batch of lookups."""

    def __init__(self, batches: GroupCommit[Lookup, Row | None]) -> None:
        self._batches = batches

    def fetchrow(self, sql: str, *args: Any) -> Any:
        return self._batches.submit((sql, args))

    def fetch(self, sql: str, *args: Any) -> Any:
        raise TypeError("a lookup is one fetchrow (transactions.lookup)")

    execute = executemany = fetch


class _Session:
    """Statements on one connection (transactions.Connection). Argument-less statements
    that open a transaction (BEGIN, then a batch's SET LOCAL and SAVEPOINT) wait in
    `opening`, and go to the server in one round trip, just before the first statement
    that is not one of them."""

    def __init__(self, conn: asyncpg.Connection, opening: tuple[str, ...] = ()) -> None:
        self._conn = conn
        self._opening = list(opening)

    async def _open(self) -> None:
        if self._opening:
            sql, self._opening = "; ".join(self._opening), []
            await self._conn.execute(sql)  # no arguments: several statements may go at once

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        await self._open()
        return [dict(row) for row in await self._conn.fetch(_numbered(sql), *args)]

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        await self._open()
        row = await self._conn.fetchrow(_numbered(sql), *args)
        return dict(row) if row is not None else None

    async def execute(self, sql: str, *args: Any) -> None:
        if self._opening and not args:
            self._opening.append(sql)
            return
        await self._open()
        await self._conn.execute(_numbered(sql), *args)

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        await self._open()
        await self._conn.executemany(_numbered(sql), rows)

    async def commit(self) -> None:
        self._opening.append("COMMIT")  # with what still waits, if anything does
        await self._open()

    async def rollback(self) -> None:
        if self._opening:
            self._opening = []  # nothing reached the server
        else:
            await self._conn.execute("ROLLBACK")


def _without_n(row: asyncpg.Record) -> Row:
    found = dict(row)
    del found["lookup_n_"]
    return found


class PostgresBackend:
    parallel_batches = 4  # of the pool's 10 connections; the API and poller keep the rest
    # Every statement of a webhook batch is an index lookup by design, with one generic
    # plan: a young table's scan plans, which prepared statements keep, and custom plans
    # made afresh for small batches both cost far more (bench/RESULTS.md, "Why ...").
    batch_setup: str | None = (
        "SET LOCAL enable_seqscan = off; SET LOCAL plan_cache_mode = force_generic_plan"
    )
    schema_words: Mapping[str, str] = MappingProxyType({
        "serial": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        "blob": "BYTEA",
        "generated": "STORED",
        # Room on each page for a template's next version, so its update can be HOT.
        "templates_fillfactor": "ALTER TABLE templates SET (fillfactor = 70)",
        "channels_token_optional":
            "ALTER TABLE channels ALTER COLUMN access_token_enc DROP NOT NULL",
    })  # fmt: skip
    for_update = " FOR UPDATE"
    migration_lock: str | None = "SELECT pg_advisory_xact_lock(7240411)"
    history_lock: str | None = "SELECT pg_advisory_xact_lock(7240412)"
    table_exists = (
        "SELECT 1 AS ok FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_name = ?"
    )

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._lookups = GroupCommit(self._look_up_batch, LOOKUP_PARALLEL)

    @classmethod
    async def connect(cls, url: str) -> PostgresBackend:
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=10,
                timeout=CONNECT_TIMEOUT_S,
                reset=_keep_session,
            )
        except (*_UNAVAILABLE, asyncpg.PostgresError, ValueError) as error:
            raise connect_failure(url, error) from None  # asyncpg's chain is 60 lines
        return cls(pool)

    @staticmethod
    def row_source(
        types: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """One array per column: any number of rows in one statement (one round trip) of
        one text (one prepared statement)."""
        arrays = ", ".join(f"?::{sql_type}[]" for sql_type in types)
        names = ", ".join(f"column{n}" for n in range(1, len(types) + 1))
        columns = tuple(list(column) for column in zip(*rows, strict=True))
        return [(f"(SELECT * FROM unnest({arrays}) AS u ({names}))", columns)]

    async def run(self, tx: Transaction[T]) -> T:
        """`tx` as one transaction, whose BEGIN goes in one round trip with the
        argument-less statements that open it (a webhook batch: two round trips fewer)."""
        async with self._connection() as conn:
            session = _Session(conn, opening=("BEGIN",))
            try:
                result = await drive(session, tx)
            except BaseException:
                with contextlib.suppress(Exception):  # the error to report is the first one
                    await session.rollback()
                raise
            await session.commit()
        return result

    async def read(self, tx: Transaction[T]) -> T:
        async with self._connection() as conn:
            return await drive(_Session(conn), tx)

    async def look_up(self, tx: Transaction[T]) -> T:
        """`tx`, a lookup, in the next batch of lookups: a GET's read costs the service
        about 5 us there, against about 75 us in a round trip of its own (bench/RESULTS.md,
        "Why the code is as it is")."""
        return await drive(_Lookup(self._lookups), tx)

    async def _look_up_batch(self, lookups: list[Lookup]) -> list[Row | Exception | None]:
        """Each lookup's row, or its error; those of one SQL text in one statement."""
        by_sql: dict[str, list[int]] = {}
        for index, (sql, _) in enumerate(lookups):
            by_sql.setdefault(sql, []).append(index)
        rows: list[Row | Exception | None] = [None] * len(lookups)
        async with self._connection() as conn:
            for sql, indexes in by_sql.items():
                found = await self._rows(conn, sql, [lookups[i][1] for i in indexes])
                for index, row in zip(indexes, found, strict=True):
                    rows[index] = row
        return rows

    async def _rows(
        self, conn: asyncpg.Connection, sql: str, arguments: list[tuple[Any, ...]]
    ) -> list[Row | Exception | None]:
        """The rows of one lookup's SQL for each argument tuple: in one statement, or one
        statement each when the arguments do not fit arrays or that statement failed (so
        one lookup's bad argument fails only its own request)."""
        types = _array_types(arguments) if len(arguments) > 1 else None
        if types is not None:
            columns = [list(column) for column in zip(*arguments, strict=True)]
            try:
                found = await conn.fetch(_in_one(sql, types), *columns)
            except Exception as error:
                if self.unavailable(error):
                    raise
            else:
                by_n = {row["lookup_n_"]: _without_n(row) for row in found}
                return [by_n.get(n) for n in range(1, len(arguments) + 1)]
        return [await self._row(conn, sql, args) for args in arguments]

    async def _row(self, conn: asyncpg.Connection, sql: str, args: tuple[Any, ...]) -> Any:
        try:
            row = await conn.fetchrow(_numbered(sql), *args)
        except Exception as error:
            if self.unavailable(error):
                raise
            return error
        return dict(row) if row is not None else None

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; errors meaning "unreachable" as StoreUnavailable."""
        try:
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
                yield conn
        except _UNAVAILABLE as error:
            raise StoreUnavailable(f"PostgreSQL: {type(error).__name__}") from error

    @staticmethod
    def unavailable(error: Exception) -> bool:
        return isinstance(error, _UNAVAILABLE)

    async def close(self) -> None:
        await self._lookups.close()
        await self._pool.close()
