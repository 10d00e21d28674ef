"""Store methods of the upstreams: a workspace's LancePilot-compatible source of truth,
one per workspace, its bearer token encrypted at rest (design section 14)."""

from __future__ import annotations

import dataclasses

from .models import NotFound, Upstream
from .tenants import require_workspace
from .transactions import Queries, Transaction, execute, fetch, fetchrow, read, transaction

UPSTREAM_COLUMNS = ", ".join(field.name for field in dataclasses.fields(Upstream))


class UpstreamQueries(Queries):
    @transaction
    def set_upstream(
        self, workspace_id: str, url: str, remote_workspace: str, token_enc: str, now_ms: int
    ) -> Transaction[Upstream]:
        """Name (or replace) the workspace's upstream; its first `created_at` is kept."""
        yield from require_workspace(workspace_id)
        row = yield fetchrow(
            f"INSERT INTO upstreams ({UPSTREAM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (workspace_id) DO UPDATE SET url = excluded.url, "
            "remote_workspace = excluded.remote_workspace, token_enc = excluded.token_enc, "
            f"updated_at = excluded.updated_at RETURNING {UPSTREAM_COLUMNS}",
            workspace_id,
            url,
            remote_workspace,
            token_enc,
            now_ms,
            now_ms,
        )
        return Upstream(**row)

    @read
    def get_upstream(self, workspace_id: str) -> Transaction[Upstream | None]:
        row = yield fetchrow(
            f"SELECT {UPSTREAM_COLUMNS} FROM upstreams WHERE workspace_id = ?", workspace_id
        )
        return Upstream(**row) if row else None

    @read
    def all_upstreams(self) -> Transaction[list[Upstream]]:
        rows = yield fetch(f"SELECT {UPSTREAM_COLUMNS} FROM upstreams ORDER BY created_at")
        return [Upstream(**row) for row in rows]

    @transaction
    def set_upstream_token(self, workspace_id: str, token_enc: str) -> Transaction[None]:
        yield execute(
            "UPDATE upstreams SET token_enc = ? WHERE workspace_id = ?", token_enc, workspace_id
        )

    @transaction
    def remove_upstream(self, workspace_id: str) -> Transaction[None]:
        """Forget the workspace's upstream (and its token): it syncs with Meta again."""
        row = yield fetchrow(
            "DELETE FROM upstreams WHERE workspace_id = ? RETURNING workspace_id", workspace_id
        )
        if row is None:
            raise NotFound(f"workspace {workspace_id} has no upstream")
