"""Storing a batch of webhook deliveries in one transaction (dedupe, ordering, history).

Set-based: a batch costs a handful of statements whatever its size (insert the bodies,
look up channels, templates and known events, insert the history, update the templates),
and the event rules run in memory, change by change in arrival order. The inserts that
return ids and the lookups read the batch's rows as a table (`{rows}`), which each database
builds its own way (`row_source`: one statement on PostgreSQL); the history rows and the
template updates go as one statement run per row (executemany), which both drivers do
fastest. A transaction (transactions.py), so SQLite runs a whole batch in its thread and
PostgreSQL pays one round trip per statement rather than several per delivery.

A batch that fails is rolled back to its savepoint and its deliveries are stored again one
at a time: one that still fails is stored quarantined, and the others are unaffected.

A body is stored once: the bodies' insert skips one whose key (`body_key`: the SHA-256 of
its bytes) a stored delivery has, as a unique index finds (a replay within the retention
window), and the delivery answers as that stored one, "replayed". Its changes still go
through the batch, where the event dedupe keeps them from a second effect; only a batch
with a replay pays one lookup more.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..events import Change, TemplateState, observe_change, webhook_template
from .models import DeliveryResult, StoreUnavailable
from .outbox import queue_relays
from .template_rows import (
    INSERT_TEMPLATES,
    NEW_TYPES,
    STATE_SELECT,
    UPDATE_TEMPLATE,
    event_values,
    insert_events,
    state_of,
    template_values,
)
from .transactions import Database, Transaction, execute, executemany, fetch

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (WABA id, template id)
KEY_TIME_MASK = 2**64 - 1  # a body key's lead is 8 bytes (webhooks.py admits times < 2**42)


@dataclass(frozen=True)
class NewDelivery:
    body: bytes = field(repr=False)
    received_at_ms: int
    changes: Sequence[Change]
    error: str | None
    signature: str | None = field(default=None, repr=False)  # the header, for relays
    fields: frozenset[str] = frozenset()  # of every change in the body, for relay filters


def body_key(item: NewDelivery) -> bytes:
    """What a replay of a body is recognised by: the SHA-256 of its bytes, led by the newest
    entry.time of its changes (which the bytes decide too), so that new keys go to the end
    of the unique index. Keys of random bytes each dirtied an index page of their own
    (bench/RESULTS.md, "Why the code is as it is")."""
    entry_time = max([change.entry_time for change in item.changes], default=0)
    return (entry_time & KEY_TIME_MASK).to_bytes(8, "big") + hashlib.sha256(item.body).digest()


class _Failed(Exception):
    """A batch could not be applied; its savepoint has been rolled back."""


def record_batch(items: Sequence[NewDelivery], db: Database) -> Transaction[list[DeliveryResult]]:
    """Store and apply every delivery; errors meaning "store unavailable" fail the batch."""
    if db.batch_setup:
        yield execute(db.batch_setup)
    try:
        return (yield from _attempt(items, db))
    except _Failed as failed:
        if len(items) == 1:
            return (yield from _quarantine(items[0], failed, db))
    results = []
    for item in items:  # find the culprit: each delivery on its own
        try:
            results += yield from _attempt([item], db)
        except _Failed as failed:
            results += yield from _quarantine(item, failed, db)
    return results


def _quarantine(
    item: NewDelivery, failed: _Failed, db: Database
) -> Transaction[list[DeliveryResult]]:
    logger.error("applying a delivery failed (%s); storing it quarantined", failed)
    # Its changes are kept for its body_key only: storing the body applies nothing.
    quarantined = dataclasses.replace(item, error=f"could not apply: {failed}")
    return (yield from _insert_deliveries([quarantined], db))


def _attempt(items: Sequence[NewDelivery], db: Database) -> Transaction[list[DeliveryResult]]:
    yield execute("SAVEPOINT batch")
    try:
        results = yield from _record(items, db)
    except Exception as exc:
        if db.unavailable(exc) or isinstance(exc, StoreUnavailable):
            raise
        yield execute("ROLLBACK TO SAVEPOINT batch")
        yield execute("RELEASE SAVEPOINT batch")
        raise _Failed(type(exc).__name__) from exc
    return results  # its savepoint is released by the commit (a round trip less)


def _record(items: Sequence[NewDelivery], db: Database) -> Transaction[list[DeliveryResult]]:
    results = yield from _insert_deliveries(items, db)
    pending = [(r, i, c) for r, i in zip(results, items, strict=True) for c in i.changes]
    owners = yield from _owners({change.waba_id for _, _, change in pending}, db)
    known = []
    for result, item, change in pending:
        if owners.get(change.waba_id) is None:
            result.unknown_waba += 1
        else:
            known.append((result, item, change))
    if not known:
        return results
    templates, events = yield from _templates(known, owners, db)
    recorded = yield from _recorded({change.dedupe_key for _, _, change in known}, db)
    for result, item, change in known:
        if change.dedupe_key in recorded:
            result.duplicate += 1
            continue
        recorded.add(change.dedupe_key)
        template = templates[change.waba_id, change.template_id]
        events.append(template.apply(change, result, item.received_at_ms))
    yield from insert_events(db, events)
    touched = [(*t.state, t.id) for t in templates.values() if t.touched]
    if touched:
        yield executemany(UPDATE_TEMPLATE, touched)
    return results


@dataclass
class _Template:
    """A template's stored state, changed in memory by the batch's events in order."""

    id: int
    state: TemplateState
    touched: bool = False

    def apply(self, change: Change, result: DeliveryResult, now_ms: int) -> tuple[Any, ...]:
        """Apply `change` (events.observe_change) and return its history row's arguments."""
        before = self.state
        transition = observe_change(before, change, now_ms)
        [row] = transition.rows
        if transition.stale:
            result.stale += 1
        elif row.applied:
            result.applied += 1
        self.state, self.touched = transition.state, True
        return event_values(row, self.id, change.waba_id, change.template_id,
                            change.dedupe_key, result.delivery_id, before)  # fmt: skip


def _insert_deliveries(
    items: Sequence[NewDelivery], db: Database
) -> Transaction[list[DeliveryResult]]:
    """Insert the bodies not stored yet, each queued for the relays that take it; a body
    stored already (the same key, maybe earlier in this batch) is a replay, answered with the
    stored delivery's id, and relayed once only."""
    rows = [(i.received_at_ms, i.body, "quarantined" if i.error else "processed", i.error,
             body_key(i), i.signature) for i in items]  # fmt: skip
    inserted = yield from _each(
        "INSERT INTO webhook_deliveries (received_at, body, outcome, error, body_key, signature) "
        "SELECT column1, column2, column3, column4, column5, column6 FROM {rows} AS k "
        "WHERE true ON CONFLICT (body_key) DO NOTHING RETURNING id",
        ("bigint", "bytea", "text", "text", "bytea", "text"),
        rows,
        db,
    )
    ids = sorted(row["id"] for row in inserted)
    if len(ids) < len(rows):
        results = yield from _with_replays(rows, set(ids), db)
    else:  # no replay: the ids in insertion order (each insert takes a larger id)
        results = [
            DeliveryResult(delivery_id=i, outcome=r[2]) for i, r in zip(ids, rows, strict=True)
        ]
    fresh = {
        r.delivery_id: (r, i)
        for r, i in zip(results, items, strict=True)
        if r.outcome != "replayed"
    }
    queued = yield from queue_relays(
        [(d, i.received_at_ms, i.fields) for d, (_, i) in fresh.items()]
    )
    for delivery_id in queued:
        fresh[delivery_id][0].relayed += 1
    return results


def _with_replays(
    rows: list[tuple[Any, ...]], inserted: set[int], db: Database
) -> Transaction[list[DeliveryResult]]:
    """Each body's stored id, read back: the copy inserted here is fresh, others replays."""
    stored = yield from _stored_ids({row[4] for row in rows}, db)
    results = []
    for row in rows:
        delivery_id = stored[row[4]]
        fresh = delivery_id in inserted
        inserted.discard(delivery_id)  # a later copy in this batch replays this one
        outcome = row[2] if fresh else "replayed"
        results.append(DeliveryResult(delivery_id=delivery_id, outcome=outcome))
    return results


def _stored_ids(keys: set[bytes], db: Database) -> Transaction[dict[bytes, int]]:
    """The ids of the stored deliveries with these body keys."""
    rows = yield from _lookup(
        "SELECT d.id, d.body_key FROM {rows} AS k "
        "JOIN webhook_deliveries AS d ON d.body_key = k.column1",
        ("bytea",),
        [(key,) for key in sorted(keys)],
        db,
    )
    found = {bytes(row["body_key"]): int(row["id"]) for row in rows}
    if len(found) < len(keys):  # PostgreSQL: pruned between the insert and this lookup
        raise StoreUnavailable("a replayed delivery was pruned meanwhile; retry")
    return found


def _owners(waba_ids: set[str], db: Database) -> Transaction[dict[str, str]]:
    rows = yield from _lookup(
        "SELECT c.waba_id, c.workspace_id FROM {rows} AS k "
        "JOIN channels AS c ON c.waba_id = k.column1",
        ("text",),
        [(waba_id,) for waba_id in sorted(waba_ids)],
        db,
    )
    return {row["waba_id"]: row["workspace_id"] for row in rows}


def _templates(
    known: list[tuple[DeliveryResult, NewDelivery, Change]], owners: dict[str, str], db: Database
) -> Transaction[tuple[dict[Key, _Template], list[tuple[Any, ...]]]]:
    """The templates `known` changes touch, locked; those not stored yet are created, and
    their first history rows returned, to be inserted before the changes' rows."""
    first: dict[Key, tuple[DeliveryResult, NewDelivery, Change]] = {}
    for entry in known:
        first.setdefault((entry[2].waba_id, entry[2].template_id), entry)
    templates = yield from _select_templates(list(first), db)
    missing = [key for key in first if key not in templates]
    if not missing:
        return templates, []
    rows, history = [], {}
    for key in missing:
        _, item, change = first[key]
        history[key] = webhook_template(change, item.received_at_ms)
        rows.append(template_values(owners[change.waba_id], *key, change.name or "",
                                    change.language or "", history[key].state,
                                    item.received_at_ms))  # fmt: skip
    created = yield from _each(INSERT_TEMPLATES, NEW_TYPES, rows, db)
    creations = []
    for row in created:
        key = row["waba_id"], row["provider_id"]
        result = first[key][0]
        result.created += 1
        creations += [event_values(r, row["id"], *key, None, result.delivery_id)
                      for r in history[key].rows]  # fmt: skip
    templates.update((yield from _select_templates(missing, db)))
    return templates, creations


def _select_templates(keys: list[Key], db: Database) -> Transaction[dict[Key, _Template]]:
    rows = yield from _lookup(
        # The join (not a row-value IN) lets both planners look each key up in the index.
        f"SELECT {STATE_SELECT} FROM templates WHERE id IN (SELECT t.id FROM {{rows}} AS k "
        "CROSS JOIN templates AS t WHERE t.waba_id = k.column1 AND t.provider_id = k.column2) "
        f"ORDER BY id{db.for_update}",
        ("text", "text"),
        keys,
        db,
    )
    return {
        (row["waba_id"], row["provider_id"]): _Template(row["id"], state_of(row)) for row in rows
    }


def _recorded(keys: set[str], db: Database) -> Transaction[set[str]]:
    """The dedupe keys among `keys` that a stored event already has."""
    rows = yield from _lookup(
        "SELECT e.dedupe_key FROM {rows} AS k "
        "JOIN template_events AS e ON e.dedupe_key = k.column1",
        ("text",),
        [(key,) for key in sorted(keys)],
        db,
    )
    return {row["dedupe_key"] for row in rows}


def _each(
    sql: str, types: Sequence[str], rows: Sequence[Sequence[Any]], db: Database
) -> Transaction[list[dict[str, Any]]]:
    """Run `sql` over `rows`, read as the table `{rows}`; the rows of every statement."""
    answer: list[dict[str, Any]] = []
    for source, args in db.row_source(types, rows) if rows else ():
        answer += yield fetch(sql.format(rows=source), *args)
    return answer


def _lookup(
    sql: str, types: Sequence[str], keys: Sequence[Sequence[Any]], db: Database
) -> Transaction[list[dict[str, Any]]]:
    """`_each` for a lookup, its keys padded to a power of two (the last one repeated, which
    finds nothing new): SQLite then reads them in one statement, not one per power of two
    (bench/RESULTS.md, "Why ..."); PostgreSQL reads any number in one."""
    padding = [keys[-1]] * ((1 << (len(keys) - 1).bit_length()) - len(keys)) if keys else []
    return (yield from _each(sql, types, [*keys, *padding], db))
