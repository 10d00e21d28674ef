"""Prometheus metrics, in a registry of the app's own (no global state).

Each labelled counter is declared with every value of its labels, and each of its series
starts at 0: an alert on `increase(...)` then sees the first event after a restart, which
a series born with that event would hide.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .storage import DeliveryResult, OutboxDepth

# The label values of each counter, in one place: a series exists for each from the start.
DELIVERY_OUTCOMES = ("processed", "quarantined", "replayed")
REJECTION_REASONS = ("signature", "not_configured", "store_unavailable")
EVENT_RESULTS = ("applied", "stale", "duplicate", "unknown_waba", "created")
GRAPH_CALL_REASONS = ("api", "cli", "import", "poller")
SYNC_TRIGGERS = ("api", "cli", "poller")
SYNC_STATUSES = ("succeeded", "partial", "failed")
POLL_OUTCOMES = ("succeeded", "partial", "failed", "no_pending", "error")
PRUNED_KINDS = ("deliveries", "dedupe_keys", "sync_runs", "outbox_rows", "idempotency_keys")
OUTBOX_KINDS = ("relay", "notification")
OUTBOX_RESULTS = ("sent", "retry", "failed")
OUTBOX_STATES = ("queued", "failed")


def labelled_counter(
    registry: CollectorRegistry, name: str, documentation: str, **labels: Sequence[str]
) -> Counter:
    """A counter with a series at 0 for every combination of the given label values."""
    counter = Counter(name, documentation, list(labels), registry=registry)
    for values in itertools.product(*labels.values()):
        counter.labels(*values)
    return counter


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.deliveries = labelled_counter(
            registry,
            "template_sync_webhook_deliveries",
            "Signed webhook deliveries acknowledged, by outcome (processed, quarantined; "
            "replayed: the same body was stored already).",
            outcome=DELIVERY_OUTCOMES,
        )
        self.rejected = labelled_counter(
            registry,
            "template_sync_webhook_rejected",
            "Webhook requests refused before storing, by reason.",
            reason=REJECTION_REASONS,
        )
        self.events = labelled_counter(
            registry,
            "template_sync_template_events",
            "Template changes from webhooks, by result (created counts new templates).",
            result=EVENT_RESULTS,
        )
        self.graph_calls = labelled_counter(
            registry,
            "template_sync_graph_calls",
            "Graph API requests sent, by what asked for them (api, poller, cli, import).",
            reason=GRAPH_CALL_REASONS,
        )
        self.upstream_calls = labelled_counter(
            registry,
            "template_sync_upstream_calls",
            "Requests sent to workspaces' upstreams (design section 14), by what asked for them.",
            reason=GRAPH_CALL_REASONS,
        )
        self.syncs = labelled_counter(
            registry,
            "template_sync_syncs",
            "Syncs run, by trigger and outcome (succeeded, partial, failed).",
            trigger=SYNC_TRIGGERS,
            status=SYNC_STATUSES,
        )
        self.due_workspaces = Gauge(
            "template_sync_poll_due_workspaces",
            "Workspaces the last polling pass found due (pending templates without webhooks).",
            registry=registry,
        )
        self.polls = labelled_counter(
            registry,
            "template_sync_polls",
            "Workspaces polled, by outcome (succeeded, partial, failed, no_pending, error).",
            outcome=POLL_OUTCOMES,
        )
        self.poll_repairs = Counter(
            "template_sync_poll_repairs",
            "Pending templates a poll found decided at Meta: status webhooks Meta did not deliver.",
            registry=registry,
        )
        self.outbox_attempts = labelled_counter(
            registry,
            "template_sync_outbox_attempts",
            "Outbound deliveries attempted, by kind (relay, notification) and result (sent; "
            "retry: failed, tried again later; failed: failed for good, past its retries or "
            "OUTBOX_MAX_AGE_S).",
            kind=OUTBOX_KINDS,
            result=OUTBOX_RESULTS,
        )
        self.outbox_rows = Gauge(
            "template_sync_outbox_rows",
            "Outbox rows by kind and state (queued: to send or retry; failed: for good), as the "
            "dispatcher last read them (every few seconds; the same table in every replica).",
            ["kind", "state"],
            registry=registry,
        )
        self.outbox_oldest_age = Gauge(
            "template_sync_outbox_oldest_age_seconds",
            "Age of the oldest queued outbox row by kind (0 when none is queued).",
            ["kind"],
            registry=registry,
        )
        self.outbox_delivered_seconds = Histogram(
            "template_sync_outbox_delivered_seconds",
            "From the commit of what a row reports (a delivery, a template change) to its "
            "receiver's 2xx, by kind.",
            ["kind"],
            registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0, 3600.0),
        )
        for kind in OUTBOX_KINDS:
            self.outbox_oldest_age.labels(kind)
            self.outbox_delivered_seconds.labels(kind)
            for state in OUTBOX_STATES:
                self.outbox_rows.labels(kind, state)
        self.event_followers = Gauge(
            "template_sync_event_followers",
            "Event streams and GETs waiting for a verdict open in this process.",
            registry=registry,
        )
        self.pruned = labelled_counter(
            registry,
            "template_sync_pruned",
            "Rows pruned by retention: raw deliveries, sync runs, failed outbox rows and "
            "idempotency keys deleted, dedupe keys cleared.",
            kind=PRUNED_KINDS,
        )
        self.last_prune = Gauge(
            "template_sync_last_prune_timestamp_seconds",
            "When retention last finished a pass (unix seconds); 0 before the first.",
            registry=registry,
        )
        self.request_seconds = Histogram(
            "template_sync_http_request_duration_seconds",
            "HTTP request latency by route and status.",
            ["method", "route", "status"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )

        # Children by label values, looked up once: `labels()` costs more than the increment.
        self._delivered = {o: self.deliveries.labels(o) for o in DELIVERY_OUTCOMES}
        self._events = {name: self.events.labels(name) for name in EVENT_RESULTS}
        self._latency: dict[tuple[str, str, int], Any] = {}

    def delivery(self, result: DeliveryResult) -> None:
        self._delivered[result.outcome].inc()
        for name, counter in self._events.items():
            count = getattr(result, name)
            if count:
                counter.inc(count)

    def outbox_depth(self, depths: Sequence[OutboxDepth], now_ms: int) -> None:
        """Set the outbox gauges from a read of the table (kinds and states not in it: 0)."""
        found = {(d.kind, d.state): d for d in depths}
        for kind in OUTBOX_KINDS:
            for state in OUTBOX_STATES:
                depth = found.get((kind, state))
                self.outbox_rows.labels(kind, state).set(depth.rows if depth else 0)
            queued = found.get((kind, "queued"))
            age_s = max(0, now_ms - queued.oldest_at) / 1000 if queued else 0
            self.outbox_oldest_age.labels(kind).set(age_s)

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        child = self._latency.get(key)
        if child is None:
            child = self._latency[key] = self.request_seconds.labels(method, route, str(status))
        child.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
