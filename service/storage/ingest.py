"""Applying one webhook change inside a delivery's transaction (dedupe, ordering, history)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..events import (
    STATUS_FIELD,
    UNKNOWN_STATUS,
    Change,
    Outcome,
    TemplateState,
    apply_change,
    next_pending_since,
)
from . import DeliveryResult

if TYPE_CHECKING:
    from .sql import Tx

STATE_COLUMNS = (
    "id, status, rejected_reason, flagged, status_before_archive, quality_score, category, "
    "status_event_at, pending_since"
)


async def apply_change_row(
    tx: Tx,
    change: Change,
    result: DeliveryResult,
    owners: dict[str, str | None],
    received_at_ms: int,
) -> None:
    """Apply `change` to its template (created if new) and add its history row, once."""
    if change.waba_id not in owners:
        row = await tx.fetchrow(
            "SELECT workspace_id FROM channels WHERE waba_id = ?", change.waba_id
        )
        owners[change.waba_id] = row["workspace_id"] if row else None
    workspace_id = owners[change.waba_id]
    if workspace_id is None:
        result.unknown_waba += 1
        return
    row = await _lock_template(tx, change, workspace_id, received_at_ms, result)
    before = _state(row)
    event_ms = change.entry_time * 1000
    stale = change.field == STATUS_FIELD and event_ms < row["status_event_at"]
    outcome = Outcome(before, False) if stale else apply_change(before, change)
    if not await _add_history(tx, row["id"], change, before, outcome, received_at_ms):
        result.duplicate += 1
        return
    if stale:
        result.stale += 1
    elif outcome.applied:
        result.applied += 1
    await _save(tx, row, change, before, outcome, received_at_ms)


async def _lock_template(
    tx: Tx, change: Change, workspace_id: str, now_ms: int, result: DeliveryResult
) -> dict[str, Any]:
    select = (
        f"SELECT {STATE_COLUMNS} FROM templates WHERE waba_id = ? AND provider_id = ?"
        + tx.for_update
    )
    row = await tx.fetchrow(select, change.waba_id, change.template_id)
    if row is not None:
        return row
    created = await tx.fetchrow(
        "INSERT INTO templates (workspace_id, waba_id, provider_id, name, language, category, "
        "status, status_source, status_updated_at, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, 'webhook', ?, ?, ?) "
        "ON CONFLICT (waba_id, provider_id) DO NOTHING RETURNING id",
        workspace_id, change.waba_id, change.template_id, change.name or "", change.language or "",
        change.category, UNKNOWN_STATUS, now_ms, now_ms, now_ms,
    )  # fmt: skip
    if created is not None:
        result.created += 1
    row = await tx.fetchrow(select, change.waba_id, change.template_id)
    assert row is not None
    return row


def _state(row: dict[str, Any]) -> TemplateState:
    return TemplateState(
        status=row["status"],
        rejected_reason=row["rejected_reason"],
        flagged=bool(row["flagged"]),
        status_before_archive=row["status_before_archive"],
        quality_score=row["quality_score"],
        category=row["category"],
    )


async def _add_history(
    tx: Tx,
    template_id: int,
    change: Change,
    before: TemplateState,
    outcome: Outcome,
    received_at_ms: int,
) -> bool:
    """Insert the history row; False when the same event was recorded before (a duplicate)."""
    is_status = change.field == STATUS_FIELD
    row = await tx.fetchrow(
        "INSERT INTO template_events (template_id, waba_id, provider_id, field, event, "
        "old_status, new_status, source, event_time, received_at, reason, applied, dedupe_key) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, 'webhook', ?, ?, ?, ?, ?) "
        "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
        template_id, change.waba_id, change.template_id, change.field, change.event,
        before.status if is_status else None, outcome.state.status if is_status else None,
        change.entry_time * 1000, received_at_ms, change.reason, outcome.applied,
        change.dedupe_key,
    )  # fmt: skip
    return row is not None


async def _save(
    tx: Tx,
    row: dict[str, Any],
    change: Change,
    before: TemplateState,
    outcome: Outcome,
    now_ms: int,
) -> None:
    after = outcome.state
    moved = after.status != before.status
    status_event_at = row["status_event_at"]
    if outcome.applied and change.field == STATUS_FIELD:
        status_event_at = max(status_event_at, change.entry_time * 1000)
    pending_since = next_pending_since(before.status, after.status, row["pending_since"], now_ms)
    await tx.execute(
        "UPDATE templates SET status = ?, rejected_reason = ?, flagged = ?, "
        "status_before_archive = ?, quality_score = ?, category = ?, status_event_at = ?, "
        "pending_since = ?, last_webhook_at = ?, updated_at = ?, "
        "status_source = CASE WHEN ? THEN 'webhook' ELSE status_source END, "
        "status_updated_at = CASE WHEN ? THEN ? ELSE status_updated_at END "
        "WHERE id = ?",
        after.status, after.rejected_reason, after.flagged, after.status_before_archive,
        after.quality_score, after.category, status_event_at, pending_since, now_ms, now_ms,
        moved, moved, now_ms, row["id"],
    )  # fmt: skip
