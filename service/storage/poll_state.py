"""Store methods of the polling fallback (design section 8): due work, claims, outcomes.

Per workspace, `workspace_polls` keeps the poller's state: `next_poll_at` (not before; the
interval after a claim, or a failure backoff), a lease (`lease_owner`, `lease_until`) so one
replica polls a workspace at a time and a crashed replica's claim is taken over once its lease
expires, and the consecutive `failures` with the last outcome and error, for operators.

A claim is a compare-and-set upsert (`INSERT ... ON CONFLICT DO UPDATE ... WHERE ...
RETURNING`), atomic on both backends: on PostgreSQL the conflicting row is locked and the
WHERE re-checked on its newest version; SQLite's BEGIN IMMEDIATE serialises writers.
"""

from __future__ import annotations

from .models import PollState
from .transactions import Queries, Transaction, fetch, fetchrow, read, transaction

# The workspace's poll state forbids a poll now: leased, or released with a later next_poll_at.
# A lease still named by an owner after it expired is a crashed replica's: it is taken over.
POLL_BLOCKED = "p.lease_until > ? OR (p.lease_owner IS NULL AND p.next_poll_at > ?)"
# A sync (any trigger) started since the cutoff that finished or is still alive.
RECENT_SYNC = (
    "SELECT 1 FROM sync_runs r WHERE r.workspace_id = {ws} AND r.started_at > ? "
    "AND (r.status <> 'running' OR r.lease_until > ?)"
)
# A template awaits a webhook while `awaiting_since` is set: it is pending, and no webhook
# came since it became pending (schema.py, migration 8). MATERIALIZED keeps SQLite's planner
# on that column's partial index, whose entries are the few templates awaiting.
DUE_SQL = (
    "WITH awaiting AS MATERIALIZED (SELECT t.workspace_id, t.awaiting_since FROM templates t "
    "WHERE t.awaiting_since <= ?) "
    "SELECT a.workspace_id, MIN(a.awaiting_since) AS oldest FROM awaiting a "
    "WHERE NOT EXISTS (SELECT 1 FROM workspace_polls p WHERE p.workspace_id = a.workspace_id "
    f"AND ({POLL_BLOCKED})) "
    f"AND NOT EXISTS ({RECENT_SYNC.format(ws='a.workspace_id')}) "
    "GROUP BY a.workspace_id ORDER BY oldest, a.workspace_id LIMIT ?"
)
# Templates awaiting a webhook that are still inside their grace period (the same index).
WAITING_SQL = (
    "SELECT COUNT(*) AS waiting, MIN(awaiting_since) AS oldest FROM templates "
    "WHERE awaiting_since > ?"
)
POLL_COLUMNS = (
    "workspace_id, next_poll_at, lease_owner, lease_until, failures, last_polled_at, "
    "last_outcome, last_error"
)


def due_args(now_ms: int, grace_ms: int, interval_ms: int, limit: int) -> list[int]:
    """The bound values of DUE_SQL, in order."""
    return [now_ms - grace_ms, now_ms, now_ms, now_ms - interval_ms, now_ms, limit]


class PollStateQueries(Queries):
    @read
    def due_workspaces(
        self, now_ms: int, grace_ms: int, interval_ms: int, limit: int
    ) -> Transaction[list[str]]:
        """Workspaces to poll now, the longest-waiting first (design section 8).

        A workspace is due when it has a pending template that got no webhook since it
        became pending, became pending at least `grace_ms` ago, when no sync of it (any
        trigger) started in the last `interval_ms`, and when its poll state allows it.
        """
        rows = yield fetch(DUE_SQL, *due_args(now_ms, grace_ms, interval_ms, limit))
        return [row["workspace_id"] for row in rows]

    @read
    def grace_waiting(self, now_ms: int, grace_ms: int) -> Transaction[tuple[int, int | None]]:
        """How many templates await a webhook inside their grace period (not due yet), and
        when the first of them leaves it (None when none waits)."""
        row = yield fetchrow(WAITING_SQL, now_ms - grace_ms)
        if row is None or row["oldest"] is None:
            return 0, None
        return int(row["waiting"]), int(row["oldest"]) + grace_ms

    @transaction
    def claim_poll(
        self, workspace_id: str, owner: str, now_ms: int, lease_ms: int, interval_ms: int
    ) -> Transaction[bool]:
        """Take the workspace's poll lease for `owner`; False if someone polls or polled it.

        Taking it also moves `next_poll_at` one interval ahead, so exactly one claim per
        interval succeeds. An expired lease that was never released is taken over.
        """
        recent = yield fetchrow(
            RECENT_SYNC.format(ws="?"), workspace_id, now_ms - interval_ms, now_ms
        )
        if recent:
            return False
        row = yield fetchrow(
            "INSERT INTO workspace_polls (workspace_id, next_poll_at, lease_owner, "
            "lease_until) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (workspace_id) DO UPDATE SET next_poll_at = excluded.next_poll_at, "
            "lease_owner = excluded.lease_owner, lease_until = excluded.lease_until "
            "WHERE workspace_polls.lease_until <= ? AND "
            "(workspace_polls.lease_owner IS NOT NULL OR workspace_polls.next_poll_at <= ?) "
            "RETURNING workspace_id",
            workspace_id, now_ms + interval_ms, owner, now_ms + lease_ms, now_ms, now_ms,
        )  # fmt: skip
        return row is not None

    @transaction
    def record_poll(
        self,
        workspace_id: str,
        owner: str,
        outcome: str,
        now_ms: int,
        next_poll_at: int,
        failures: int,
        error: str | None,
    ) -> Transaction[bool]:
        """Release `owner`'s lease with the poll's outcome; False if the lease was lost."""
        row = yield fetchrow(
            "UPDATE workspace_polls SET lease_owner = NULL, lease_until = 0, "
            "next_poll_at = ?, failures = ?, last_polled_at = ?, last_outcome = ?, "
            "last_error = ? WHERE workspace_id = ? AND lease_owner = ? "
            "RETURNING workspace_id",
            next_poll_at, failures, now_ms, outcome, error, workspace_id, owner,
        )  # fmt: skip
        return row is not None

    @read
    def poll_state(self, workspace_id: str) -> Transaction[PollState | None]:
        """The workspace's poll state (None before its first claim)."""
        row = yield fetchrow(
            f"SELECT {POLL_COLUMNS} FROM workspace_polls WHERE workspace_id = ?",
            workspace_id,
        )
        return PollState(**row) if row else None
