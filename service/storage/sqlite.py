"""SQLite backend: WAL mode with synchronous=FULL; a writing connection in a thread of its
own, and a reading one for the API's short reads.

Every write runs in that thread; a batch of steps (the webhook hot path) runs there whole,
in one hop and one transaction. The API's reads of a few rows run in the event loop's
thread on the reading connection: WAL lets them proceed while the writer commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from ..config import PREFIX
from ..files import private_directory, private_file
from . import StoreUnavailable
from .steps import Steps, drive_sync

T = TypeVar("T")

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    # Another process holding the write lock (a CLI command, a backup) makes a webhook wait
    # this long before it is refused with 503 and retried by Meta.
    "PRAGMA busy_timeout=500",
)
BEGIN = "BEGIN IMMEDIATE"  # every write transaction takes the write lock at once
MEMORY = ":memory:"  # a database in memory: no file to create
ROWS_PER_STATEMENT = 512  # of at most 14 columns: under SQLite's 32,766 parameters
# Result codes that mean "the database cannot be used right now", not "the query is wrong".
_UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})
_ACCESS_CODES = frozenset({sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM})
_ACCESS_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def unavailable(error: Exception) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return (
        isinstance(error, sqlite3.Error) and code is not None and code & 0xFF in _UNAVAILABLE_CODES
    )


class _SyncTx:
    """Statements on the connection, called from the database thread."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(row) for row in self._conn.execute(sql, args).fetchall()]

    def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        row = self._conn.execute(sql, args).fetchone()
        return dict(row) if row is not None else None

    def execute(self, sql: str, *args: Any) -> None:
        self._conn.execute(sql, args)

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._conn.executemany(sql, rows)


class _Tx:
    """The same statements for the event loop: each one a hop to the database thread."""

    for_update = ""  # BEGIN IMMEDIATE already holds the write lock

    def __init__(self, backend: SqliteBackend) -> None:
        self._backend = backend
        self._sync = _SyncTx(backend.conn)

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return await self._backend.call(self._sync.fetch, sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None:
        return await self._backend.call(self._sync.fetchrow, sql, *args)

    async def execute(self, sql: str, *args: Any) -> None:
        await self._backend.call(self._sync.execute, sql, *args)


def _open(path: str) -> sqlite3.Connection:
    private_directory(Path(path).parent)
    if path != MEMORY:
        private_file(Path(path))  # before SQLite makes it 0644; -wal and -shm take its mode
    _require_access(Path(path))
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, cached_statements=256
    )  # room for every batch statement text (ingest.py)
    conn.row_factory = sqlite3.Row
    for pragma in PRAGMAS:
        conn.execute(pragma)
    return conn


def _require_access(path: Path) -> None:
    """Every command writes: an existing file SQLite could only read (it would open it
    read-only and fail at the first write) is refused at once."""
    writable = os.W_OK | os.X_OK
    if path.exists() and not (
        os.access(path, os.R_OK | os.W_OK) and os.access(path.parent, writable)
    ):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))


def _existing_parent(path: str) -> Path:
    """The nearest folder of `path` that exists (or what stands where it should be)."""
    parent = Path(path).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def open_failure(path: str, error: OSError | sqlite3.Error) -> StoreUnavailable:
    """Why the database at `path` cannot be opened, and what to do."""
    problem, or_fix = f"cannot open SQLite database {path}", f"or fix {PREFIX}DATABASE_URL"
    code, folder = getattr(error, "sqlite_errorcode", 0) & 0xFF, _existing_parent(path)
    if not folder.is_dir():  # a file where a folder goes
        reason, fix = f"{folder} is not a directory", f"name another path {or_fix}"
    elif Path(path).is_dir():
        reason = "it is a directory"
        fix = f"name a file in {PREFIX}DATABASE_URL, e.g. sqlite:///{path}/template-sync.db"
    elif code == sqlite3.SQLITE_NOTADB:
        reason = "it is not a SQLite database"
        fix = f"name the service's database file, or a new one, in {PREFIX}DATABASE_URL"
    elif code in _ACCESS_CODES or getattr(error, "errno", None) in _ACCESS_ERRNOS:
        reason = "permission denied"
        fix = (
            f"give the user running template-sync read and write access to it and to "
            f"{folder} (SQLite adds -wal and -shm files there) {or_fix}"
        )
    else:
        reason, fix = str(error), f"check the file {or_fix}"
    return StoreUnavailable(f"{problem}: {reason}", fix)


class SqliteBackend:
    parallel_batches = 1  # one writer
    batch_setup: str | None = None
    schema_words: Mapping[str, str] = MappingProxyType({
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "blob": "BLOB",
        "generated": "VIRTUAL",  # ALTER TABLE cannot add a STORED column
        "templates_fillfactor": "",  # pages are always filled
    })  # fmt: skip
    for_update = _Tx.for_update
    migration_lock: str | None = None  # BEGIN IMMEDIATE already excludes other writers
    table_exists = "SELECT 1 AS ok FROM sqlite_master WHERE type = 'table' AND name = ?"
    unavailable = staticmethod(unavailable)

    def __init__(
        self, conn: sqlite3.Connection, reader: sqlite3.Connection, thread: ThreadPoolExecutor
    ) -> None:
        self.conn = conn  # every write, in `thread`
        self._reader = reader  # short reads, in the event loop's thread
        self._thread = thread
        self._lock = asyncio.Lock()

    @staticmethod
    def row_source(
        types: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """VALUES lists of 2**n rows, up to ROWS_PER_STATEMENT (37 rows: 32, 4 and 1), so
        each statement has one of a few texts, which the connection keeps prepared."""
        group = "(" + ", ".join("?" * len(types)) + ")"
        sources = []
        start = 0
        while start < len(rows):
            size = min(ROWS_PER_STATEMENT, 1 << ((len(rows) - start).bit_length() - 1))
            args = tuple(value for row in rows[start : start + size] for value in row)
            sources.append((f"(VALUES {', '.join([group] * size)})", args))
            start += size
        return sources

    @classmethod
    async def connect(cls, path: str) -> SqliteBackend:
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        try:
            conn = await asyncio.get_running_loop().run_in_executor(thread, _open, path)
            reader = _open(path)
        except (OSError, sqlite3.Error) as error:
            thread.shutdown()
            raise open_failure(path, error) from error
        return cls(conn, reader, thread)

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        async with self._lock:
            try:
                await self.call(self.conn.execute, BEGIN)
                yield _Tx(self)
                await self.call(self.conn.execute, "COMMIT")
            except BaseException as error:
                await asyncio.shield(self.call(_rollback, self.conn))
                if isinstance(error, Exception) and unavailable(error):
                    raise StoreUnavailable(f"SQLite: {error}") from error
                raise

    async def run(self, steps: Steps[T], write: bool = True) -> T:
        """Run `steps`: a write as one transaction, entirely in the database thread (one hop);
        a read's statements each on their own, on a connection of its own, right here (WAL
        readers never wait for the writer, and reading a few rows costs less than a hop)."""
        try:
            if not write:
                return drive_sync(_SyncTx(self._reader), steps)
            async with self._lock:
                return await self.call(_run_steps, self.conn, steps)
        except sqlite3.Error as error:
            if unavailable(error):
                raise StoreUnavailable(f"SQLite: {error}") from error
            raise

    async def close(self) -> None:
        self._reader.close()
        await self.call(self.conn.close)
        self._thread.shutdown(wait=True)


def _run_steps(conn: sqlite3.Connection, steps: Steps[T]) -> T:
    conn.execute(BEGIN)
    try:
        result = drive_sync(_SyncTx(conn), steps)
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return result


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):  # a failed statement may have rolled back
            conn.execute("ROLLBACK")
