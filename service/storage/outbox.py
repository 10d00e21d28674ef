"""Store methods of the outbox: relays, and the rows a dispatcher sends (design sections 10
and 11: relays' deliveries, and notifications, whose rows notifications.py queues).

Rows are written in the same commit as what they report (delivery_batch.py queues a
delivery's relay rows with it). A dispatcher claims due rows with a lease (`lease_owner`,
`lease_until`), so each is sent by one replica at a time, and a dead replica's claims are
taken over once their lease expires; on PostgreSQL, replicas claiming at once skip each
other's rows (SKIP LOCKED) instead of waiting.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from .models import NotFound, OutboxDepth, OutboxItem, Relay, RelaySummary
from .transactions import (
    Queries,
    Transaction,
    count_returned,
    execute,
    executemany,
    fetch,
    read,
    transaction,
)

RELAY, NOTIFICATION = "relay", "notification"
QUEUED, FAILED = "queued", "failed"
RELAY_COLUMNS = "id, name, url, fields, created_at"
INSERT_OUTBOX = (
    "INSERT INTO outbox (kind, target_id, item_id, state, next_attempt_at, created_at) "
    f"VALUES ('{RELAY}', ?, ?, '{QUEUED}', ?, ?)"
)
RELAY_SUMMARY = (
    f"SELECT {', '.join(f'r.{c}' for c in RELAY_COLUMNS.split(', '))}, "
    f"(SELECT COUNT(*) FROM outbox o WHERE o.target_id = r.id AND o.state = '{QUEUED}') "
    "AS queued, "
    f"(SELECT COUNT(*) FROM outbox o WHERE o.target_id = r.id AND o.state = '{FAILED}') "
    "AS failed, "
    "(SELECT o.last_error FROM outbox o WHERE o.target_id = r.id AND o.last_error IS NOT NULL "
    "ORDER BY o.last_attempt_at DESC LIMIT 1) AS last_error "
    "FROM relays r ORDER BY r.created_at, r.id"
)
# A claimed row with what sending it takes: a relay's URL and delivery, a subscription's URL
# (notifications.py reads its event). A row whose relay went meanwhile has no URL: skipped.
CLAIMED = (
    "SELECT o.id, o.kind, o.target_id, o.item_id, COALESCE(r.url, s.url) AS url, o.attempts, "
    "o.created_at, d.body, d.signature FROM outbox o "
    f"LEFT JOIN relays r ON o.kind = '{RELAY}' AND r.id = o.target_id "
    f"LEFT JOIN webhook_deliveries d ON o.kind = '{RELAY}' AND d.id = o.item_id "
    f"LEFT JOIN webhook_subscriptions s ON o.kind = '{NOTIFICATION}' AND s.id = o.target_id "
    "WHERE o.id IN ({ids}) AND COALESCE(r.url, s.url) IS NOT NULL ORDER BY o.id"
)


class OutboxQueries(Queries):
    @transaction
    def add_relay(
        self, url: str, fields: Sequence[str], name: str | None, now_ms: int
    ) -> Transaction[Relay]:
        relay = Relay(f"rl_{secrets.token_hex(6)}", name, url, tuple(fields), now_ms)
        yield execute(
            f"INSERT INTO relays ({RELAY_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
            relay.id, name, url, ",".join(fields) or None, now_ms,
        )  # fmt: skip
        return relay

    @read
    def list_relays(self) -> Transaction[list[RelaySummary]]:
        """Every relay with its queued and failed rows and its latest error, oldest first."""
        rows = yield fetch(RELAY_SUMMARY)
        return [
            RelaySummary(to_relay(row), int(row["queued"]), int(row["failed"]), row["last_error"])
            for row in rows
        ]

    @transaction
    def remove_relay(self, relay_id: str) -> Transaction[None]:
        """Delete the relay and every row still to be sent to it."""
        yield execute("DELETE FROM outbox WHERE target_id = ?", relay_id)
        if not (
            yield from count_returned("DELETE FROM relays WHERE id = ? RETURNING id", relay_id)
        ):
            raise NotFound(f"no relay {relay_id}")

    @transaction
    def retry_relay(self, relay_id: str, now_ms: int) -> Transaction[int]:
        """Queue the relay's failed rows again, due now, with a fresh age; how many."""
        if not (yield fetch("SELECT id FROM relays WHERE id = ?", relay_id)):
            raise NotFound(f"no relay {relay_id}")
        return (
            yield from count_returned(
                f"UPDATE outbox SET state = '{QUEUED}', attempts = 0, next_attempt_at = ?, "
                f"created_at = ? WHERE target_id = ? AND state = '{FAILED}' RETURNING id",
                now_ms,
                now_ms,
                relay_id,
            )
        )

    @transaction
    def claim_outbox(
        self,
        owner: str,
        now_ms: int,
        lease_ms: int,
        limit: int,
        per_target: int | None = None,
        busy: Mapping[str, int] | None = None,
    ) -> Transaction[list[OutboxItem]]:
        """Lease up to `limit` due rows to `owner`, the longest-due first, with what sending
        them takes. A row leased to another replica is not due until its lease expires.

        With `per_target`, no target gets more rows than that, counting the ones `busy`
        says the caller holds already (a dispatcher's sends in flight): rows of a target
        with many due are passed over for other targets' rather than claimed to wait."""
        held = Counter(busy or {})
        ids: list[int] = []
        while len(ids) < limit:
            wanted = limit - len(ids)
            due = yield from self._due(now_ms, wanted, full_targets(held, per_target))
            taken = [row["id"] for row in due if take(held, row["target_id"], per_target)]
            if not taken:
                break
            yield execute(
                "UPDATE outbox SET lease_owner = ?, lease_until = ? "
                f"WHERE id IN ({', '.join('?' for _ in taken)})",
                owner, now_ms + lease_ms, *taken,
            )  # fmt: skip
            ids += taken
            if len(due) < wanted:  # every due row was seen (else a target just got full)
                break
        if not ids:
            return []
        rows = yield fetch(CLAIMED.format(ids=", ".join("?" for _ in ids)), *ids)
        return [OutboxItem(**{**row, "body": bytes(row["body"] or b"")}) for row in rows]

    def _due(self, now_ms: int, limit: int, skip: Sequence[str]) -> Transaction[list[Any]]:
        """Up to `limit` due rows (id, target), but none of the targets in `skip`, locked
        until the claim commits; on PostgreSQL, rows another replica is claiming are
        skipped (SKIP LOCKED) instead of waited for."""
        lock = f"{self._db.for_update} SKIP LOCKED" if self._db.for_update else ""
        not_in = f" AND target_id NOT IN ({', '.join('?' for _ in skip)})" if skip else ""
        rows: list[Any] = yield fetch(
            f"SELECT id, target_id FROM outbox WHERE state = '{QUEUED}' "
            "AND next_attempt_at <= ? AND lease_until <= ? AND NOT EXISTS (SELECT 1 FROM "
            "webhook_subscriptions AS s WHERE s.id = target_id AND NOT s.enabled)"
            f"{not_in} ORDER BY next_attempt_at, id LIMIT ?{lock}",
            now_ms, now_ms, *skip, limit,
        )  # fmt: skip
        return rows

    @transaction
    def finish_outbox(
        self, item: OutboxItem, owner: str, now_ms: int, error: str | None, retry_at: int | None
    ) -> Transaction[bool]:
        """Record a relay's attempt (`finish`)."""
        return (yield from finish(item, owner, now_ms, error, retry_at))

    @read
    def outbox_depth(self) -> Transaction[list[OutboxDepth]]:
        """The rows of each kind and state, and the oldest's queueing time (/metrics)."""
        rows = yield fetch(
            "SELECT kind, state, COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox "
            "GROUP BY kind, state"
        )
        return [OutboxDepth(r["kind"], r["state"], int(r["n"]), int(r["oldest"])) for r in rows]

    @transaction
    def prune_outbox(self, before_ms: int, limit: int) -> Transaction[int]:
        """Delete up to `limit` failed rows that were queued before `before_ms`."""
        return (
            yield from count_returned(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE state = "
                f"'{FAILED}' AND created_at < ? ORDER BY id LIMIT ?) RETURNING id",
                before_ms,
                limit,
            )
        )


def to_relay(row: dict[str, Any]) -> Relay:
    fields = tuple(row["fields"].split(",")) if row["fields"] else ()
    return Relay(row["id"], row["name"], row["url"], fields, row["created_at"])


def queue_relays(deliveries: Sequence[tuple[int, int, frozenset[str]]]) -> Transaction[list[int]]:
    """Queue each delivery (its id, when it was received, the fields of its changes) for
    every relay that takes it, in the transaction that stores it; the delivery ids queued,
    once per relay."""
    if not deliveries:
        return []
    relays = [to_relay(row) for row in (yield fetch(f"SELECT {RELAY_COLUMNS} FROM relays"))]
    rows = [
        (relay.id, delivery_id, received_at, received_at)
        for delivery_id, received_at, fields in deliveries
        for relay in relays
        if not relay.fields or not fields.isdisjoint(relay.fields)
    ]
    if rows:
        yield executemany(INSERT_OUTBOX, rows)
    return [row[1] for row in rows]


def full_targets(held: Mapping[str, int], per_target: int | None) -> list[str]:
    """The targets that already have `per_target` rows held."""
    return [] if per_target is None else [t for t, n in held.items() if n >= per_target]


def take(held: Counter[str], target_id: str, per_target: int | None) -> bool:
    """Whether a row of `target_id` fits under `per_target`; if so it is counted in `held`."""
    if per_target is not None and held[target_id] >= per_target:
        return False
    held[target_id] += 1
    return True


def finish(
    item: OutboxItem, owner: str, now_ms: int, error: str | None, retry_at: int | None
) -> Transaction[bool]:
    """Record an attempt: sent (`error` None: the row goes), to be retried at `retry_at`, or
    failed for good (`retry_at` None). False when `owner` had lost the lease."""
    args: tuple[Any, ...] = ()
    if error is None:
        sql = "DELETE FROM outbox WHERE id = ? AND lease_owner = ?"
    else:
        sql = (
            "UPDATE outbox SET attempts = attempts + 1, lease_owner = NULL, lease_until = 0, "
            "state = ?, next_attempt_at = ?, last_attempt_at = ?, last_error = ? "
            "WHERE id = ? AND lease_owner = ?"
        )
        state = QUEUED if retry_at is not None else FAILED
        args = (state, retry_at if retry_at is not None else now_ms, now_ms, error)
    done = yield from count_returned(f"{sql} RETURNING id", *args, item.id, owner)
    return done == 1
