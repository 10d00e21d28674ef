"""Idempotency keys of the API's writes (design section 12): a request repeated with its
`Idempotency-Key` within 24 h gets the first one's answer, and what it did (a call to Meta)
is done once.

`begin_idempotent` claims a key for a request, or answers with what its first request
answered; `finish_idempotent` stores that answer; `abandon_idempotent` frees the key for an
answer a retry should redo (429, 5xx). A claim is a committed row, so it holds across
replicas: on PostgreSQL, two begins of one key at once meet at its primary key, and the
second waits for the first's commit and finds the key running (SQLite runs one writer).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from .transactions import Queries, Transaction, count_returned, execute, fetchrow, transaction

KEY_TTL_MS = 24 * 3600 * 1000  # a key names one request this long after its first use
# A claim still running after this was left by a request that never finished (its process
# ended): the next request with the key takes it over. Far longer than any write runs:
# its Graph calls time out after 10 s each.
RUNNING_LEASE_MS = 10 * 60 * 1000
MAX_KEY_CHARS = 255
RUNNING, DONE = "running", "done"

CLAIM = (
    "INSERT INTO idempotency_keys (workspace_id, idempotency_key, fingerprint, state, "
    f"created_at) VALUES (?, ?, ?, '{RUNNING}', ?) "
    "ON CONFLICT (workspace_id, idempotency_key) DO NOTHING RETURNING created_at"
)
FOUND = (
    "SELECT fingerprint, state, status_code, body, created_at FROM idempotency_keys "
    "WHERE workspace_id = ? AND idempotency_key = ?"
)
RECLAIM = (
    f"UPDATE idempotency_keys SET fingerprint = ?, state = '{RUNNING}', status_code = NULL, "
    "body = NULL, created_at = ?, finished_at = NULL "
    "WHERE workspace_id = ? AND idempotency_key = ?"
)


class IdempotencyMismatch(Exception):
    """The key was used before with another request (method, path or body)."""


class IdempotencyBusy(Exception):
    """The key's first request is still running."""


@dataclass(frozen=True)
class StoredAnswer:
    """The answer of a key's first request, to send again as it was."""

    status: int
    body: bytes = field(repr=False)


def idempotency_key(value: str) -> str:
    """`value` when it can be an idempotency key (1 to 255 printable ASCII characters);
    ValueError if not."""
    if not 1 <= len(value) <= MAX_KEY_CHARS or not (value.isascii() and value.isprintable()):
        raise ValueError(f"must be 1 to {MAX_KEY_CHARS} printable ASCII characters")
    return value


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes a repeat the same request: SHA-256 of its method, path and body bytes."""
    digest = hashlib.sha256(f"{method.upper()} {path}\n".encode())
    digest.update(body)
    return digest.hexdigest()


class IdempotencyQueries(Queries):
    @transaction
    def begin_idempotent(
        self, workspace_id: str, key: str, fingerprint: str, now_ms: int
    ) -> Transaction[StoredAnswer | None]:
        """None when this request now holds the key (new, older than 24 h, or left running
        by a request that never finished); the first request's answer when it is done.
        IdempotencyMismatch for another request's key; IdempotencyBusy while its first
        request runs (or when the key was freed just now: a retry claims it)."""
        if (yield fetchrow(CLAIM, workspace_id, key, fingerprint, now_ms)):
            return None
        row = yield fetchrow(FOUND + self._db.for_update, workspace_id, key)
        if row is None:
            raise IdempotencyBusy("the key was freed just now: a retry claims it")
        answer = _verdict(row, fingerprint, now_ms)
        if answer is None:
            yield execute(RECLAIM, fingerprint, now_ms, workspace_id, key)
        return answer

    @transaction
    def finish_idempotent(
        self, workspace_id: str, key: str, status: int, body: bytes, now_ms: int
    ) -> Transaction[None]:
        """Store the answer of the request that holds the key."""
        yield execute(
            f"UPDATE idempotency_keys SET state = '{DONE}', status_code = ?, body = ?, "
            f"finished_at = ? WHERE workspace_id = ? AND idempotency_key = ? "
            f"AND state = '{RUNNING}'",
            status,
            body,
            now_ms,
            workspace_id,
            key,
        )

    @transaction
    def abandon_idempotent(self, workspace_id: str, key: str) -> Transaction[None]:
        """Free the key of a request whose answer a retry should redo (a done key stays)."""
        yield execute(
            "DELETE FROM idempotency_keys WHERE workspace_id = ? AND idempotency_key = ? "
            f"AND state = '{RUNNING}'",
            workspace_id,
            key,
        )

    @transaction
    def prune_idempotency_keys(self, before_ms: int, limit: int) -> Transaction[int]:
        """Delete up to `limit` of the keys first used before `before_ms`."""
        return (
            yield from count_returned(
                "DELETE FROM idempotency_keys WHERE (workspace_id, idempotency_key) IN "
                "(SELECT workspace_id, idempotency_key FROM idempotency_keys "
                "WHERE created_at < ? ORDER BY created_at LIMIT ?) RETURNING created_at",
                before_ms,
                limit,
            )
        )


def _verdict(row: dict[str, Any], fingerprint: str, now_ms: int) -> StoredAnswer | None:
    """What a request with `fingerprint` gets of the key's row: None when it may claim it."""
    age_ms = now_ms - row["created_at"]
    if age_ms > KEY_TTL_MS:
        return None
    if row["fingerprint"] != fingerprint:
        raise IdempotencyMismatch("the key was used with another request")
    if row["state"] == DONE:
        return StoredAnswer(row["status_code"], bytes(row["body"]))
    if age_ms > RUNNING_LEASE_MS:
        return None
    raise IdempotencyBusy("the key's first request is still running")
