"""The quality gate: an export is skipped (counted, logged), training never stops.

Three rules, checked in order:
1. ``min_events``: no export before the model has trained on that many events.
2. ``floor``: no export while the rolling prequential metric is below an absolute floor.
3. ``max_regression``: no export when the candidate trails the *served* version by more than
   this on the same stream. Both are scored prequentially on the events that arrived since the
   served version was exported, before the candidate trains on them: the candidate by its own
   test-then-train step, the served version by a frozen copy (a sample of each batch). Comparing
   against the served version on today's events, rather than against yesterday's metric, keeps
   the gate open during drift, when every model's metric falls and the fresh one falls least.
"""

from __future__ import annotations

import dataclasses

__all__ = ["GateVerdict", "QualityGate"]


@dataclasses.dataclass(frozen=True)
class GateVerdict:
    ok: bool
    outcome: str  # "ok" or the exports_total outcome label of the refusal
    detail: str = ""


class QualityGate:
    def __init__(
        self,
        metric: str,
        *,
        min_events: int = 0,
        floor: float = 0.0,
        max_regression: float = 1.0,
        min_compared: int = 100,
    ) -> None:
        self.metric = metric
        self.min_events = min_events
        self.floor = floor
        self.max_regression = max_regression
        self.min_compared = min_compared
        self._candidate = _Mean()
        self._served = _Mean()

    @property
    def compares_served(self) -> bool:
        return self.max_regression < 1.0

    def observe(
        self, candidate: float, candidate_events: int, served: float, served_events: int
    ) -> None:
        """Prequential scores since the last export: candidate and served version."""
        self._candidate.add(candidate, candidate_events)
        self._served.add(served, served_events)

    def reset(self) -> None:
        """A new version is being served: compare against it from now on."""
        self._candidate = _Mean()
        self._served = _Mean()

    def verdict(self, events_trained: int, rolling: float) -> GateVerdict:
        if events_trained < self.min_events:
            return GateVerdict(
                False, "skipped_min_events", f"{events_trained} < {self.min_events} events"
            )
        if rolling < self.floor:
            return GateVerdict(
                False, "skipped_quality", f"rolling {self.metric} {rolling:.4f} < {self.floor}"
            )
        if self.compares_served and self._served.events >= self.min_compared:
            candidate, served = self._candidate.value, self._served.value
            if candidate < served - self.max_regression:
                return GateVerdict(
                    False,
                    "skipped_quality",
                    f"{self.metric} {candidate:.4f} trails served {served:.4f} "
                    f"by more than {self.max_regression}",
                )
        return GateVerdict(True, "ok")


class _Mean:
    def __init__(self) -> None:
        self.total = 0.0
        self.events = 0

    def add(self, value: float, events: int) -> None:
        self.total += value * events
        self.events += events

    @property
    def value(self) -> float:
        return self.total / self.events if self.events else 0.0
