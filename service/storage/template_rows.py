"""A template's state and history as rows: one column list and one statement for each.

Every path that writes a template stores what events.py decided (a TemplateState, its
HistoryRows) through these statements: webhooks (delivery_batch.py, many rows per
statement), and sync, import and the API (templates.py). So no path can forget a column
another one keeps: the state is written whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from ..events import PENDING_STATUSES, HistoryRow, TemplateState
from .models import Template
from .transactions import Database, Transaction, execute, executemany, fetchrow

#: A template as the API shows it: what a read (and a creation) returns.
READ_FIELDS = tuple(field.name for field in dataclasses.fields(Template))
READ_COLUMNS = ", ".join(READ_FIELDS)
#: The columns an observation moves, in TemplateState's order.
STATE_COLUMNS = TemplateState._fields
#: What a batch looks its templates up with: their key and state.
STATE_SELECT = ", ".join(("id", "waba_id", "provider_id", *STATE_COLUMNS))
_FLAGGED = STATE_COLUMNS.index("flagged")
#: A template awaiting Meta's review.
PENDING_IN = "status IN (" + ", ".join(f"'{status}'" for status in sorted(PENDING_STATUSES)) + ")"

NEW_COLUMNS = ("workspace_id", "waba_id", "provider_id", "name", "language", *STATE_COLUMNS,
               "created_at")  # fmt: skip
_BIGINT = {"status_event_at", "pending_since", "status_updated_at", "last_webhook_at",
           "last_synced_at", "updated_at", "created_at"}  # fmt: skip
#: SQL types of NEW_COLUMNS, for the row sources of the backends (Database.row_source).
NEW_TYPES = tuple(
    "bigint" if name in _BIGINT else "boolean" if name == "flagged" else "text"
    for name in NEW_COLUMNS
)
# Rows of NEW_COLUMNS read as the table `{rows}` (Database.row_source); a template
# that exists already (its WABA and provider id) is left alone and not returned.
INSERT_TEMPLATES = (
    f"INSERT INTO templates ({', '.join(NEW_COLUMNS)}) "
    f"SELECT {', '.join(f'column{n}' for n in range(1, len(NEW_COLUMNS) + 1))} "
    "FROM {rows} AS k WHERE true "
    f"ON CONFLICT (waba_id, provider_id) DO NOTHING RETURNING {READ_COLUMNS}"
)
#: A template's whole state, then its id.
UPDATE_TEMPLATE = (
    f"UPDATE templates SET {', '.join(f'{name} = ?' for name in STATE_COLUMNS)} WHERE id = ?"
)

EVENT_COLUMNS = (*HistoryRow._fields, "template_id", "waba_id", "provider_id", "dedupe_key",
                 "delivery_id", "prev_status", "prev_flagged", "prev_quality_score",
                 "prev_category")  # fmt: skip
#: A history row; a webhook's dedupe key recorded already makes it nothing.
INSERT_EVENT = (
    f"INSERT INTO template_events ({', '.join(EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in EVENT_COLUMNS)}) ON CONFLICT (dedupe_key) DO NOTHING"
)


def state_of(row: Mapping[str, Any]) -> TemplateState:
    """A template's state from a row holding STATE_COLUMNS."""
    values = [row[name] for name in STATE_COLUMNS]
    values[_FLAGGED] = bool(values[_FLAGGED])  # SQLite answers 0 or 1
    return TemplateState._make(values)


def template_values(
    workspace_id: str,
    waba_id: str,
    provider_id: str,
    name: str,
    language: str,
    state: TemplateState,
    now_ms: int,
) -> tuple[Any, ...]:
    """A row of NEW_COLUMNS."""
    return (workspace_id, waba_id, provider_id, name, language, *state, now_ms)


def event_values(
    row: HistoryRow,
    template_id: int,
    waba_id: str,
    provider_id: str,
    dedupe_key: str | None = None,
    delivery_id: int | None = None,
    before: TemplateState | None = None,
) -> tuple[Any, ...]:
    """The arguments of INSERT_EVENT; `before`: the template's state before the row (None
    for its first), which a notification shows as `previous`."""
    previous = (
        (before.status, before.flagged, before.quality_score, before.category)
        if before
        else (None, None, None, None)
    )
    return (*row, template_id, waba_id, provider_id, dedupe_key, delivery_id, *previous)


def to_template(row: dict[str, Any]) -> Template:
    """A template from a row of READ_FIELDS."""
    return Template(**{**row, "flagged": bool(row["flagged"])})


def insert_template(db: Database, row: Sequence[Any]) -> Transaction[dict[str, Any] | None]:
    """Create one template (a row of NEW_COLUMNS); its READ_FIELDS, or None when its WABA
    has a template of its provider id already."""
    [(source, args)] = db.row_source(NEW_TYPES, [row])
    created: dict[str, Any] | None = yield fetchrow(INSERT_TEMPLATES.format(rows=source), *args)
    return created


def insert_events(db: Database, rows: Sequence[tuple[Any, ...]]) -> Transaction[None]:
    """Insert history rows (each INSERT_EVENT's arguments: `event_values`), after taking the
    history lock: the last thing a transaction does before it commits, once it holds every
    row lock it needs (so the lock can be waited for but never deadlock)."""
    if not rows:
        return
    if db.history_lock:
        yield execute(db.history_lock)
    yield executemany(INSERT_EVENT, list(rows))


def update_template(template_id: int, state: TemplateState) -> Transaction[None]:
    yield execute(UPDATE_TEMPLATE, *state, template_id)
