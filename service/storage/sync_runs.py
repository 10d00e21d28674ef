"""Store methods of the sync runs (one per sync of a workspace) and Graph API throttles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .models import SyncClaim, SyncRun, Throttle
from .transactions import (
    Queries,
    Transaction,
    count_returned,
    execute,
    fetch,
    fetchrow,
    read,
    transaction,
)

RUN_COLUMNS = (
    "id, workspace_id, trigger, status, started_at, finished_at, lease_until, checked, updated, "
    "unchanged, missing, graph_calls, error"
)


class SyncRunQueries(Queries):
    @transaction
    def claim_sync(
        self, workspace_id: str, trigger: str, now_ms: int, lease_ms: int, min_gap_ms: int = 0
    ) -> Transaction[SyncClaim]:
        """Start a run, or name the run to answer with instead: the unexpired one another
        caller started, or (`min_gap_ms` > 0) the one that finished less than that ago."""
        yield fetch("SELECT id FROM workspaces WHERE id = ?" + self._db.for_update, workspace_id)
        # Only the latest run can be unexpired: a run starts only when none is.
        latest = yield fetchrow(
            "SELECT id, status, lease_until, finished_at FROM sync_runs "
            "WHERE workspace_id = ? ORDER BY id DESC LIMIT 1",
            workspace_id,
        )
        if latest and _answers_instead(latest, now_ms, min_gap_ms):
            return SyncClaim(int(latest["id"]), owner=False)
        row = yield fetchrow(
            "INSERT INTO sync_runs (workspace_id, trigger, status, started_at, lease_until) "
            "VALUES (?, ?, 'running', ?, ?) RETURNING id",
            workspace_id,
            trigger,
            now_ms,
            now_ms + lease_ms,
        )
        return SyncClaim(int(row["id"]), owner=True)

    @transaction
    def finish_sync(self, run: SyncRun) -> Transaction[None]:
        yield execute(
            "UPDATE sync_runs SET status = ?, finished_at = ?, checked = ?, updated = ?, "
            "unchanged = ?, missing = ?, graph_calls = ?, error = ? WHERE id = ?",
            run.status, run.finished_at, run.checked, run.updated, run.unchanged,
            run.missing, run.graph_calls, run.error, run.id,
        )  # fmt: skip

    @read
    def get_sync_run(self, run_id: int) -> Transaction[SyncRun | None]:
        row = yield fetchrow(f"SELECT {RUN_COLUMNS} FROM sync_runs WHERE id = ?", run_id)
        return SyncRun(**row) if row else None

    @read
    def last_sync_run(self, workspace_id: str) -> Transaction[SyncRun | None]:
        row = yield fetchrow(
            f"SELECT {RUN_COLUMNS} FROM sync_runs WHERE workspace_id = ? ORDER BY id DESC LIMIT 1",
            workspace_id,
        )
        return SyncRun(**row) if row else None

    @transaction
    def prune_sync_runs(self, before_ms: int, limit: int) -> Transaction[int]:
        """Delete up to `limit` of the oldest sync runs started before `before_ms`, except
        each workspace's latest (what `GET .../templates/sync` shows)."""
        return (
            yield from count_returned(
                "DELETE FROM sync_runs WHERE id IN (SELECT r.id FROM sync_runs AS r "
                "WHERE r.started_at < ? AND r.id < (SELECT max(l.id) FROM sync_runs AS l "
                "WHERE l.workspace_id = r.workspace_id) ORDER BY r.id LIMIT ?) RETURNING id",
                before_ms,
                limit,
            )
        )

    @read
    def throttles(self, waba_ids: Sequence[str]) -> Transaction[dict[str, Throttle]]:
        if not waba_ids:
            return {}
        marks = ", ".join("?" for _ in waba_ids)
        rows = yield fetch(
            f"SELECT waba_id, blocked_until, code FROM waba_throttles WHERE waba_id IN ({marks})",
            *waba_ids,
        )
        return {row["waba_id"]: Throttle(**row) for row in rows}

    @transaction
    def set_throttle(self, throttle: Throttle) -> Transaction[None]:
        yield execute(
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
