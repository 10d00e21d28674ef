"""The Prometheus metrics: every labelled counter's series exist, at 0, from the start."""

from __future__ import annotations

import dataclasses
import itertools

from prometheus_client.parser import text_string_to_metric_families

from service.metrics import EVENT_RESULTS, PRUNED_KINDS, Metrics
from service.retention import Pruned
from service.storage import DeliveryResult

from .conftest import Server

# What the README's "Operations" section promises, label by label.
COUNTERS: dict[str, dict[str, tuple[str, ...]]] = {
    "template_sync_webhook_deliveries": {"outcome": ("processed", "quarantined", "replayed")},
    "template_sync_webhook_rejected": {
        "reason": ("signature", "not_configured", "store_unavailable")
    },
    "template_sync_template_events": {
        "result": ("applied", "stale", "duplicate", "unknown_waba", "created")
    },
    "template_sync_graph_calls": {"reason": ("api", "cli", "import", "poller")},
    "template_sync_upstream_calls": {"reason": ("api", "cli", "import", "poller")},
    "template_sync_syncs": {
        "trigger": ("api", "cli", "poller"),
        "status": ("succeeded", "partial", "failed"),
    },
    "template_sync_polls": {"outcome": ("succeeded", "partial", "failed", "no_pending", "error")},
    "template_sync_pruned": {
        "kind": ("deliveries", "dedupe_keys", "sync_runs", "outbox_rows", "idempotency_keys")
    },
    "template_sync_outbox_attempts": {
        "kind": ("relay", "notification"),
        "result": ("sent", "retry", "failed"),
    },
}


def totals(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Each counter's `_total` samples, by their sorted labels."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                series = found.setdefault(sample.name.removesuffix("_total"), {})
                series[tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def test_a_fresh_app_shows_every_counter_series_at_zero(server: Server) -> None:
    status, text, _ = await server.request("GET", "/metrics")
    assert status == 200
    found = totals(text)
    for name, labels in COUNTERS.items():
        expected = {
            tuple(sorted(zip(labels, values, strict=True))): 0.0
            for values in itertools.product(*labels.values())
        }
        assert found.get(name) == expected, name
    assert found["template_sync_poll_repairs"] == {(): 0.0}


def test_label_values_match_what_counts_them() -> None:
    assert tuple(f.name for f in dataclasses.fields(Pruned)) == PRUNED_KINDS
    assert set(EVENT_RESULTS) <= {f.name for f in dataclasses.fields(DeliveryResult)}


def test_counting_adds_no_series() -> None:
    metrics = Metrics()
    before = totals(metrics.render().decode())
    metrics.delivery(DeliveryResult(1, "quarantined", applied=2, created=1))
    metrics.rejected.labels("signature").inc()
    after = totals(metrics.render().decode())
    assert {name: set(series) for name, series in after.items()} == {
        name: set(series) for name, series in before.items()
    }
    assert after["template_sync_template_events"][(("result", "applied"),)] == 2
