"""Store methods of the tenants: workspaces, their channels (WABAs) and bearer tokens.

A removal first locks what it removes (FOR UPDATE on PostgreSQL: the workspace and its
templates; SQLite's BEGIN IMMEDIATE already excludes other writers). A webhook or sync
writing history for them meanwhile is waited for and its rows removed too, or waits and
then fails its foreign key (the delivery is quarantined, as any that cannot be applied).
Children go before parents, so foreign keys hold after every statement.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from .models import ApiToken, Channel, Conflict, NotFound, TokenInfo, Workspace, WorkspaceSummary
from .template_rows import PENDING_IN
from .transactions import Queries, Transaction, execute, fetch, fetchrow, lookup, read, transaction

WORKSPACE_COLUMNS = "id, name, created_at"
CHANNEL_COLUMNS = "id, workspace_id, waba_id, access_token_enc, created_at"
TOKEN_FIELDS = tuple(field.name for field in dataclasses.fields(ApiToken))
TOKEN_INFO_COLUMNS = ", ".join(field.name for field in dataclasses.fields(TokenInfo))
SUMMARY_SQL = (
    "SELECT w.id, w.name, w.created_at, "
    "(SELECT COUNT(*) FROM channels c WHERE c.workspace_id = w.id) AS channels, "
    "(SELECT COUNT(*) FROM api_tokens k WHERE k.workspace_id = w.id) AS tokens, "
    "(SELECT COUNT(*) FROM api_tokens k WHERE k.workspace_id = w.id "
    "AND k.revoked_at IS NULL) AS active_tokens, "
    "(SELECT COUNT(*) FROM templates t WHERE t.workspace_id = w.id) AS templates, "
    "(SELECT COUNT(*) FROM templates t WHERE t.workspace_id = w.id "
    f"AND t.{PENDING_IN}) AS pending_templates, "
    "(SELECT COUNT(*) FROM sync_runs r WHERE r.workspace_id = w.id) AS sync_runs "
    "FROM workspaces w"
)
# Every row of a workspace, children first; each condition takes the workspace id once.
# A new table that refers to a workspace or a template belongs here (test_storage checks).
_SUBSCRIPTIONS = "(SELECT id FROM webhook_subscriptions WHERE workspace_id = ?)"
WORKSPACE_ROWS = (
    ("outbox", f"target_id IN {_SUBSCRIPTIONS}"),
    ("notification_attempts", f"subscription_id IN {_SUBSCRIPTIONS}"),
    ("webhook_subscriptions", "workspace_id = ?"),
    ("template_events", "template_id IN (SELECT id FROM templates WHERE workspace_id = ?)"),
    ("templates", "workspace_id = ?"),
    ("channels", "workspace_id = ?"),
    ("api_tokens", "workspace_id = ?"),
    ("idempotency_keys", "workspace_id = ?"),
    ("upstreams", "workspace_id = ?"),
    ("sync_runs", "workspace_id = ?"),
    ("workspace_polls", "workspace_id = ?"),
    ("workspaces", "id = ?"),
)


class TenantQueries(Queries):
    @transaction
    def create_workspace(self, name: str, now_ms: int) -> Transaction[Workspace]:
        workspace = Workspace(str(uuid.uuid4()), name, now_ms)
        yield execute(
            f"INSERT INTO workspaces ({WORKSPACE_COLUMNS}) VALUES (?, ?, ?)",
            workspace.id,
            name,
            now_ms,
        )
        return workspace

    @read
    def list_workspaces(self) -> Transaction[list[Workspace]]:
        rows = yield fetch(f"SELECT {WORKSPACE_COLUMNS} FROM workspaces ORDER BY created_at")
        return [Workspace(**row) for row in rows]

    @read
    def get_workspace(self, workspace_id: str) -> Transaction[Workspace | None]:
        row = yield fetchrow(
            f"SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE id = ?", workspace_id
        )
        return Workspace(**row) if row else None

    @read
    def workspace_summaries(
        self, workspace_id: str | None = None
    ) -> Transaction[list[WorkspaceSummary]]:
        """Every workspace (or only `workspace_id`) with its counts, oldest first."""
        where, args = (" WHERE w.id = ?", [workspace_id]) if workspace_id else ("", [])
        rows = yield fetch(f"{SUMMARY_SQL}{where} ORDER BY w.created_at, w.id", *args)
        return [WorkspaceSummary(**row) for row in rows]

    @transaction
    def delete_workspace(self, workspace_id: str) -> Transaction[WorkspaceSummary]:
        """Delete the workspace and everything it holds; returns what it held."""
        lock = self._db.for_update
        yield from require_workspace(workspace_id, lock=lock)
        if lock:  # wait for writers of its templates' history to commit first
            yield fetch("SELECT id FROM templates WHERE workspace_id = ?" + lock, workspace_id)
        row = yield fetchrow(f"{SUMMARY_SQL} WHERE w.id = ?", workspace_id)
        for table, condition in WORKSPACE_ROWS:
            yield execute(f"DELETE FROM {table} WHERE {condition}", workspace_id)
        return WorkspaceSummary(**row)

    @transaction
    def add_channel(
        self, workspace_id: str, waba_id: str, access_token_enc: str | None, now_ms: int
    ) -> Transaction[Channel]:
        """A channel for the WABA; without a token it routes webhooks only."""
        channel = Channel(str(uuid.uuid4()), workspace_id, waba_id, access_token_enc, now_ms)
        yield from require_workspace(workspace_id)
        if (yield fetchrow("SELECT id FROM channels WHERE waba_id = ?", waba_id)):
            raise Conflict(f"WABA {waba_id} already has a channel")
        yield execute(
            f"INSERT INTO channels ({CHANNEL_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
            *dataclasses.astuple(channel),
        )
        return channel

    @read
    def list_channels(self, workspace_id: str) -> Transaction[list[Channel]]:
        rows = yield fetch(
            f"SELECT {CHANNEL_COLUMNS} FROM channels WHERE workspace_id = ? ORDER BY created_at",
            workspace_id,
        )
        return [Channel(**row) for row in rows]

    @read
    def channel_for_waba(self, waba_id: str) -> Transaction[Channel | None]:
        row = yield fetchrow(f"SELECT {CHANNEL_COLUMNS} FROM channels WHERE waba_id = ?", waba_id)
        return Channel(**row) if row else None

    @read
    def all_channels(self) -> Transaction[list[Channel]]:
        rows = yield fetch(f"SELECT {CHANNEL_COLUMNS} FROM channels ORDER BY created_at")
        return [Channel(**row) for row in rows]

    @transaction
    def set_channel_token(self, channel_id: str, access_token_enc: str) -> Transaction[None]:
        yield execute(
            "UPDATE channels SET access_token_enc = ? WHERE id = ?", access_token_enc, channel_id
        )

    @transaction
    def remove_channel(self, waba_id: str) -> Transaction[None]:
        """Delete the WABA's channel and its encrypted token; its templates stay."""
        row = yield fetchrow("DELETE FROM channels WHERE waba_id = ? RETURNING id", waba_id)
        if row is None:
            raise NotFound(f"no channel for WABA {waba_id}")

    @transaction
    def create_token(
        self,
        workspace_id: str,
        token_id: str,
        token_hash: str,
        name: str | None,
        now_ms: int,
        read_only: bool = False,
    ) -> Transaction[None]:
        yield from require_workspace(workspace_id)
        yield execute(
            "INSERT INTO api_tokens (id, workspace_id, name, token_hash, created_at, read_only) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            token_id,
            workspace_id,
            name,
            token_hash,
            now_ms,
            read_only,
        )

    @transaction
    def revoke_token(self, token_id: str, now_ms: int) -> Transaction[bool]:
        row = yield fetchrow(
            "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL RETURNING id",
            now_ms,
            token_id,
        )
        return row is not None

    @lookup
    def find_token(self, token_id: str) -> Transaction[ApiToken | None]:
        row = yield fetchrow(
            f"SELECT {', '.join(TOKEN_FIELDS)} FROM api_tokens WHERE id = ?", token_id
        )
        return ApiToken(**read_only_flag(row)) if row else None

    @transaction
    def list_tokens(self, workspace_id: str) -> Transaction[list[TokenInfo]]:
        """The workspace's tokens, revoked ones too, oldest first."""
        yield from require_workspace(workspace_id)
        rows = yield fetch(
            f"SELECT {TOKEN_INFO_COLUMNS} FROM api_tokens WHERE workspace_id = ? "
            "ORDER BY created_at, id",
            workspace_id,
        )
        return [TokenInfo(**read_only_flag(row)) for row in rows]


def read_only_flag(row: dict[str, Any]) -> dict[str, Any]:
    """A token's row with `read_only` a bool (SQLite answers 0 or 1)."""
    return {**row, "read_only": bool(row["read_only"])}


def require_workspace(workspace_id: str, *, lock: str = "") -> Transaction[None]:
    """NotFound unless the workspace exists; `lock` (Database.for_update) also locks its row."""
    row: dict[str, Any] | None = yield fetchrow(
        f"SELECT id FROM workspaces WHERE id = ?{lock}", workspace_id
    )
    if row is None:
        raise NotFound(f"workspace {workspace_id} does not exist")
