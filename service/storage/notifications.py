"""Store methods of the notifications (design section 11): subscriptions, the fan-out of
history to the outbox, and each attempt's outcome.

The history is the event log: every applied row is an event, committed with the change it
records. Each subscription keeps a `cursor`, the last history id handed to the outbox;
`fan_out` moves the rows past it into outbox rows of kind "notification" and advances it in
one transaction, so an event is queued exactly once, and retried on its own from there.
History ids are in commit order (template_rows.insert_events), so a cursor never passes a
row that commits later.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from ..events import EVENT_TYPES, HistoryRow
from .models import (
    HistoryEvent,
    NotFound,
    Notification,
    NotificationAttempt,
    OutboxItem,
    Previous,
    Subscription,
    TemplateEvent,
)
from .outbox import NOTIFICATION, QUEUED, finish
from .template_rows import READ_FIELDS, to_template
from .transactions import (
    Queries,
    Transaction,
    execute,
    executemany,
    fetch,
    fetchrow,
    read,
    transaction,
)

SUBSCRIPTION_COLUMNS = (
    "id, workspace_id, url, events, enabled, disabled_reason, created_at, last_success_at, "
    "failing_since, secret_enc"
)
ATTEMPT_COLUMNS = (
    "id, subscription_id, history_id, event_type, attempt, at, status_code, error, next_attempt_at"
)
# A history row with what it changed from and its template (`_template_event` reads it).
EVENT_SELECT = (
    f"SELECT {', '.join(f'e.{name}' for name in ('id', *HistoryRow._fields))}, "
    "e.prev_status, e.prev_flagged, e.prev_quality_score, e.prev_category, "
    f"{', '.join(f't.{name} AS t_{name}' for name in READ_FIELDS)}"
)
EVENT_FROM = "FROM template_events AS e JOIN templates AS t ON t.id = e.template_id"
NOTIFICATION_SQL = (
    f"{EVENT_SELECT}, s.url, s.failing_since, s.secret_enc {EVENT_FROM} "
    "JOIN webhook_subscriptions AS s ON s.id = ? WHERE e.id = ?"
)


class NotificationQueries(Queries):
    @transaction
    def add_subscription(
        self, workspace_id: str, url: str, events: Sequence[str], secret_enc: str, now_ms: int
    ) -> Transaction[Subscription]:
        """A subscription that receives the events committed from now on."""
        subscription = Subscription(
            f"wh_{secrets.token_hex(6)}", workspace_id, url, tuple(events), True, None, now_ms,
            None, None, secret_enc,
        )  # fmt: skip
        yield execute(
            f"INSERT INTO webhook_subscriptions ({SUBSCRIPTION_COLUMNS}, cursor) "
            "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, COALESCE(MAX(id), 0) FROM template_events",
            subscription.id, workspace_id, url, ",".join(events) or None, True, None, now_ms,
            None, None, secret_enc,
        )  # fmt: skip
        return subscription

    @read
    def list_subscriptions(self, workspace_id: str) -> Transaction[list[Subscription]]:
        rows = yield fetch(
            f"SELECT {SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions WHERE workspace_id = ? "
            "ORDER BY created_at, id",
            workspace_id,
        )
        return [_subscription(row) for row in rows]

    @transaction
    def remove_subscription(self, workspace_id: str, subscription_id: str) -> Transaction[None]:
        """Delete the subscription, its queued events and its deliveries log."""
        yield from _require(workspace_id, subscription_id)
        yield execute("DELETE FROM outbox WHERE target_id = ?", subscription_id)
        yield execute(
            "DELETE FROM notification_attempts WHERE subscription_id = ?", subscription_id
        )
        yield execute("DELETE FROM webhook_subscriptions WHERE id = ?", subscription_id)

    @transaction
    def enable_subscription(
        self, workspace_id: str, subscription_id: str
    ) -> Transaction[Subscription]:
        """Enable it again; the events committed while it was disabled follow."""
        yield from _require(workspace_id, subscription_id)
        row = yield fetchrow(
            "UPDATE webhook_subscriptions SET enabled = ?, disabled_reason = NULL, "
            f"failing_since = NULL WHERE id = ? RETURNING {SUBSCRIPTION_COLUMNS}",
            True,
            subscription_id,
        )
        return _subscription(row)

    @transaction
    def subscription_attempts(
        self, workspace_id: str, subscription_id: str, limit: int
    ) -> Transaction[list[NotificationAttempt]]:
        """The subscription's latest attempts, newest first."""
        yield from _require(workspace_id, subscription_id)
        rows = yield fetch(
            f"SELECT {ATTEMPT_COLUMNS} FROM notification_attempts WHERE subscription_id = ? "
            "ORDER BY id DESC LIMIT ?",
            subscription_id,
            limit,
        )
        return [NotificationAttempt(**row) for row in rows]

    @transaction
    def fan_out(self, now_ms: int, limit: int) -> Transaction[int]:
        """Queue the applied history rows past each enabled subscription's cursor that it
        takes (at most `limit` rows read), and advance the cursors; how many were queued.
        The subscriptions are locked, so replicas fanning out at once queue nothing twice."""
        subscriptions = yield fetch(
            "SELECT id, workspace_id, events, cursor FROM webhook_subscriptions "
            f"WHERE enabled = ? ORDER BY id{self._db.for_update}",
            True,
        )
        if not subscriptions:
            return 0
        # The newest id first: every id up to it is committed (or never will be).
        top = (yield fetchrow("SELECT COALESCE(MAX(id), 0) AS top FROM template_events"))["top"]
        events = yield fetch(
            "SELECT e.id, e.field, t.workspace_id FROM template_events AS e "
            "JOIN templates AS t ON t.id = e.template_id "
            "WHERE e.id > ? AND e.id <= ? AND e.applied = ? ORDER BY e.id LIMIT ?",
            min(s["cursor"] for s in subscriptions), top, True, limit,
        )  # fmt: skip
        reached = events[-1]["id"] if len(events) == limit else top
        queued = []
        for subscription in subscriptions:
            types = set(subscription["events"].split(",")) if subscription["events"] else None
            queued += [
                (subscription["id"], event["id"])
                for event in events
                if event["id"] > subscription["cursor"]
                and event["workspace_id"] == subscription["workspace_id"]
                and (types is None or EVENT_TYPES.get(event["field"]) in types)
            ]
        if queued:
            yield executemany(
                "INSERT INTO outbox (kind, target_id, item_id, state, next_attempt_at, "
                f"created_at) VALUES ('{NOTIFICATION}', ?, ?, '{QUEUED}', ?, ?)",
                [(target, item, now_ms, now_ms) for target, item in queued],
            )
        yield executemany(
            "UPDATE webhook_subscriptions SET cursor = ? WHERE id = ? AND cursor < ?",
            [(reached, s["id"], reached) for s in subscriptions],
        )
        return len(queued)

    @read
    def notification(self, item: OutboxItem) -> Transaction[Notification | None]:
        """The event of a claimed notification row as its subscription receives it; None
        when the event or its template is gone."""
        row = yield fetchrow(NOTIFICATION_SQL, item.target_id, item.item_id)
        if row is None:
            return None
        found = _template_event(row)
        return Notification(
            found.event, found.previous, found.template, row["url"], row["failing_since"],
            row["secret_enc"],
        )  # fmt: skip

    @read
    def latest_event_id(self) -> Transaction[int]:
        """The newest history id (0 for none): every event committed later has a larger one,
        so a stream that starts now resumes after it."""
        row = yield fetchrow("SELECT COALESCE(MAX(id), 0) AS newest FROM template_events")
        return int(row["newest"])

    @read
    def events_after(
        self,
        after_id: int,
        limit: int,
        workspace_id: str | None = None,
        template_id: int | None = None,
    ) -> Transaction[list[TemplateEvent]]:
        """The events (applied history rows) after `after_id`, oldest first, of every
        workspace or of one (and of one template): what the event watch follows and a stream
        replays. Ids are in commit order, so resuming after the last one never skips one."""
        filters = (("t.workspace_id", workspace_id), ("t.id", template_id))
        where = "".join(f" AND {column} = ?" for column, value in filters if value is not None)
        rows = yield fetch(
            f"{EVENT_SELECT} {EVENT_FROM} WHERE e.id > ? AND e.applied = ?{where} "
            "ORDER BY e.id LIMIT ?",
            after_id, True, *(value for _, value in filters if value is not None), limit,
        )  # fmt: skip
        return [_template_event(row) for row in rows]

    @transaction
    def record_notification(
        self,
        item: OutboxItem,
        owner: str,
        now_ms: int,
        status_code: int | None,
        error: str | None,
        retry_at: int | None,
        disable: str | None,
    ) -> Transaction[bool]:
        """Record an attempt (see finish), log it, and keep the subscription's health: a
        success clears `failing_since`, a failure sets it once; `disable` disables it."""
        if not (yield from finish(item, owner, now_ms, error, retry_at)):
            return False
        field = yield fetchrow("SELECT field FROM template_events WHERE id = ?", item.item_id)
        yield execute(
            f"INSERT INTO notification_attempts ({ATTEMPT_COLUMNS.removeprefix('id, ')}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            item.target_id, item.item_id, EVENT_TYPES.get(field["field"] if field else "", "?"),
            item.attempts + 1, now_ms, status_code, error, retry_at if error else None,
        )  # fmt: skip
        health = (
            ("last_success_at = ?, failing_since = NULL", now_ms)
            if error is None
            else ("failing_since = COALESCE(failing_since, ?)", now_ms)
        )
        yield execute(
            f"UPDATE webhook_subscriptions SET {health[0]} WHERE id = ?", health[1], item.target_id
        )
        if disable:
            yield execute(
                "UPDATE webhook_subscriptions SET enabled = ?, disabled_reason = ? WHERE id = ?",
                False, disable, item.target_id,
            )  # fmt: skip
        return True


def _require(workspace_id: str, subscription_id: str) -> Transaction[None]:
    row: dict[str, Any] | None = yield fetchrow(
        "SELECT id FROM webhook_subscriptions WHERE id = ? AND workspace_id = ?",
        subscription_id,
        workspace_id,
    )
    if row is None:
        raise NotFound(f"workspace {workspace_id} has no webhook {subscription_id}")


def _template_event(row: dict[str, Any]) -> TemplateEvent:
    history = HistoryRow(**{name: row[name] for name in HistoryRow._fields})
    event = HistoryEvent(row["id"], history._replace(applied=bool(history.applied)))
    template = to_template({name: row[f"t_{name}"] for name in READ_FIELDS})
    previous = None
    if row["prev_status"] is not None:  # set on every row but a template's first
        previous = Previous(
            row["prev_status"], bool(row["prev_flagged"]), row["prev_quality_score"],
            row["prev_category"],
        )  # fmt: skip
    return TemplateEvent(event, previous, template)


def _subscription(row: dict[str, Any]) -> Subscription:
    events = tuple(row["events"].split(",")) if row["events"] else ()
    return Subscription(**{**row, "events": events, "enabled": bool(row["enabled"])})
