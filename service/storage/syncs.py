"""Store verbs of the sync use case: pending work, Meta's state applied, runs, throttling."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from ..events import PENDING_STATUSES, next_pending_since
from . import PendingTemplate, RemoteCounts, RemoteTemplate, SyncClaim, SyncRun, Throttle

if TYPE_CHECKING:
    from .sql import Tx

RUN_COLUMNS = (
    "id, workspace_id, trigger, status, started_at, finished_at, lease_until, checked, updated, "
    "unchanged, missing, graph_calls, error"
)
PENDING_IN = "status IN (" + ", ".join(f"'{status}'" for status in sorted(PENDING_STATUSES)) + ")"


class SyncQueries:
    """Mixed into SqlStore; every method is one transaction."""

    def _tx(self) -> AbstractAsyncContextManager[Tx]:
        raise NotImplementedError

    async def pending_templates(self, workspace_id: str) -> list[PendingTemplate]:
        async with self._tx() as tx:
            rows = await tx.fetch(
                "SELECT id, waba_id, provider_id FROM templates "
                f"WHERE workspace_id = ? AND {PENDING_IN} ORDER BY id",
                workspace_id,
            )
        return [PendingTemplate(**row) for row in rows]

    async def template_counts(self, workspace_id: str) -> dict[str, int]:
        """How many templates each WABA of the workspace has here (to choose a strategy)."""
        async with self._tx() as tx:
            rows = await tx.fetch(
                "SELECT waba_id, COUNT(*) AS n FROM templates WHERE workspace_id = ? "
                "GROUP BY waba_id",
                workspace_id,
            )
        return {row["waba_id"]: int(row["n"]) for row in rows}

    async def apply_remote(
        self,
        workspace_id: str,
        waba_id: str,
        templates: Sequence[RemoteTemplate],
        now_ms: int,
        create: bool,
    ) -> RemoteCounts:
        """Bring matched templates to Meta's state (history source "sync"); maybe add new ones."""
        created = updated = unchanged = 0
        async with self._tx() as tx:
            for remote in templates:
                row = await tx.fetchrow(
                    "SELECT id, status, rejected_reason, quality_score, category, pending_since "
                    "FROM templates WHERE waba_id = ? AND provider_id = ?" + tx.for_update,
                    waba_id,
                    remote.id,
                )
                if row is None:
                    if create:
                        await _insert_remote(tx, workspace_id, waba_id, remote, now_ms)
                        created += 1
                elif await _update_remote(tx, row, remote, now_ms):
                    updated += 1
                else:
                    unchanged += 1
        return RemoteCounts(created, updated, unchanged)

    async def claim_sync(
        self, workspace_id: str, trigger: str, now_ms: int, lease_ms: int, min_gap_ms: int = 0
    ) -> SyncClaim:
        """Start a run, or name the run to answer with instead: the unexpired one another
        caller started, or (`min_gap_ms` > 0) the one that finished less than that ago."""
        async with self._tx() as tx:
            await tx.fetch("SELECT id FROM workspaces WHERE id = ?" + tx.for_update, workspace_id)
            # Only the latest run can be unexpired: a run starts only when none is.
            latest = await tx.fetchrow(
                "SELECT id, status, lease_until, finished_at FROM sync_runs "
                "WHERE workspace_id = ? ORDER BY id DESC LIMIT 1",
                workspace_id,
            )
            if latest and _answers_instead(latest, now_ms, min_gap_ms):
                return SyncClaim(int(latest["id"]), owner=False)
            row = await tx.fetchrow(
                "INSERT INTO sync_runs (workspace_id, trigger, status, started_at, lease_until) "
                "VALUES (?, ?, 'running', ?, ?) RETURNING id",
                workspace_id,
                trigger,
                now_ms,
                now_ms + lease_ms,
            )
        assert row is not None
        return SyncClaim(int(row["id"]), owner=True)

    async def finish_sync(self, run: SyncRun) -> None:
        async with self._tx() as tx:
            await tx.execute(
                "UPDATE sync_runs SET status = ?, finished_at = ?, checked = ?, updated = ?, "
                "unchanged = ?, missing = ?, graph_calls = ?, error = ? WHERE id = ?",
                run.status, run.finished_at, run.checked, run.updated, run.unchanged,
                run.missing, run.graph_calls, run.error, run.id,
            )  # fmt: skip

    async def get_sync_run(self, run_id: int) -> SyncRun | None:
        async with self._tx() as tx:
            row = await tx.fetchrow(f"SELECT {RUN_COLUMNS} FROM sync_runs WHERE id = ?", run_id)
        return SyncRun(**row) if row else None

    async def last_sync_run(self, workspace_id: str) -> SyncRun | None:
        async with self._tx() as tx:
            row = await tx.fetchrow(
                f"SELECT {RUN_COLUMNS} FROM sync_runs WHERE workspace_id = ? "
                "ORDER BY id DESC LIMIT 1",
                workspace_id,
            )
        return SyncRun(**row) if row else None

    async def throttles(self, waba_ids: Sequence[str]) -> dict[str, Throttle]:
        if not waba_ids:
            return {}
        marks = ", ".join("?" for _ in waba_ids)
        async with self._tx() as tx:
            rows = await tx.fetch(
                "SELECT waba_id, blocked_until, code FROM waba_throttles "
                f"WHERE waba_id IN ({marks})",
                *waba_ids,
            )
        return {row["waba_id"]: Throttle(**row) for row in rows}

    async def set_throttle(self, throttle: Throttle) -> None:
        async with self._tx() as tx:
            await tx.execute(
                "INSERT INTO waba_throttles (waba_id, blocked_until, code) VALUES (?, ?, ?) "
                "ON CONFLICT (waba_id) DO UPDATE SET blocked_until = excluded.blocked_until, "
                "code = excluded.code",
                throttle.waba_id,
                throttle.blocked_until,
                throttle.code,
            )


def _answers_instead(latest: dict[str, Any], now_ms: int, min_gap_ms: int) -> bool:
    """Whether the workspace's latest run answers instead of a new one: it is running (its
    lease unexpired), or it finished less than `min_gap_ms` ago."""
    if latest["status"] == "running":
        return bool(latest["lease_until"] > now_ms)
    finished = latest["finished_at"]
    return min_gap_ms > 0 and finished is not None and now_ms - finished < min_gap_ms


def _remote_state(remote: RemoteTemplate, row: dict[str, Any] | None) -> dict[str, Any]:
    """Meta's state in our columns; Meta's silence about a field keeps ours."""
    return {
        "status": remote.status,
        "rejected_reason": remote.rejected_reason if remote.status == "REJECTED" else None,
        "quality_score": remote.quality_score or (row or {}).get("quality_score"),
        "category": remote.category or (row or {}).get("category"),
    }


async def _insert_remote(
    tx: Tx, workspace_id: str, waba_id: str, remote: RemoteTemplate, now_ms: int
) -> None:
    state = _remote_state(remote, None)
    pending_since = now_ms if remote.status in PENDING_STATUSES else None
    row = await tx.fetchrow(
        "INSERT INTO templates (workspace_id, waba_id, provider_id, name, language, category, "
        "status, rejected_reason, quality_score, status_source, status_updated_at, "
        "status_event_at, pending_since, last_synced_at, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'sync', ?, ?, ?, ?, ?, ?) RETURNING id",
        workspace_id, waba_id, remote.id, remote.name, remote.language, state["category"],
        remote.status, state["rejected_reason"], state["quality_score"], now_ms, now_ms,
        pending_since, now_ms, now_ms, now_ms,
    )  # fmt: skip
    assert row is not None
    await _sync_history(tx, int(row["id"]), None, state, now_ms)


async def _update_remote(tx: Tx, row: dict[str, Any], remote: RemoteTemplate, now_ms: int) -> bool:
    """Apply Meta's state to one row; True when anything changed."""
    state = _remote_state(remote, row)
    if all(row[key] == value for key, value in state.items()):
        await tx.execute("UPDATE templates SET last_synced_at = ? WHERE id = ?", now_ms, row["id"])
        return False
    moved = state["status"] != row["status"]
    pending_since = next_pending_since(row["status"], state["status"], row["pending_since"], now_ms)
    await tx.execute(
        "UPDATE templates SET status = ?, rejected_reason = ?, quality_score = ?, category = ?, "
        "pending_since = ?, last_synced_at = ?, updated_at = ?, "
        "status_source = CASE WHEN ? THEN 'sync' ELSE status_source END, "
        "status_updated_at = CASE WHEN ? THEN ? ELSE status_updated_at END, "
        "status_event_at = CASE WHEN ? THEN ? ELSE status_event_at END WHERE id = ?",
        state["status"], state["rejected_reason"], state["quality_score"], state["category"],
        pending_since, now_ms, now_ms, moved, moved, now_ms, moved, now_ms, row["id"],
    )  # fmt: skip
    await _sync_history(tx, row["id"], row["status"], state, now_ms)
    return True


async def _sync_history(
    tx: Tx,
    template_id: int,
    old_status: str | None,
    state: dict[str, Any],
    now_ms: int,
) -> None:
    await tx.execute(
        "INSERT INTO template_events (template_id, waba_id, provider_id, field, event, "
        "old_status, new_status, source, event_time, received_at, reason, applied) "
        "SELECT id, waba_id, provider_id, 'status', ?, ?, ?, 'sync', ?, ?, ?, ? "
        "FROM templates WHERE id = ?",
        state["status"], old_status, state["status"], now_ms, now_ms, state["rejected_reason"],
        True, template_id,
    )  # fmt: skip
