"""p95 from pods' cumulative histograms over a window, as PromQL's histogram_quantile does."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from freshrank.core.http import request_latency_histogram
from freshrank_operator.observe import (
    LatencyWindow,
    TrainerReport,
    parse_latency_buckets,
    quantile,
)


def _metrics(latencies_s: list[float], route: str = "/v1/rank") -> str:
    registry = CollectorRegistry()
    histogram = request_latency_histogram(registry)  # what every service exports
    for value in latencies_s:
        histogram.labels(route=route, method="POST", status="200").observe(value)
    histogram.labels(route="/healthz", method="GET", status="200").observe(4.0)
    return generate_latest(registry).decode()


def test_parse_keeps_only_the_ranking_route() -> None:
    buckets = parse_latency_buckets(_metrics([0.004] * 10))
    assert buckets[float("inf")] == 10
    assert buckets[0.005] == 10
    assert buckets[0.0025] == 0


def test_quantile_interpolates_inside_the_bucket() -> None:
    buckets = {0.01: 0.0, 0.02: 100.0, float("inf"): 100.0}
    assert quantile(0.95, buckets) == pytest.approx(0.0195)
    assert quantile(0.95, {float("inf"): 0.0}) is None


def test_one_scrape_is_no_window_yet() -> None:
    window = LatencyWindow(window_s=60)
    window.add(0.0, {"a": parse_latency_buckets(_metrics([0.2] * 10))})
    assert window.p95_ms() is None


def test_no_new_requests_means_no_samples() -> None:
    window = LatencyWindow(window_s=60)
    for at in (0.0, 15.0, 30.0):
        window.add(at, {"a": parse_latency_buckets(_metrics([0.2] * 10))})
    assert window.p95_ms() is None


def test_window_uses_only_requests_inside_it() -> None:
    window = LatencyWindow(window_s=60)
    slow, fast = [0.2] * 100, [0.004] * 100
    window.add(0.0, {"pod-a": parse_latency_buckets(_metrics(slow))})
    window.add(70.0, {"pod-a": parse_latency_buckets(_metrics(slow + fast))})
    window.add(140.0, {"pod-a": parse_latency_buckets(_metrics(slow + fast + fast))})
    p95 = window.p95_ms()
    assert p95 is not None
    assert p95 < 10.0


def test_window_sums_pods_and_survives_a_restart() -> None:
    window = LatencyWindow(window_s=60)
    window.add(0.0, {"a": parse_latency_buckets(_metrics([0.004] * 50))})
    # pod "a" restarted (counters reset) and pod "b" appeared; both slow now.
    window.add(
        30.0,
        {
            "a": parse_latency_buckets(_metrics([0.3] * 20)),
            "b": parse_latency_buckets(_metrics([0.3] * 20)),
        },
    )
    p95 = window.p95_ms()
    assert p95 is not None
    assert 250.0 <= p95 <= 500.0


def test_trainer_report_and_freshness() -> None:
    text = (
        "# TYPE freshrank_trainer_model_version gauge\nfreshrank_trainer_model_version 7\n"
        "# TYPE freshrank_trainer_last_exported_event_timestamp_seconds gauge\n"
        "freshrank_trainer_last_exported_event_timestamp_seconds 1000\n"
    )
    report = TrainerReport.from_metrics(text)
    assert report.model_version == 7
    assert report.freshness_s(1042.5) == pytest.approx(42.5)
    assert TrainerReport.from_metrics("").model_version is None  # not scraped: unknown
    # Triton serves nothing (restarting, unloaded): the status says 0, not the last version.
    serves_none = (
        "# TYPE freshrank_trainer_model_version gauge\nfreshrank_trainer_model_version 0\n"
    )
    assert TrainerReport.from_metrics(serves_none).model_version == 0
