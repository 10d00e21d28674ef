"""The Store, written once in SQL that SQLite and PostgreSQL both understand: one class of
the store methods of every aggregate, on a backend chosen by the database URL's scheme."""

from __future__ import annotations

from .deliveries import DeliveryQueries
from .group_commit import GroupCommit
from .idempotency import IdempotencyQueries
from .notifications import NotificationQueries
from .outbox import OutboxQueries
from .poll_state import PollStateQueries
from .protocol import Store
from .schema import MIGRATIONS, statements
from .sync_runs import SyncRunQueries
from .template_writes import TemplateWriteQueries
from .templates import TemplateQueries
from .tenants import TenantQueries
from .transactions import Database, Transaction, execute, fetch, fetchrow, transaction
from .upstreams import UpstreamQueries


class SqlStore(
    TenantQueries,
    UpstreamQueries,
    TemplateQueries,
    TemplateWriteQueries,
    IdempotencyQueries,
    DeliveryQueries,
    OutboxQueries,
    NotificationQueries,
    SyncRunQueries,
    PollStateQueries,
):
    def __init__(self, db: Database) -> None:
        self._db = db
        self._group_commit = GroupCommit(
            self._commit_deliveries, db.parallel_batches, weight=lambda item: len(item.body)
        )

    @transaction
    def migrate(self) -> Transaction[list[int]]:
        """Apply the migrations this database lacks; returns their versions."""
        if self._db.migration_lock:
            yield execute(self._db.migration_lock)
        yield execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
        )
        done = {row["version"] for row in (yield fetch("SELECT version FROM schema_migrations"))}
        applied = []
        for version, sql in MIGRATIONS:
            if version in done:
                continue
            for statement in statements(sql, self._db.schema_words):
                yield execute(statement)
            yield execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)", version
            )
            applied.append(version)
        return applied

    @transaction
    def schema_version(self) -> Transaction[int]:
        """The newest migration applied here; 0 for an empty database."""
        if not (yield fetchrow(self._db.table_exists, "schema_migrations")):
            return 0
        row = yield fetchrow("SELECT MAX(version) AS version FROM schema_migrations")
        return int(row["version"] or 0) if row else 0

    @transaction
    def ping(self, now_ms: int) -> Transaction[None]:
        """Commit a tiny write: a store that can be read but not written is not ready."""
        yield execute(
            "INSERT INTO heartbeats (id, beat_at) VALUES (1, ?) "
            "ON CONFLICT (id) DO UPDATE SET beat_at = excluded.beat_at",
            now_ms,
        )

    async def close(self) -> None:
        await self._group_commit.close()
        await self._db.close()


async def open_store(url: str) -> Store:
    """Connect to the store named by `url` (sqlite:///path or postgresql://...)."""
    if url.startswith("sqlite:///"):
        from .sqlite import SqliteBackend  # each backend imports its driver only when used

        return SqlStore(await SqliteBackend.connect(url.removeprefix("sqlite:///")))
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresBackend

        return SqlStore(await PostgresBackend.connect(url))
    raise ValueError(f"unsupported database URL scheme: {url.split(':', 1)[0]}")
