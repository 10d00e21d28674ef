"""Notifications (design section 11): what an event is sent as, and what a failure leads to.

Pure: the dispatcher (dispatch.py) sends, signs with signing.py and records. An event's id,
`evt_<history_id>`, and its payload are the same on every attempt, so a receiver dedupes
retries by the `webhook-id` header; only the `webhook-timestamp` is the attempt's own.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from .events import EVENT_TYPES
from .storage import TemplateEvent
from .template_json import template_json
from .times import iso

# After the n-th failed attempt the next comes this long later; after the last, none.
RETRY_SCHEDULE_S = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
RETRY_JITTER = 0.1  # a delay is scaled by a random factor in [0.9, 1.1)
GONE = 410  # the receiver says the URL is gone for good: no point in another attempt
FAILING_DISABLES_MS = 5 * 86_400_000  # failures and no success for this long disable
GONE_REASON = "410 Gone from the URL"
FAILING_REASON = "failing for 5 days"
EVENT_GONE = "the event or its template no longer exists"


def event_id(history_id: int) -> str:
    """The event's Standard Webhooks message id: one history row is one event."""
    return f"evt_{history_id}"


def payload(found: TemplateEvent) -> bytes:
    """The event as compact JSON, for a signed webhook and the event stream alike.
    `timestamp` is when the event was received, not when it is sent, so every attempt
    carries the same bytes."""
    row = found.event.row
    previous = found.previous
    document = {
        "type": EVENT_TYPES[row.field],
        "timestamp": iso(row.received_at),
        "data": {
            "workspace_id": found.template.workspace_id,
            "history_id": found.event.id,
            "source": row.source,
            "event": row.event,
            "event_time": iso(row.event_time),
            "reason": row.reason,
            "previous": None if previous is None else asdict(previous),
            "template": template_json(found.template),
        },
    }
    return json.dumps(document, separators=(",", ":")).encode()


def retry_at(
    failures: int, created_at_ms: int, now_ms: int, max_age_ms: int, jitter: float
) -> int | None:
    """When to try an event again whose `failures`-th attempt failed at `now_ms`: the
    schedule's delay, spread by `jitter` in [0, 1); None after the schedule's last retry or
    once the row is older than OUTBOX_MAX_AGE_S (failed for good)."""
    if failures > len(RETRY_SCHEDULE_S) or now_ms - created_at_ms > max_age_ms:
        return None
    delay_s = RETRY_SCHEDULE_S[max(failures, 1) - 1] * (1.0 + RETRY_JITTER * (2.0 * jitter - 1.0))
    return now_ms + round(delay_s * 1000)


def disable_reason(status_code: int | None, failing_since: int | None, now_ms: int) -> str | None:
    """Why a failed attempt disables its subscription, or None: at once on 410 Gone, or when
    it has been failing since 5 days ago with no success."""
    if status_code == GONE:
        return GONE_REASON
    if failing_since is not None and now_ms - failing_since >= FAILING_DISABLES_MS:
        return FAILING_REASON
    return None
