"""The control law against recorded latency series: fast up, held down, no flapping, bounded."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from freshrank_operator.autoscaler import Autoscaler, Decision, Policy

PERIOD = 15.0
POLICY = Policy(
    target_p95_ms=50.0,
    min_replicas=2,
    max_replicas=12,
    tolerance=0.1,
    max_scale_up_factor=2.0,
    max_scale_down_step=1,
    scale_up_stabilization_s=0.0,
    scale_down_stabilization_s=300.0,
    period_s=PERIOD,
)


def replay(series: Sequence[float | None], start: int, policy: Policy = POLICY) -> list[Decision]:
    """Feed one p95 sample per period; the deployment follows each decision."""
    scaler = Autoscaler(policy)
    replicas, decisions = start, []
    for step, p95 in enumerate(series):
        decision = scaler.decide(replicas, p95, now=step * PERIOD)
        decisions.append(decision)
        replicas = decision.replicas
    return decisions


# A recorded day-in-the-life: steady, a traffic spike (p95 breach), recovery, noise, a dip.
STEADY = [48.0, 52.0, 47.0, 53.0, 49.0, 51.0]
SPIKE = [160.0, 95.0, 60.0, 52.0, 49.0]
NOISY = [46.0, 54.0, 47.0, 53.5, 45.5, 54.5, 48.0, 52.0] * 3  # +-9%: inside the band
QUIET = [12.0] * 40


def test_steady_latency_inside_the_band_never_scales() -> None:
    decisions = replay(STEADY * 5, start=4)
    assert {d.replicas for d in decisions} == {4}


def test_a_breach_scales_up_within_one_period() -> None:
    decisions = replay([50.0, 160.0], start=3)
    assert decisions[1].replicas > 3, decisions[1]
    assert decisions[1].direction == "up"
    assert "160.0ms > target 50ms" in decisions[1].reason


def test_scale_up_is_bounded_per_step_and_by_max() -> None:
    decisions = replay([1000.0] * 5, start=2)
    replicas = [d.replicas for d in decisions]
    assert replicas == [4, 8, 12, 12, 12]  # x2 per step, then maxReplicas
    assert "step limited" in decisions[0].reason


def test_scale_down_waits_for_the_stabilization_window_then_steps_slowly() -> None:
    decisions = replay([200.0, *QUIET], start=2)
    replicas = [d.replicas for d in decisions]
    assert replicas[0] == 4
    window_periods = int(POLICY.scale_down_stabilization_s / PERIOD)
    # Held for the whole window after the spike...
    assert set(replicas[1 : window_periods + 1]) == {4}, replicas
    # ...then one pod per period down to minReplicas, never below.
    tail = replicas[window_periods + 1 :]
    assert tail[:2] == [3, 2]
    assert min(tail) == POLICY.min_replicas
    assert all(a - b <= POLICY.max_scale_down_step for a, b in itertools.pairwise(replicas))


def test_spike_then_recovery_goes_up_fast_and_does_not_flap() -> None:
    decisions = replay(STEADY + SPIKE + NOISY, start=3)
    replicas = [d.replicas for d in decisions]
    directions = [d.direction for d in decisions if d.direction != "hold"]
    assert replicas[len(STEADY)] > 3  # the first spike sample scales up at once
    # Never an up right after a down or a down right after an up within the window.
    flips = sum(1 for a, b in itertools.pairwise(directions) if a != b)
    assert flips <= 1, directions


@pytest.mark.parametrize("start", [0, 1, 30])
def test_out_of_bounds_replicas_are_brought_into_bounds(start: int) -> None:
    decision = replay([50.0], start=start)[0]
    assert POLICY.min_replicas <= decision.replicas <= POLICY.max_replicas


def test_no_samples_holds() -> None:
    decisions = replay([None, None, None], start=5)
    assert [d.replicas for d in decisions] == [5, 5, 5]
    assert "no latency samples" in decisions[0].reason


def test_noise_inside_the_band_never_scales() -> None:
    assert not [d for d in replay(NOISY, start=4) if d.changed]


def test_a_single_outlier_scales_up_once_and_is_not_undone_within_the_window() -> None:
    series = [*NOISY[:4], 75.0, *NOISY, *NOISY[:2]]
    decisions = replay(series, start=4)
    changes = [(i, d.direction) for i, d in enumerate(decisions) if d.changed]
    assert changes == [(4, "up")], changes


def closed_loop(load: Sequence[float], start: int) -> list[int]:
    """Latency that responds to replicas: p95 = 20ms + 10ms per unit of load per replica."""
    scaler, replicas, history = Autoscaler(POLICY), start, []
    for step, demand in enumerate(load):
        p95 = 20.0 + 10.0 * demand / replicas
        replicas = scaler.decide(replicas, p95, now=step * PERIOD).replicas
        history.append(replicas)
    return history


def test_closed_loop_load_spike_converges_without_oscillation() -> None:
    load = [6.0] * 10 + [30.0] * 30 + [6.0] * 60  # recorded requests/s profile, x5 spike
    history = closed_loop(load, start=2)
    spike = history[10:40]
    assert spike[0] > history[9]  # up on the first period of the spike
    assert max(spike) <= POLICY.max_replicas
    settled = spike[-10:]
    assert len(set(settled)) == 1  # converged during the spike
    moves = [b - a for a, b in itertools.pairwise(history) if b != a]
    signs = [m > 0 for m in moves]
    assert sum(1 for a, b in itertools.pairwise(signs) if a != b) == 1  # up phase, then down phase
    assert history[-1] < max(history)  # and it did come back down after the window


def test_from_spec_reads_the_crd_fields() -> None:
    from freshrank_operator.spec import parse_spec

    spec = parse_spec({"kafka": {"bootstrapServers": "x"}}).autoscaling
    policy = Policy.from_spec(spec)
    assert policy.target_p95_ms == 50
    assert policy.scale_down_stabilization_s == 300
    assert (policy.min_replicas, policy.max_replicas) == (1, 10)
