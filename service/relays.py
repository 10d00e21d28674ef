"""Relays (design section 10): what a delivery is passed on with, and when a failed one is
tried again. Pure: the dispatcher (dispatch.py) sends and records."""

from __future__ import annotations

from .storage import OutboxItem

FIRST_RETRY_S = 5.0
MAX_RETRY_S = 3600.0
RETRY_JITTER = 0.2  # a capped delay is scaled by a random factor in [0.8, 1.2), capped again


def retry_at(
    failures: int, created_at_ms: int, now_ms: int, max_age_ms: int, jitter: float
) -> int | None:
    """When to try a row again whose `failures`-th attempt failed at `now_ms`: about 5 s
    after the first failure, doubling, at most an hour apart; None once the row is older than
    `max_age_ms` (failed for good). `jitter`, in [0, 1), spreads the retries of a burst."""
    if now_ms - created_at_ms > max_age_ms:
        return None
    delay_s = min(FIRST_RETRY_S * 2.0 ** min(max(failures - 1, 0), 32), MAX_RETRY_S)
    delay_s *= 1.0 + RETRY_JITTER * (2.0 * jitter - 1.0)
    return now_ms + round(min(delay_s, MAX_RETRY_S) * 1000)


def headers(item: OutboxItem) -> dict[str, str]:
    """A relay's headers: Meta's signature as it came, and the delivery id to dedupe by."""
    headers = {
        "Content-Type": "application/json",
        "X-Template-Sync-Delivery": str(item.item_id),
        "X-Template-Sync-Attempt": str(item.attempts + 1),
    }
    if item.signature is not None:
        headers["X-Hub-Signature-256"] = item.signature
    return headers
