"""Store verbs of the sync use case: pending work, Meta's state applied, runs, throttling."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from ..events import PENDING_STATUSES, meta_template, observe_meta
from . import PendingTemplate, RemoteCounts, RemoteTemplate, SyncClaim, SyncRun, Throttle
from .template_rows import (
    STATE_SELECT,
    insert_events,
    insert_template,
    state_of,
    template_values,
    update_template,
)

if TYPE_CHECKING:
    from .ingest import Dialect
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

    def _dialect(self) -> Dialect:
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
        """Bring matched templates to Meta's state (events.observe_meta: history source
        "sync"); with `create`, add those not here (an import)."""
        counts = {"created": 0, "updated": 0, "unchanged": 0}
        async with self._tx() as tx:
            for remote in templates:
                done = await _apply(
                    tx, self._dialect(), workspace_id, waba_id, remote, now_ms, create
                )
                if done:
                    counts[done] += 1
        return RemoteCounts(**counts)

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


async def _apply(
    tx: Tx,
    db: Dialect,
    workspace_id: str,
    waba_id: str,
    remote: RemoteTemplate,
    now_ms: int,
    create: bool,
) -> str | None:
    """Apply Meta's state of one template: "created", "updated", "unchanged", or None when
    it is not here (and not to be created)."""
    row = await _locked_state(tx, waba_id, remote.id)
    if row is None and create:
        if await _create(tx, db, workspace_id, waba_id, remote, now_ms):
            return "created"
        row = await _locked_state(tx, waba_id, remote.id)  # a webhook created it just now
    if row is None:
        return None
    transition = observe_meta(state_of(row), remote, now_ms)
    await update_template(tx, row["id"], transition.state)
    await insert_events(tx, row["id"], waba_id, remote.id, transition.rows)
    return "updated" if transition.rows else "unchanged"


async def _locked_state(tx: Tx, waba_id: str, provider_id: str) -> dict[str, Any] | None:
    return await tx.fetchrow(
        f"SELECT {STATE_SELECT} FROM templates WHERE waba_id = ? AND provider_id = ?"
        + tx.for_update,
        waba_id,
        provider_id,
    )


async def _create(
    tx: Tx, db: Dialect, workspace_id: str, waba_id: str, remote: RemoteTemplate, now_ms: int
) -> bool:
    """Insert an imported template and its history; False when it exists already."""
    created = meta_template(remote, now_ms)
    new = template_values(
        workspace_id, waba_id, remote.id, remote.name, remote.language, created.state, now_ms
    )
    row = await insert_template(tx, db, new)
    if row is None:
        return False
    await insert_events(tx, row["id"], waba_id, remote.id, created.rows)
    return True
