"""Prometheus metrics, in a registry of the app's own (no global state)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .storage import DeliveryResult

EVENT_RESULTS = ("applied", "stale", "duplicate", "unknown_waba", "created")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "template_sync_webhook_deliveries",
            "Signed webhook deliveries stored, by outcome (processed, quarantined).",
            ["outcome"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "template_sync_webhook_rejected",
            "Webhook requests refused before storing, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.events = Counter(
            "template_sync_template_events",
            "Template changes from webhooks, by result (created counts new templates).",
            ["result"],
            registry=self.registry,
        )
        self.graph_calls = Counter(
            "template_sync_graph_calls",
            "Graph API requests sent, by what asked for them (api, poller, cli, import).",
            ["reason"],
            registry=self.registry,
        )
        self.syncs = Counter(
            "template_sync_syncs",
            "Syncs run, by trigger and outcome (succeeded, partial, failed).",
            ["trigger", "status"],
            registry=self.registry,
        )
        self.due_workspaces = Gauge(
            "template_sync_poll_due_workspaces",
            "Workspaces the last polling pass found due (pending templates without webhooks).",
            registry=self.registry,
        )
        self.polls = Counter(
            "template_sync_polls",
            "Workspaces polled, by outcome (succeeded, partial, failed, no_pending, error).",
            ["outcome"],
            registry=self.registry,
        )
        self.poll_repairs = Counter(
            "template_sync_poll_repairs",
            "Pending templates a poll found decided at Meta: status webhooks Meta did not deliver.",
            registry=self.registry,
        )
        self.pruned = Counter(
            "template_sync_pruned",
            "Rows pruned by retention: raw deliveries and sync runs deleted, dedupe keys cleared.",
            ["kind"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "template_sync_http_request_duration_seconds",
            "HTTP request latency by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )

        # Children by label values, looked up once: `labels()` costs more than the increment.
        self._delivered = {o: self.deliveries.labels(o) for o in ("processed", "quarantined")}
        self._events = {name: self.events.labels(name) for name in EVENT_RESULTS}
        self._latency: dict[tuple[str, str, int], Any] = {}

    def delivery(self, result: DeliveryResult) -> None:
        self._delivered[result.outcome].inc()
        for name, counter in self._events.items():
            count = getattr(result, name)
            if count:
                counter.inc(count)

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        child = self._latency.get(key)
        if child is None:
            child = self._latency[key] = self.request_seconds.labels(method, route, str(status))
        child.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
