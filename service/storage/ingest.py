"""Storing a batch of webhook deliveries in one transaction (dedupe, ordering, history).

Set-based: a batch costs a handful of statements whatever its size (insert the bodies,
look up channels, templates and known events, insert the history, update the templates),
and the event rules run in memory, change by change in arrival order. Written as SQL steps
(see steps.py), so SQLite runs a whole batch in its thread and PostgreSQL pays a few round
trips per batch rather than several per delivery.

A batch that fails is rolled back to its savepoint and its deliveries are stored again one
at a time: one that still fails is stored quarantined, and the others are unaffected.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..events import STATUS_FIELD, UNKNOWN_STATUS, Change, TemplateState, apply_change
from ..events import next_pending_since as pending_since_after
from . import DeliveryResult
from .steps import Steps, execute, executemany, fetch

logger = logging.getLogger(__name__)

ROWS_PER_STATEMENT = 512  # keeps every statement under both databases' parameter limits
Key = tuple[str, str]  # (WABA id, template id)


@dataclass(frozen=True)
class NewDelivery:
    body: bytes = field(repr=False)
    received_at_ms: int
    changes: Sequence[Change]
    error: str | None


class _Failed(Exception):
    """A batch could not be applied; its savepoint has been rolled back."""


class Dialect(Protocol):
    """What a batch needs to know of its database (each backend is one)."""

    for_update: str  # appended to the template lookup
    batch_setup: str | None  # a statement that opens the batch

    def unavailable(self, error: Exception) -> bool: ...


def record_batch(items: Sequence[NewDelivery], db: Dialect) -> Steps[list[DeliveryResult]]:
    """Store and apply every delivery; errors meaning "store unavailable" fail the batch."""
    if db.batch_setup:
        yield execute(db.batch_setup)
    try:
        return (yield from _attempt(items, db))
    except _Failed as failed:
        if len(items) == 1:
            return (yield from _quarantine(items[0], failed))
    results = []
    for item in items:  # find the culprit: each delivery on its own
        try:
            results += yield from _attempt([item], db)
        except _Failed as failed:
            results += yield from _quarantine(item, failed)
    return results


def _quarantine(item: NewDelivery, failed: _Failed) -> Steps[list[DeliveryResult]]:
    logger.error("applying a delivery failed (%s); storing it quarantined", failed)
    reason = f"could not apply: {failed}"
    return (
        yield from _insert_deliveries([NewDelivery(item.body, item.received_at_ms, (), reason)])
    )


def _attempt(items: Sequence[NewDelivery], db: Dialect) -> Steps[list[DeliveryResult]]:
    yield execute("SAVEPOINT batch")
    try:
        results = yield from _record(items, db.for_update)
    except Exception as exc:
        if db.unavailable(exc):
            raise
        yield execute("ROLLBACK TO SAVEPOINT batch")
        yield execute("RELEASE SAVEPOINT batch")
        raise _Failed(type(exc).__name__) from exc
    return results  # its savepoint is released by the commit (a round trip less)


def _record(items: Sequence[NewDelivery], for_update: str) -> Steps[list[DeliveryResult]]:
    results = yield from _insert_deliveries(items)
    pending = [(r, i, c) for r, i in zip(results, items, strict=True) for c in i.changes]
    owners = yield from _owners({change.waba_id for _, _, change in pending})
    known = []
    for result, item, change in pending:
        if owners.get(change.waba_id) is None:
            result.unknown_waba += 1
        else:
            known.append((result, item, change))
    if not known:
        return results
    templates = yield from _templates(known, owners, for_update)
    recorded = yield from _recorded({change.dedupe_key for _, _, change in known})
    events = []
    for result, item, change in known:
        if change.dedupe_key in recorded:
            result.duplicate += 1
            continue
        recorded.add(change.dedupe_key)
        template = templates[change.waba_id, change.template_id]
        events.append(template.apply(change, result, item.received_at_ms))
    if events:
        yield executemany(INSERT_EVENT, events)
        touched = [t.row() for t in templates.values() if t.touched_at is not None]
        yield executemany(UPDATE_TEMPLATE, touched)
    return results


@dataclass
class _Template:
    """A template's stored state, changed in memory by the batch's events in order."""

    id: int
    state: TemplateState
    status_event_at: int
    pending_since: int | None
    touched_at: int | None = None  # received_at of the newest change applied
    status_moved: bool = False

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> _Template:
        state = TemplateState(
            status=row["status"],
            rejected_reason=row["rejected_reason"],
            flagged=bool(row["flagged"]),
            status_before_archive=row["status_before_archive"],
            quality_score=row["quality_score"],
            category=row["category"],
        )
        return cls(row["id"], state, row["status_event_at"], row["pending_since"])

    def apply(self, change: Change, result: DeliveryResult, now_ms: int) -> tuple[Any, ...]:
        """Apply `change` (unless older than the status) and return its history row."""
        before = self.state
        is_status = change.field == STATUS_FIELD
        stale = is_status and change.entry_time * 1000 < self.status_event_at
        outcome = None if stale else apply_change(before, change)
        after = outcome.state if outcome else before
        applied = outcome is not None and outcome.applied
        if stale:
            result.stale += 1
        elif applied:
            result.applied += 1
        if applied and is_status:
            self.status_event_at = max(self.status_event_at, change.entry_time * 1000)
        self.pending_since = pending_since_after(
            before.status, after.status, self.pending_since, now_ms
        )
        self.status_moved |= after.status != before.status
        self.state, self.touched_at = after, now_ms
        return (
            self.id, change.waba_id, change.template_id, change.field, change.event,
            before.status if is_status else None, after.status if is_status else None,
            change.entry_time * 1000, now_ms, change.reason, applied, change.dedupe_key,
            result.delivery_id,
        )  # fmt: skip

    def row(self) -> tuple[Any, ...]:
        s = self.state
        return (
            s.status, s.rejected_reason, s.flagged, s.status_before_archive, s.quality_score,
            s.category, self.status_event_at, self.pending_since, self.touched_at,
            self.touched_at, self.status_moved, self.status_moved, self.touched_at, self.id,
        )  # fmt: skip


INSERT_EVENT = (
    "INSERT INTO template_events (template_id, waba_id, provider_id, field, event, old_status, "
    "new_status, source, event_time, received_at, reason, applied, dedupe_key, delivery_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, 'webhook', ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (dedupe_key) DO NOTHING"
)
UPDATE_TEMPLATE = (
    "UPDATE templates SET status = ?, rejected_reason = ?, flagged = ?, "
    "status_before_archive = ?, quality_score = ?, category = ?, status_event_at = ?, "
    "pending_since = ?, last_webhook_at = ?, updated_at = ?, "
    "status_source = CASE WHEN ? THEN 'webhook' ELSE status_source END, "
    "status_updated_at = CASE WHEN ? THEN ? ELSE status_updated_at END "
    "WHERE id = ?"
)
STATE_COLUMNS = (
    "id, waba_id, provider_id, status, rejected_reason, flagged, status_before_archive, "
    "quality_score, category, status_event_at, pending_since"
)


def _insert_deliveries(items: Sequence[NewDelivery]) -> Steps[list[DeliveryResult]]:
    """Insert the bodies; ids come back in insertion order (each insert takes a larger id)."""
    rows = [(i.received_at_ms, i.body, "quarantined" if i.error else "processed", i.error)
            for i in items]  # fmt: skip
    inserted = yield from _fetch_all(
        "INSERT INTO webhook_deliveries (received_at, body, outcome, error) VALUES {rows} "
        "RETURNING id",
        "(?, ?, ?, ?)",
        rows,
    )
    ids = sorted(row["id"] for row in inserted)
    return [DeliveryResult(delivery_id=i, outcome=r[2]) for i, r in zip(ids, rows, strict=True)]


def _owners(waba_ids: set[str]) -> Steps[dict[str, str]]:
    rows = yield from _lookup(
        "SELECT waba_id, workspace_id FROM channels WHERE waba_id IN ({rows})",
        "?",
        [(waba_id,) for waba_id in sorted(waba_ids)],
    )
    return {row["waba_id"]: row["workspace_id"] for row in rows}


def _templates(
    known: list[tuple[DeliveryResult, NewDelivery, Change]], owners: dict[str, str], for_update: str
) -> Steps[dict[Key, _Template]]:
    """The templates `known` changes touch, locked; those not stored yet are created."""
    first: dict[Key, tuple[DeliveryResult, NewDelivery, Change]] = {}
    for entry in known:
        first.setdefault((entry[2].waba_id, entry[2].template_id), entry)
    templates = yield from _select_templates(list(first), for_update)
    missing = [key for key in first if key not in templates]
    if not missing:
        return templates
    rows = []
    for key in missing:
        _, item, change = first[key]
        now = item.received_at_ms
        rows.append((owners[change.waba_id], *key, change.name or "", change.language or "",
                     change.category, UNKNOWN_STATUS, now, now, now))  # fmt: skip
    created = yield from _fetch_all(
        "INSERT INTO templates (workspace_id, waba_id, provider_id, name, language, category, "
        "status, status_source, status_updated_at, created_at, updated_at) VALUES {rows} "
        "ON CONFLICT (waba_id, provider_id) DO NOTHING RETURNING waba_id, provider_id",
        "(?, ?, ?, ?, ?, ?, ?, 'webhook', ?, ?, ?)",
        rows,
    )
    for row in created:
        first[row["waba_id"], row["provider_id"]][0].created += 1
    templates.update((yield from _select_templates(missing, for_update)))
    return templates


def _select_templates(keys: list[Key], for_update: str) -> Steps[dict[Key, _Template]]:
    rows = yield from _lookup(
        # The join (not a row-value IN) lets both planners look each key up in the index.
        f"SELECT {STATE_COLUMNS} FROM templates WHERE id IN (SELECT t.id FROM (VALUES {{rows}}) "
        "AS k CROSS JOIN templates AS t WHERE t.waba_id = k.column1 AND t.provider_id = k.column2) "
        f"ORDER BY id{for_update}",
        "(?, ?)",
        keys,
    )
    return {(row["waba_id"], row["provider_id"]): _Template.from_row(row) for row in rows}


def _recorded(keys: set[str]) -> Steps[set[str]]:
    """The dedupe keys among `keys` that a stored event already has."""
    rows = yield from _lookup(
        "SELECT dedupe_key FROM template_events WHERE dedupe_key IN ({rows})",
        "?",
        [(key,) for key in sorted(keys)],
    )
    return {row["dedupe_key"] for row in rows}


def _fetch_all(sql: str, group: str, rows: Sequence[Sequence[Any]]) -> Steps[list[dict[str, Any]]]:
    """Run `sql` with `{rows}` replaced by one `group` of placeholders per row; the rows of
    every statement.

    Rows go in slices whose sizes are powers of two up to ROWS_PER_STATEMENT (37 rows: 32,
    4 and 1), so each statement has one of a few texts, which both databases keep prepared,
    and none exceeds either database's limit on parameters.
    """
    answer: list[dict[str, Any]] = []
    start = 0
    while start < len(rows):
        size = min(ROWS_PER_STATEMENT, 1 << ((len(rows) - start).bit_length() - 1))
        part = rows[start : start + size]
        args = tuple(value for row in part for value in row)
        answer += yield fetch(sql.format(rows=", ".join([group] * size)), *args)
        start += size
    return answer


def _lookup(sql: str, group: str, keys: Sequence[Sequence[Any]]) -> Steps[list[dict[str, Any]]]:
    """`_fetch_all` for a lookup: the keys are padded to a size it sends in one statement
    (the last key repeated, which finds nothing new), so a batch's lookup is one round trip."""
    if not keys:
        return []
    per = ROWS_PER_STATEMENT
    size = 1 << (len(keys) - 1).bit_length() if len(keys) <= per else -(-len(keys) // per) * per
    return (yield from _fetch_all(sql, group, [*keys, *[keys[-1]] * (size - len(keys))]))
