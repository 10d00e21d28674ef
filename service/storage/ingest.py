"""Storing a batch of webhook deliveries in one transaction (dedupe, ordering, history).

Written as SQL steps (see steps.py) so SQLite can run a whole batch in its thread. Each
delivery runs under a savepoint: one that cannot be applied is rolled back to its
savepoint and stored quarantined, and the others of the batch are unaffected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

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
from .steps import Steps, execute, fetchrow

logger = logging.getLogger(__name__)

STATE_COLUMNS = (
    "id, status, rejected_reason, flagged, status_before_archive, quality_score, category, "
    "status_event_at, pending_since"
)


@dataclass(frozen=True)
class NewDelivery:
    body: bytes = field(repr=False)
    received_at_ms: int
    changes: Sequence[Change]
    error: str | None


def record_batch(
    items: Sequence[NewDelivery], for_update: str, unavailable: Callable[[Exception], bool]
) -> Steps[list[DeliveryResult]]:
    """Store and apply every delivery; errors meaning "store unavailable" fail the batch."""
    owners: dict[str, str | None] = {}
    results = []
    for item in items:
        yield execute("SAVEPOINT delivery")
        try:
            result = yield from _record(item, owners, for_update)
        except Exception as exc:
            if unavailable(exc):
                raise
            logger.error(
                "applying a delivery failed (%s); storing it quarantined", type(exc).__name__
            )
            yield execute("ROLLBACK TO SAVEPOINT delivery")
            reason = f"could not apply: {type(exc).__name__}"
            result = yield from _insert_delivery(item.body, item.received_at_ms, reason)
        yield execute("RELEASE SAVEPOINT delivery")
        results.append(result)
    return results


def _record(
    item: NewDelivery, owners: dict[str, str | None], for_update: str
) -> Steps[DeliveryResult]:
    result = yield from _insert_delivery(item.body, item.received_at_ms, item.error)
    for change in item.changes:
        yield from _apply_change(change, result, owners, item.received_at_ms, for_update)
    return result


def _insert_delivery(body: bytes, received_at_ms: int, error: str | None) -> Steps[DeliveryResult]:
    outcome = "quarantined" if error else "processed"
    row = yield fetchrow(
        "INSERT INTO webhook_deliveries (received_at, body, outcome, error) "
        "VALUES (?, ?, ?, ?) RETURNING id",
        received_at_ms,
        body,
        outcome,
        error,
    )
    return DeliveryResult(delivery_id=int(row["id"]), outcome=outcome)


def _apply_change(
    change: Change,
    result: DeliveryResult,
    owners: dict[str, str | None],
    received_at_ms: int,
    for_update: str,
) -> Steps[None]:
    """Apply `change` to its template (created if new) and add its history row, once."""
    if change.waba_id not in owners:
        row = yield fetchrow("SELECT workspace_id FROM channels WHERE waba_id = ?", change.waba_id)
        owners[change.waba_id] = row["workspace_id"] if row else None
    workspace_id = owners[change.waba_id]
    if workspace_id is None:
        result.unknown_waba += 1
        return
    row = yield from _lock_template(change, workspace_id, received_at_ms, result, for_update)
    before = _state(row)
    stale = change.field == STATUS_FIELD and change.entry_time * 1000 < row["status_event_at"]
    outcome = Outcome(before, False) if stale else apply_change(before, change)
    if not (yield from _add_history(row["id"], change, before, outcome, received_at_ms)):
        result.duplicate += 1
        return
    if stale:
        result.stale += 1
    elif outcome.applied:
        result.applied += 1
    yield from _save(row, change, before, outcome, received_at_ms)


def _lock_template(
    change: Change, workspace_id: str, now_ms: int, result: DeliveryResult, for_update: str
) -> Steps[dict[str, Any]]:
    select = (
        f"SELECT {STATE_COLUMNS} FROM templates WHERE waba_id = ? AND provider_id = ?" + for_update
    )
    row = yield fetchrow(select, change.waba_id, change.template_id)
    if row is not None:
        return row  # type: ignore[no-any-return]
    created = yield fetchrow(
        "INSERT INTO templates (workspace_id, waba_id, provider_id, name, language, category, "
        "status, status_source, status_updated_at, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, 'webhook', ?, ?, ?) "
        "ON CONFLICT (waba_id, provider_id) DO NOTHING RETURNING id",
        workspace_id, change.waba_id, change.template_id, change.name or "", change.language or "",
        change.category, UNKNOWN_STATUS, now_ms, now_ms, now_ms,
    )  # fmt: skip
    if created is not None:
        result.created += 1
    row = yield fetchrow(select, change.waba_id, change.template_id)
    assert row is not None
    return row  # type: ignore[no-any-return]


def _state(row: dict[str, Any]) -> TemplateState:
    return TemplateState(
        status=row["status"],
        rejected_reason=row["rejected_reason"],
        flagged=bool(row["flagged"]),
        status_before_archive=row["status_before_archive"],
        quality_score=row["quality_score"],
        category=row["category"],
    )


def _add_history(
    template_id: int, change: Change, before: TemplateState, outcome: Outcome, received_at_ms: int
) -> Steps[bool]:
    """Insert the history row; False when the same event was recorded before (a duplicate)."""
    is_status = change.field == STATUS_FIELD
    row = yield fetchrow(
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


def _save(
    row: dict[str, Any], change: Change, before: TemplateState, outcome: Outcome, now_ms: int
) -> Steps[None]:
    after = outcome.state
    moved = after.status != before.status
    status_event_at = row["status_event_at"]
    if outcome.applied and change.field == STATUS_FIELD:
        status_event_at = max(status_event_at, change.entry_time * 1000)
    pending_since = next_pending_since(before.status, after.status, row["pending_since"], now_ms)
    yield execute(
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
