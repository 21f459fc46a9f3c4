"""Reading the services: latency histograms (pods' /metrics or Prometheus) and trainer gauges.

Pure parsing and arithmetic live here; fetching is a thin layer the handlers call. The p95 is
computed like PromQL's ``histogram_quantile(0.95, rate(..._bucket[window]))``: per-pod bucket
deltas over the window (a counter that went down means the pod restarted: its current counts
are the delta), summed over pods, then linear interpolation inside the bucket.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from freshrank.core.contracts.metrics import (
    REQUEST_LATENCY,
    TRAINER_GAUGES,
    TRAINER_LAST_EVENT_GAUGE,
    TRAINER_LAST_EXPORT_GAUGE,
    TRAINER_MODEL_VERSION_GAUGE,
)
from freshrank.core.contracts.routes import RANK

__all__ = [
    "Buckets",
    "LatencyWindow",
    "TrainerReport",
    "gauges",
    "parse_latency_buckets",
    "quantile",
]

Buckets = dict[float, float]  # upper bound (le) -> cumulative count


def parse_latency_buckets(text: str, route: str = RANK) -> Buckets:
    """Cumulative bucket counts of the request-latency histogram for ``route`` (all methods)."""
    buckets: Buckets = {}
    for family in text_string_to_metric_families(text):
        if family.name != REQUEST_LATENCY:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_bucket") or sample.labels.get("route") != route:
                continue
            bound = float(sample.labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def gauges(text: str, names: Iterable[str]) -> dict[str, float]:
    wanted = set(names)
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                found[sample.name] = sample.value
    return found


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """``histogram_quantile`` over cumulative buckets; None when there are no observations."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return previous_bound  # as Prometheus: the highest finite bound
            in_bucket = count - previous_count
            if in_bucket <= 0:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / in_bucket
        previous_bound, previous_count = bound, count
    return previous_bound


def _delta(new: Mapping[float, float], old: Mapping[float, float] | None) -> Buckets:
    if old is None:
        return dict(new)
    if any(new.get(b, 0.0) < c for b, c in old.items()):  # counter reset: pod restarted
        return dict(new)
    return {b: c - old.get(b, 0.0) for b, c in new.items()}


@dataclass(frozen=True)
class _Snapshot:
    at: float
    pods: dict[str, Buckets]


class LatencyWindow:
    """Scrape snapshots over time -> the p95 of the requests inside the trailing window."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._snapshots: deque[_Snapshot] = deque()

    def add(self, at: float, pods: Mapping[str, Buckets]) -> None:
        self._snapshots.append(_Snapshot(at, {k: dict(v) for k, v in pods.items()}))
        # Keep one snapshot at or before the window's start as the baseline.
        while len(self._snapshots) > 2 and self._snapshots[1].at <= at - self.window_s:
            self._snapshots.popleft()

    def p95_ms(self) -> float | None:
        if len(self._snapshots) < 2:
            return None  # cumulative counts since pod start say nothing about the window yet
        latest, baseline = self._snapshots[-1], self._snapshots[0]
        total: Buckets = {}
        for pod, buckets in latest.pods.items():
            old = baseline.pods.get(pod)  # a pod new in the window: all its requests count
            for bound, count in _delta(buckets, old).items():
                total[bound] = total.get(bound, 0.0) + count
        value = quantile(0.95, total)
        return None if value is None else value * 1000.0


@dataclass(frozen=True)
class TrainerReport:
    model_version: int | None
    last_export_time: float | None
    last_event_time: float | None

    @classmethod
    def from_metrics(cls, text: str) -> TrainerReport:
        values = gauges(text, TRAINER_GAUGES)
        version = values.get(TRAINER_MODEL_VERSION_GAUGE)
        return cls(
            # 0 is a report: Triton serves no version (restarting, unloaded). Only a missing
            # gauge (trainer not scraped) leaves the status as it was.
            model_version=None if version is None else int(version),
            last_export_time=values.get(TRAINER_LAST_EXPORT_GAUGE) or None,
            last_event_time=values.get(TRAINER_LAST_EVENT_GAUGE) or None,
        )

    def freshness_s(self, now: float) -> float | None:
        if self.last_event_time is None:
            return None
        return max(0.0, now - self.last_event_time)
