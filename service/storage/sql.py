"""The Store, written once in SQL both SQLite and PostgreSQL understand.

Backends differ only in how they connect, run a transaction and name a few types.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

from ..events import Change, HistoryRow, dedupe_keys_below, registered
from . import (
    ApiToken,
    Channel,
    Conflict,
    Delivery,
    DeliveryResult,
    HistoryEvent,
    NewTemplate,
    NotFound,
    Template,
    TemplateFilter,
    Workspace,
)
from .admin import AdminQueries, require_workspace
from .ingest import Dialect, NewDelivery, record_batch
from .polls import PollQueries
from .schema import MIGRATIONS, statements
from .steps import Steps, fetch, fetchrow
from .syncs import SyncQueries
from .template_rows import (
    TEMPLATE_COLUMNS,
    TEMPLATE_FIELDS,
    insert_events,
    insert_template,
    template_values,
)
from .writer import DeliveryWriter

logger = logging.getLogger(__name__)
T = TypeVar("T")

# The columns of a read are its dataclass's fields (TEMPLATE_FIELDS: Template's), so
# to_template() and ApiToken(**row) take a row as it comes.
TOKEN_FIELDS = tuple(field.name for field in dataclasses.fields(ApiToken))
CHANNEL_COLUMNS = "id, workspace_id, waba_id, access_token_enc, created_at"
# A token and its workspace's template (NULLs when there is none): a template GET's reads
# in one statement, one round trip and one pool acquisition less on PostgreSQL
# (bench/RESULTS.md, "Why the code is as it is").
TOKEN_AND_TEMPLATE = (
    f"SELECT {', '.join(f'k.{name} AS token_{name}' for name in TOKEN_FIELDS)}, "
    f"{', '.join(f't.{name}' for name in TEMPLATE_FIELDS)} "
    "FROM api_tokens AS k LEFT JOIN templates AS t "
    "ON t.workspace_id = k.workspace_id AND t.id = ? WHERE k.id = ?"
)
HISTORY_COLUMNS = ", ".join(("id", *HistoryRow._fields))


class Tx(Protocol):
    for_update: str

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]: ...
    async def fetchrow(self, sql: str, *args: Any) -> dict[str, Any] | None: ...
    async def execute(self, sql: str, *args: Any) -> None: ...


class Backend(Dialect, Protocol):
    parallel_batches: int  # webhook batches that may commit at once (writer.py)
    schema_words: Mapping[str, str]  # schema.py
    migration_lock: str | None
    table_exists: str  # one `?`: the table name

    def transaction(self) -> AbstractAsyncContextManager[Any]: ...
    async def run(self, steps: Steps[T], write: bool = True) -> T: ...
    async def close(self) -> None: ...


def to_template(row: dict[str, Any]) -> Template:
    return Template(**{**row, "flagged": bool(row["flagged"])})


def to_history(row: dict[str, Any]) -> HistoryEvent:
    fields = HistoryRow(**{name: row[name] for name in HistoryRow._fields})
    return HistoryEvent(row["id"], fields._replace(applied=bool(fields.applied)))


class SqlStore(SyncQueries, PollQueries, AdminQueries):
    def __init__(self, backend: Backend) -> None:
        self._db = backend
        self._writer = DeliveryWriter(self._commit_deliveries, backend.parallel_batches)

    def _tx(self) -> AbstractAsyncContextManager[Tx]:
        return self._db.transaction()

    def _dialect(self) -> Dialect:
        return self._db

    async def migrate(self) -> list[int]:
        """Apply the migrations this database lacks; returns their versions."""
        async with self._tx() as tx:
            if self._db.migration_lock:
                await tx.execute(self._db.migration_lock)
            await tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
            )
            done = {
                row["version"] for row in await tx.fetch("SELECT version FROM schema_migrations")
            }
            applied = [version for version, _ in MIGRATIONS if version not in done]
            for version, sql in MIGRATIONS:
                if version in done:
                    continue
                for statement in statements(sql, self._db.schema_words):
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)", version
                )
            return applied

    async def schema_version(self) -> int:
        """The newest migration applied here; 0 for an empty database."""
        async with self._tx() as tx:
            if not await tx.fetchrow(self._db.table_exists, "schema_migrations"):
                return 0
            row = await tx.fetchrow("SELECT MAX(version) AS version FROM schema_migrations")
        return int(row["version"] or 0) if row else 0

    async def ping(self, now_ms: int) -> None:
        """Commit a tiny write: a store that can be read but not written is not ready."""
        async with self._tx() as tx:
            await tx.execute(
                "INSERT INTO heartbeats (id, beat_at) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET beat_at = excluded.beat_at",
                now_ms,
            )

    async def close(self) -> None:
        await self._writer.close()
        await self._db.close()

    async def create_workspace(self, name: str, now_ms: int) -> Workspace:
        workspace = Workspace(str(uuid.uuid4()), name, now_ms)
        async with self._tx() as tx:
            await tx.execute(
                "INSERT INTO workspaces (id, name, created_at) VALUES (?, ?, ?)",
                workspace.id,
                name,
                now_ms,
            )
        return workspace

    async def list_workspaces(self) -> list[Workspace]:
        async with self._tx() as tx:
            rows = await tx.fetch("SELECT id, name, created_at FROM workspaces ORDER BY created_at")
        return [Workspace(**row) for row in rows]

    async def get_workspace(self, workspace_id: str) -> Workspace | None:
        async with self._tx() as tx:
            row = await tx.fetchrow(
                "SELECT id, name, created_at FROM workspaces WHERE id = ?", workspace_id
            )
        return Workspace(**row) if row else None

    async def add_channel(
        self, workspace_id: str, waba_id: str, access_token_enc: str, now_ms: int
    ) -> Channel:
        channel = Channel(str(uuid.uuid4()), workspace_id, waba_id, access_token_enc, now_ms)
        async with self._tx() as tx:
            await require_workspace(tx, workspace_id)
            if await tx.fetchrow("SELECT id FROM channels WHERE waba_id = ?", waba_id):
                raise Conflict(f"WABA {waba_id} already has a channel")
            await tx.execute(
                "INSERT INTO channels (id, workspace_id, waba_id, access_token_enc, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                channel.id,
                workspace_id,
                waba_id,
                access_token_enc,
                now_ms,
            )
        return channel

    async def list_channels(self, workspace_id: str) -> list[Channel]:
        async with self._tx() as tx:
            rows = await tx.fetch(
                f"SELECT {CHANNEL_COLUMNS} FROM channels WHERE workspace_id = ? "
                "ORDER BY created_at",
                workspace_id,
            )
        return [Channel(**row) for row in rows]

    async def channel_for_waba(self, waba_id: str) -> Channel | None:
        async with self._tx() as tx:
            row = await tx.fetchrow(
                f"SELECT {CHANNEL_COLUMNS} FROM channels WHERE waba_id = ?", waba_id
            )
        return Channel(**row) if row else None

    async def all_channels(self) -> list[Channel]:
        async with self._tx() as tx:
            rows = await tx.fetch(f"SELECT {CHANNEL_COLUMNS} FROM channels ORDER BY created_at")
        return [Channel(**row) for row in rows]

    async def set_channel_token(self, channel_id: str, access_token_enc: str) -> None:
        async with self._tx() as tx:
            await tx.execute(
                "UPDATE channels SET access_token_enc = ? WHERE id = ?",
                access_token_enc,
                channel_id,
            )

    async def create_token(
        self, workspace_id: str, token_id: str, token_hash: str, name: str | None, now_ms: int
    ) -> None:
        async with self._tx() as tx:
            await require_workspace(tx, workspace_id)
            await tx.execute(
                "INSERT INTO api_tokens (id, workspace_id, name, token_hash, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                token_id,
                workspace_id,
                name,
                token_hash,
                now_ms,
            )

    async def revoke_token(self, token_id: str, now_ms: int) -> bool:
        async with self._tx() as tx:
            row = await tx.fetchrow(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL "
                "RETURNING id",
                now_ms,
                token_id,
            )
        return row is not None

    async def find_token(self, token_id: str) -> ApiToken | None:
        row = await self._db.run(
            _row(f"SELECT {', '.join(TOKEN_FIELDS)} FROM api_tokens WHERE id = ?", token_id),
            write=False,
        )
        return ApiToken(**row) if row else None

    async def find_token_and_template(
        self, token_id: str, template_id: int
    ) -> tuple[ApiToken | None, Template | None]:
        """The token, and its workspace's template `template_id` when there is one."""
        row = await self._db.run(_row(TOKEN_AND_TEMPLATE, template_id, token_id), write=False)
        if row is None:
            return None, None
        token = ApiToken(**{name: row.pop(f"token_{name}") for name in TOKEN_FIELDS})
        return token, to_template(row) if row["id"] is not None else None

    async def add_template(self, new: NewTemplate, now_ms: int) -> Template:
        created = registered(new.status, new.category, now_ms)
        values = template_values(
            new.workspace_id, new.waba_id, new.provider_id, new.name, new.language,
            created.state, now_ms,
        )  # fmt: skip
        async with self._tx() as tx:
            owner = await tx.fetchrow(
                "SELECT workspace_id FROM channels WHERE waba_id = ?", new.waba_id
            )
            if owner is None or owner["workspace_id"] != new.workspace_id:
                raise NotFound(
                    f"workspace {new.workspace_id} has no channel for WABA {new.waba_id}"
                )
            row = await insert_template(tx, self._db, values)
            if row is None:
                raise Conflict(f"template {new.provider_id} of WABA {new.waba_id} exists already")
            await insert_events(tx, row["id"], new.waba_id, new.provider_id, created.rows)
        return to_template(row)

    async def list_templates(
        self, workspace_id: str, where: TemplateFilter, offset: int, limit: int
    ) -> tuple[list[Template], int]:
        clause, args = _template_filter(workspace_id, where)
        rows, total = await self._db.run(_page(clause, args, offset, limit), write=False)
        return [to_template(row) for row in rows], total

    async def get_template(self, workspace_id: str, template_id: int) -> Template | None:
        row = await self._db.run(
            _row(
                f"SELECT {TEMPLATE_COLUMNS} FROM templates WHERE workspace_id = ? AND id = ?",
                workspace_id,
                template_id,
            ),
            write=False,
        )
        return to_template(row) if row else None

    async def template_history(
        self, workspace_id: str, template_id: int
    ) -> list[HistoryEvent] | None:
        async with self._tx() as tx:
            if not await tx.fetchrow(
                "SELECT id FROM templates WHERE workspace_id = ? AND id = ?",
                workspace_id,
                template_id,
            ):
                return None
            rows = await tx.fetch(
                f"SELECT {HISTORY_COLUMNS} FROM template_events WHERE template_id = ? ORDER BY id",
                template_id,
            )
        return [to_history(row) for row in rows]

    async def record_delivery(
        self, body: bytes, received_at_ms: int, changes: Sequence[Change], error: str | None
    ) -> DeliveryResult:
        """Store the signed bytes and apply their changes; returns once committed.

        Deliveries arriving together share one transaction (writer.py). One that cannot be
        applied is still stored, quarantined with the error, so nothing signed is lost.
        """
        return await self._writer.submit(NewDelivery(body, received_at_ms, changes, error))

    async def _commit_deliveries(self, items: list[NewDelivery]) -> list[DeliveryResult]:
        return await self._db.run(record_batch(items, self._db))

    async def list_deliveries(self, outcome: str | None, limit: int) -> list[Delivery]:
        """The newest stored deliveries, optionally only those with `outcome`."""
        where, args = ("WHERE outcome = ?", [outcome]) if outcome else ("", [])
        async with self._tx() as tx:
            rows = await tx.fetch(
                "SELECT id, received_at, outcome, error, body FROM webhook_deliveries "
                f"{where} ORDER BY id DESC LIMIT ?",
                *args,
                limit,
            )
        return [Delivery(**{**row, "body": bytes(row["body"])}) for row in rows]

    async def prune_deliveries(self, before_ms: int, limit: int) -> int:
        """Delete up to `limit` of the oldest deliveries received before `before_ms`."""
        return await self._count_rows(
            "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries "
            "WHERE received_at < ? ORDER BY received_at LIMIT ?) RETURNING id",
            before_ms,
            limit,
        )

    async def forget_dedupe_keys(self, before_ms: int, limit: int) -> int:
        """Clear up to `limit` dedupe keys of events received before `before_ms`; the history
        rows stay.

        The keys are found through their own unique index: an event is received after its
        entry.time, which leads its key, so the keys to clear are among those below the
        cutoff's. (A key whose entry.time is ahead of the clock it arrived by is kept until
        the cutoff passes that time: longer than the window, never shorter.)
        """
        return await self._count_rows(
            "UPDATE template_events SET dedupe_key = NULL WHERE id IN (SELECT id FROM "
            "template_events WHERE dedupe_key < ? AND received_at < ? "
            "ORDER BY dedupe_key LIMIT ?) RETURNING id",
            dedupe_keys_below(before_ms // 1000),
            before_ms,
            limit,
        )

    async def prune_sync_runs(self, before_ms: int, limit: int) -> int:
        """Delete up to `limit` of the oldest sync runs started before `before_ms`, except
        each workspace's latest (what `GET .../templates/sync` shows)."""
        return await self._count_rows(
            "DELETE FROM sync_runs WHERE id IN (SELECT r.id FROM sync_runs AS r "
            "WHERE r.started_at < ? AND r.id < (SELECT max(l.id) FROM sync_runs AS l "
            "WHERE l.workspace_id = r.workspace_id) ORDER BY r.id LIMIT ?) RETURNING id",
            before_ms,
            limit,
        )

    async def _count_rows(self, sql: str, *args: Any) -> int:
        """Run one statement with RETURNING in a transaction; how many rows it returned."""
        async with self._tx() as tx:
            return len(await tx.fetch(sql, *args))


# Reads of the API's hot paths, as steps: on SQLite each is one hop to the database thread.
def _row(sql: str, *args: Any) -> Steps[dict[str, Any] | None]:
    return (yield fetchrow(sql, *args))  # type: ignore[no-any-return]


def _page(
    clause: str, args: list[Any], offset: int, limit: int
) -> Steps[tuple[list[dict[str, Any]], int]]:
    """The page and the count of all matches in one statement, so both come from one
    snapshot (two reads could count a template a webhook added between them, or miss it);
    a page past the end is one row of the count alone."""
    rows = yield fetch(
        f"SELECT c.total_matching, p.* FROM (SELECT COUNT(*) AS total_matching FROM templates "
        f"WHERE {clause}) AS c LEFT JOIN (SELECT {TEMPLATE_COLUMNS} FROM templates "
        f"WHERE {clause} ORDER BY id LIMIT ? OFFSET ?) AS p ON true ORDER BY p.id",
        *args,
        *args,
        limit,
        offset,
    )
    total = int(rows[0].pop("total_matching")) if rows else 0
    page = [row for row in rows if row["id"] is not None]
    for row in page:
        row.pop("total_matching", None)
    return page, total


def _template_filter(workspace_id: str, where: TemplateFilter) -> tuple[str, list[Any]]:
    parts, args = ["workspace_id = ?"], [workspace_id]
    if where.statuses:
        parts.append(f"status IN ({', '.join('?' for _ in where.statuses)})")
        args.extend(where.statuses)
    for column in ("name", "language", "provider_id"):
        value = getattr(where, column)
        if value is not None:
            parts.append(f"{column} = ?")
            args.append(value)
    return " AND ".join(parts), args
