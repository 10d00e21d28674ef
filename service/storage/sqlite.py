"""SQLite backend: one connection in WAL mode with synchronous=FULL, writes serialised."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from . import StoreUnavailable

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    # Another process holding the write lock (a CLI command, a backup) makes a webhook wait
    # this long before it is refused with 503 and retried by Meta.
    "PRAGMA busy_timeout=500",
)
# Result codes that mean "the database cannot be used right now", not "the query is wrong".
_UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})


def _unavailable(error: sqlite3.Error) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _UNAVAILABLE_CODES


class _Tx:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        async with self._conn.execute(sql, args) as cursor:
            return [dict(row) for row in await cursor.fetchall()]

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def execute(self, sql: str, *args: Any) -> None:
        await self._conn.execute(sql, args)


class SqliteBackend:
    serial = "INTEGER PRIMARY KEY AUTOINCREMENT"
    blob = "BLOB"
    for_update = ""
    migration_lock: str | None = None  # BEGIN IMMEDIATE already excludes other writers

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls, path: str) -> SqliteBackend:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(path, isolation_level=None)
            conn.row_factory = sqlite3.Row
            for pragma in PRAGMAS:
                await conn.execute(pragma)
        except (OSError, sqlite3.Error) as error:
            raise StoreUnavailable(f"cannot open SQLite database {path}: {error}") from error
        return cls(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        async with self._lock:
            try:
                await self._conn.execute("BEGIN IMMEDIATE")
                yield _Tx(self._conn)
                await self._conn.execute("COMMIT")
            except BaseException as error:
                if self._conn.in_transaction:
                    await asyncio.shield(self._rollback())
                if isinstance(error, sqlite3.Error) and _unavailable(error):
                    raise StoreUnavailable(f"SQLite: {error}") from error
                raise

    async def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # a failed statement may have rolled back
            await self._conn.execute("ROLLBACK")

    async def close(self) -> None:
        await self._conn.close()
