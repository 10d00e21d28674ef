"""Store verbs of the operator's commands: what a workspace holds, and removing things.

A removal first locks what it removes (FOR UPDATE on PostgreSQL: the workspace and its
templates, or the template; SQLite's BEGIN IMMEDIATE already excludes other writers). A
webhook or sync writing history for them meanwhile is waited for and its rows removed too,
or waits and then fails its foreign key (the delivery is quarantined, as any that cannot be
applied). Children go before parents, so foreign keys hold after every statement.
"""

from __future__ import annotations

import dataclasses
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from . import NotFound, TokenInfo, WorkspaceSummary
from .syncs import PENDING_IN

if TYPE_CHECKING:
    from .sql import Tx

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
WORKSPACE_ROWS = (
    ("template_events", "template_id IN (SELECT id FROM templates WHERE workspace_id = ?)"),
    ("templates", "workspace_id = ?"),
    ("channels", "workspace_id = ?"),
    ("api_tokens", "workspace_id = ?"),
    ("sync_runs", "workspace_id = ?"),
    ("workspace_polls", "workspace_id = ?"),
    ("workspaces", "id = ?"),
)
LOCK_TEMPLATES = "SELECT id FROM templates WHERE workspace_id = ?"
TOKEN_INFO_COLUMNS = ", ".join(field.name for field in dataclasses.fields(TokenInfo))


class AdminQueries:
    """Mixed into SqlStore; every method is one transaction."""

    def _tx(self) -> AbstractAsyncContextManager[Tx]:
        raise NotImplementedError

    async def list_tokens(self, workspace_id: str) -> list[TokenInfo]:
        """The workspace's tokens, revoked ones too, oldest first."""
        async with self._tx() as tx:
            await require_workspace(tx, workspace_id)
            rows = await tx.fetch(
                f"SELECT {TOKEN_INFO_COLUMNS} FROM api_tokens WHERE workspace_id = ? "
                "ORDER BY created_at, id",
                workspace_id,
            )
        return [TokenInfo(**row) for row in rows]

    async def workspace_summaries(self, workspace_id: str | None = None) -> list[WorkspaceSummary]:
        """Every workspace (or only `workspace_id`) with its counts, oldest first."""
        where, args = (" WHERE w.id = ?", [workspace_id]) if workspace_id else ("", [])
        async with self._tx() as tx:
            rows = await tx.fetch(f"{SUMMARY_SQL}{where} ORDER BY w.created_at, w.id", *args)
        return [WorkspaceSummary(**row) for row in rows]

    async def delete_workspace(self, workspace_id: str) -> WorkspaceSummary:
        """Delete the workspace and everything it holds; returns what it held."""
        async with self._tx() as tx:
            await require_workspace(tx, workspace_id, lock=tx.for_update)
            if tx.for_update:  # wait for writers of its templates' history to commit first
                await tx.fetch(LOCK_TEMPLATES + tx.for_update, workspace_id)
            row = await tx.fetchrow(f"{SUMMARY_SQL} WHERE w.id = ?", workspace_id)
            for table, condition in WORKSPACE_ROWS:
                await tx.execute(f"DELETE FROM {table} WHERE {condition}", workspace_id)
        assert row is not None  # the workspace is locked
        return WorkspaceSummary(**row)

    async def remove_channel(self, waba_id: str) -> None:
        """Delete the WABA's channel and its encrypted token; its templates stay."""
        async with self._tx() as tx:
            row = await tx.fetchrow("DELETE FROM channels WHERE waba_id = ? RETURNING id", waba_id)
        if row is None:
            raise NotFound(f"no channel for WABA {waba_id}")

    async def remove_template(self, workspace_id: str, template_id: int) -> None:
        """Delete one of the workspace's templates and its history."""
        async with self._tx() as tx:
            if not await tx.fetchrow(
                "SELECT id FROM templates WHERE workspace_id = ? AND id = ?" + tx.for_update,
                workspace_id,
                template_id,
            ):
                raise NotFound(f"workspace {workspace_id} has no template {template_id}")
            await tx.execute("DELETE FROM template_events WHERE template_id = ?", template_id)
            await tx.execute("DELETE FROM templates WHERE id = ?", template_id)


async def require_workspace(tx: Tx, workspace_id: str, *, lock: str = "") -> None:
    """NotFound unless the workspace exists; `lock` (tx.for_update) also locks its row."""
    if not await tx.fetchrow(f"SELECT id FROM workspaces WHERE id = ?{lock}", workspace_id):
        raise NotFound(f"workspace {workspace_id} does not exist")
