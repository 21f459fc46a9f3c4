"""Families declared through MetricFamilies land on their registry with their labels and buckets."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from freshrank.core.metric_families import MetricFamilies


def test_each_kind_lands_on_its_own_registry_with_labels_and_buckets() -> None:
    registry, other = CollectorRegistry(), CollectorRegistry()
    family = MetricFamilies(registry)
    family.counter("t_requests", "requests", "outcome").labels(outcome="ok").inc(2)
    family.gauge("t_version", "version").set(7)
    family.histogram("t_seconds", "time", "route", buckets=(0.1, 1.0)).labels(route="/r").observe(
        0.5
    )
    text = generate_latest(registry).decode()
    assert 't_requests_total{outcome="ok"} 2.0' in text
    assert "t_version 7.0" in text
    assert 't_seconds_bucket{le="0.1",route="/r"} 0.0' in text
    assert 't_seconds_bucket{le="1.0",route="/r"} 1.0' in text
    assert generate_latest(other).decode() == ""
    # The same name on a second registry is no clash: each service owns its registry.
    MetricFamilies(other).gauge("t_version", "version").set(1)
    assert "t_version 1.0" in generate_latest(other).decode()
