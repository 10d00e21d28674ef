"""SQLite backend: WAL mode with synchronous=FULL; three connections, one per way a store
method runs (transactions.py): a writing thread runs every transaction whole, one at a
time, in one hop; a reading thread answers @reads; @lookups run on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from ..config import PREFIX
from ..files import private_directory, private_file
from .models import StoreUnavailable
from .transactions import Transaction, drive_blocking

T = TypeVar("T")

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
)
# Another process holding the write lock (a CLI command, a backup) makes a webhook wait
# this long, in the writing thread, before it is refused with 503 and retried by Meta.
# Reading connections never wait: WAL readers take no lock a writer holds.
WRITER_BUSY_MS = 500
BEGIN = "BEGIN IMMEDIATE"  # every write transaction takes the write lock at once
MEMORY = ":memory:"  # a database in memory: no file to create
ROWS_PER_STATEMENT = 512  # of at most 14 columns: under SQLite's 32,766 parameters
# Result codes that mean "the database cannot be used right now", not "the query is wrong".
# SQLite cannot drop a NOT NULL: migration 14 rebuilds the channels table (nothing refers
# to it) with an optional Meta token.
REBUILD_CHANNELS = """
    CREATE TABLE channels_14 (
        id TEXT PRIMARY KEY,
        workspace_id TEXT NOT NULL REFERENCES workspaces (id),
        waba_id TEXT NOT NULL UNIQUE,
        access_token_enc TEXT,
        created_at BIGINT NOT NULL
    );
    INSERT INTO channels_14 SELECT id, workspace_id, waba_id, access_token_enc, created_at
        FROM channels;
    DROP TABLE channels;
    ALTER TABLE channels_14 RENAME TO channels;
    CREATE INDEX channels_workspace ON channels (workspace_id)
"""
_UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})
_ACCESS_CODES = frozenset({sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM})
_ACCESS_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def unavailable(error: Exception) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return (
        isinstance(error, sqlite3.Error) and code is not None and code & 0xFF in _UNAVAILABLE_CODES
    )


class _BlockingConnection:
    """Statements on a sqlite3 connection, answered at once (transactions.Connection)."""

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


def _open(path: str, busy_ms: int) -> sqlite3.Connection:
    private_directory(Path(path).parent)
    if path != MEMORY:
        private_file(Path(path))  # before SQLite makes it 0644; -wal and -shm take its mode
    _require_access(Path(path))
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, cached_statements=256
    )  # room for every batch statement text (delivery_batch.py)
    conn.row_factory = sqlite3.Row
    for pragma in (*PRAGMAS, f"PRAGMA busy_timeout={busy_ms}"):
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
        "channels_token_optional": REBUILD_CHANNELS,
    })  # fmt: skip
    for_update = ""  # BEGIN IMMEDIATE already holds the write lock
    migration_lock: str | None = None  # BEGIN IMMEDIATE already excludes other writers
    history_lock: str | None = None  # and commits in the order ids are taken
    table_exists = "SELECT 1 AS ok FROM sqlite_master WHERE type = 'table' AND name = ?"
    unavailable = staticmethod(unavailable)

    def __init__(self, writer: _Thread, reader: _Thread, lookups: sqlite3.Connection) -> None:
        self._writer = writer  # every transaction, one at a time
        self._reader = reader  # every @read
        self._lookups = lookups  # every @lookup, in the event loop's thread

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
        opened: list[_Thread] = []
        try:
            for name, busy_ms in (("sqlite-writer", WRITER_BUSY_MS), ("sqlite-reader", 0)):
                opened.append(await _Thread.open(path, busy_ms, name))
            lookups = _open(path, 0)
        except (OSError, sqlite3.Error) as error:
            for thread in opened:
                await thread.close()
            raise open_failure(path, error) from error
        writer, reader = opened
        return cls(writer, reader, lookups)

    async def run(self, tx: Transaction[T]) -> T:
        """`tx` whole in the writing thread: BEGIN IMMEDIATE, its statements, COMMIT."""
        with _store_errors():
            return await self._writer.call(_run_blocking, tx)

    async def read(self, tx: Transaction[T]) -> T:
        with _store_errors():
            return await self._reader.call(_drive, tx)

    async def look_up(self, tx: Transaction[T]) -> T:
        with _store_errors():
            return _drive(self._lookups, tx)

    async def close(self) -> None:
        self._lookups.close()
        await self._reader.close()
        await self._writer.close()


@dataclass(frozen=True)
class _Thread:
    """A connection used in a thread of its own, one call at a time."""

    conn: sqlite3.Connection
    executor: ThreadPoolExecutor

    @classmethod
    async def open(cls, path: str, busy_ms: int, name: str) -> _Thread:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        try:
            loop = asyncio.get_running_loop()
            return cls(await loop.run_in_executor(executor, _open, path, busy_ms), executor)
        except BaseException:
            executor.shutdown()
            raise

    async def call(
        self, function: Callable[[sqlite3.Connection, Transaction[T]], T], tx: Transaction[T]
    ) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, function, self.conn, tx)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.executor, self.conn.close)
        self.executor.shutdown(wait=True)


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """SQLite's "cannot be used now" errors as StoreUnavailable; others as they are."""
    try:
        yield
    except sqlite3.Error as error:
        if unavailable(error):
            raise StoreUnavailable(f"SQLite: {error}") from error
        raise


def _drive(conn: sqlite3.Connection, tx: Transaction[T]) -> T:
    return drive_blocking(_BlockingConnection(conn), tx)


def _run_blocking(conn: sqlite3.Connection, tx: Transaction[T]) -> T:
    conn.execute(BEGIN)
    try:
        result = _drive(conn, tx)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # a failed statement may have rolled back
                conn.execute("ROLLBACK")
        raise
    return result
