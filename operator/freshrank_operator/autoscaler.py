"""The latency autoscaler's control law: p95 samples in, a bounded replica count out.

Pure (no Kopf, no I/O, time passed in), so it is tested against recorded latency series.
The law follows the HorizontalPodAutoscaler's, on latency:

* proposal = ceil(current * p95 / target), unless p95 lies within the tolerance band;
* scale-up takes the *lowest* proposal seen in the (short) up window, scale-down the *highest*
  seen in the (long) down window: fast up, slow down, and a single dip or spike never flaps;
* one step grows by at most ``maxScaleUpFactor`` (and at least one pod) and shrinks by at most
  ``maxScaleDownStep`` pods;
* the result always lies within ``[minReplicas, maxReplicas]``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from freshrank_operator.spec import Autoscaling

__all__ = ["Autoscaler", "Decision", "Policy"]


@dataclass(frozen=True)
class Policy:
    target_p95_ms: float
    min_replicas: int
    max_replicas: int
    tolerance: float = 0.1
    max_scale_up_factor: float = 2.0
    max_scale_down_step: int = 1
    scale_up_stabilization_s: float = 0.0
    scale_down_stabilization_s: float = 300.0
    period_s: float = 15.0

    @classmethod
    def from_spec(cls, autoscaling: Autoscaling) -> Policy:
        """From the CR's (parsed, defaulted) ``spec.autoscaling``."""
        return cls(
            target_p95_ms=float(autoscaling.target_p95_ms),
            min_replicas=autoscaling.min_replicas,
            max_replicas=autoscaling.max_replicas,
            tolerance=float(autoscaling.tolerance),
            max_scale_up_factor=float(autoscaling.max_scale_up_factor),
            max_scale_down_step=autoscaling.max_scale_down_step,
            scale_up_stabilization_s=float(autoscaling.scale_up_stabilization_seconds),
            scale_down_stabilization_s=float(autoscaling.scale_down_stabilization_seconds),
            period_s=float(autoscaling.period_seconds),
        )

    def clamp(self, replicas: int) -> int:
        return min(max(replicas, self.min_replicas), self.max_replicas)


@dataclass(frozen=True)
class Decision:
    current: int
    replicas: int
    p95_ms: float | None
    proposal: int
    reason: str

    @property
    def changed(self) -> bool:
        return self.replicas != self.current

    @property
    def direction(self) -> str:
        if self.replicas > self.current:
            return "up"
        return "down" if self.replicas < self.current else "hold"


class Autoscaler:
    """Keeps the recent proposals (the stabilization windows) for one deployment."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._proposals: deque[tuple[float, int]] = deque()

    def reconfigure(self, policy: Policy) -> None:
        self.policy = policy

    def _propose(self, current: int, p95_ms: float | None) -> tuple[int, str]:
        target = self.policy.target_p95_ms
        if p95_ms is None:
            return current, "no latency samples in the window: hold"
        ratio = p95_ms / target
        if abs(ratio - 1.0) <= self.policy.tolerance:
            return current, f"p95 {p95_ms:.1f}ms within {self.policy.tolerance:.0%} of {target:g}ms"
        proposal = max(1, math.ceil(current * ratio)) if current > 0 else 1
        relation = ">" if ratio > 1 else "<"
        return proposal, f"p95 {p95_ms:.1f}ms {relation} target {target:g}ms"

    def _remember(self, now: float, proposal: int) -> None:
        self._proposals.append((now, proposal))
        horizon = max(self.policy.scale_up_stabilization_s, self.policy.scale_down_stabilization_s)
        while self._proposals and self._proposals[0][0] < now - horizon:
            self._proposals.popleft()

    def _window(self, now: float, seconds: float) -> list[int]:
        return [p for t, p in self._proposals if t >= now - seconds]

    def decide(self, current: int, p95_ms: float | None, now: float) -> Decision:
        policy = self.policy
        raw, reason = self._propose(current, p95_ms)
        proposal = policy.clamp(raw)
        self._remember(now, proposal)
        # Up: the lowest proposal of the up window; down: the highest of the down window.
        up_floor = min(self._window(now, policy.scale_up_stabilization_s))
        down_ceiling = max(self._window(now, policy.scale_down_stabilization_s))
        desired = current
        if desired < up_floor:
            desired = up_floor
        if desired > down_ceiling:
            desired = down_ceiling
        if proposal < current <= desired:
            reason += f"; scale-down held by the {policy.scale_down_stabilization_s:g}s window"
        # Rate limits per step.
        up_limit = max(current + 1, math.ceil(current * policy.max_scale_up_factor))
        down_limit = current - policy.max_scale_down_step
        bounded = min(max(desired, down_limit), up_limit)
        if bounded != desired:
            reason += f"; step limited to {bounded}"
        final = policy.clamp(bounded)
        if final != bounded:
            reason += f"; bounded to [{policy.min_replicas}, {policy.max_replicas}]"
        return Decision(
            current=current, replicas=final, p95_ms=p95_ms, proposal=proposal, reason=reason
        )
