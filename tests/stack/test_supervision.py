"""The local stack restarts what crashes, as Kubernetes would, and leaves no zombie."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from freshrank.core.kafka import EventProducer
from freshrank.embedded import ManagedProcess, Supervisor
from freshrank.embedded.process import http_ok, wait_until
from freshrank.sim import SyntheticConfig, SyntheticStream
from freshrank.stack import LocalStack, StackConfig


def _zombie_or_gone(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split()[2]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


def test_crash_looping_process_is_restarted_with_growing_backoff(tmp_path: Path) -> None:
    process = ManagedProcess("crasher", ["sh", "-c", "exit 3"], log_path=tmp_path / "log")
    supervisor = Supervisor(interval=0.02, backoff_s=0.1, max_backoff_s=0.4, stable_s=60)
    process.start()
    supervisor.watch(process)
    supervisor.start()
    try:
        wait_until(lambda: supervisor.restarts.get("crasher", 0) >= 3, timeout=30, interval=0.02)
        started = time.monotonic()
        before = supervisor.restarts["crasher"]
        time.sleep(1.2)
        during = supervisor.restarts["crasher"] - before
    finally:
        supervisor.stop()
        process.stop()
    # Backoff 0.1, 0.2, 0.4, then capped at 0.4 s: about 3 restarts in 1.2 s, never a spin.
    assert 1 <= during <= 4, (during, time.monotonic() - started)


def _wait_for_new_pid(process: ManagedProcess, old_pid: int) -> None:
    wait_until(lambda: process.pid not in (None, old_pid), timeout=60, what="restarted")


@pytest.mark.integration
def test_killed_triton_and_service_come_back_and_serve(tmp_path: Path) -> None:
    config = StackConfig(workdir=tmp_path / "stack", name="sup", services=("ranking",))
    with LocalStack(config) as stack:
        ranking = stack.services["ranking"]
        triton = stack.triton
        for process, probe in (
            (ranking, lambda: http_ok(f"{stack.url('ranking')}/healthz")),
            (triton.process, triton.ready),
        ):
            old_pid = process.pid
            assert old_pid is not None
            os.kill(old_pid, signal.SIGKILL)  # as an OOM kill or `kill -9` would
            _wait_for_new_pid(process, old_pid)
            assert _zombie_or_gone(old_pid) == "gone"  # reaped, not left a zombie
            wait_until(probe, timeout=120, what=f"{process.name} serving again")
        request = urllib.request.Request(
            f"{stack.url('ranking')}/v1/rank",
            data=json.dumps({"user_id": "u1", "k": 3}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
            assert "items" in json.loads(response.read())
        assert stack.supervisor.restarts == {"ranking": 1, "triton": 1}


def _rank(url: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"{url}/v1/rank",
        data=json.dumps({"user_id": "u1", "k": 3}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        reply: dict[str, object] = json.loads(response.read())
    return reply


def _served_version(url: str) -> int:
    """The model version a ranking answer came from (0: a flagged fallback)."""
    try:
        reply = _rank(url)
    except OSError:
        return 0
    return 0 if reply["fallback"] else int(str(reply["model_version"]))


def _trainer_model_version(url: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("freshrank_trainer_model_version "):
                return float(line.split()[1])
    return -1.0


@pytest.mark.integration
def test_after_a_triton_crash_the_model_is_served_again_on_a_quiet_stream(
    tmp_path: Path,
) -> None:
    """kill -9 tritonserver with no new events coming: the supervisor restarts it (empty, in
    explicit mode) and the trainer's watchdog loads the latest good version again."""
    small = {
        "num_users": 256,
        "num_items": 128,
        "dim": 8,
        "history_len": 4,
        "min_events": 0,
        "device": "cpu",
    }
    config = StackConfig(
        workdir=tmp_path / "stack",
        name="quiet",
        services=("trainer", "ranking"),
        architecture="mf",
        export_interval_s=1.0,
        extra_settings=small,
    )
    with LocalStack(config) as stack:
        producer = EventProducer(stack.broker.bootstrap, "quiet.events")
        world = SyntheticConfig(users=100, items=60, events=1500, seed=9)
        for event in SyntheticStream(world).events():
            producer.send(event)
        producer.flush()
        ranking, trainer = stack.url("ranking"), stack.url("trainer")
        wait_until(lambda: _served_version(ranking) > 0, timeout=180, what="a model served")
        # The stream is quiet from here on: no export will come to load anything.
        wait_until(lambda: stack.triton.process.pid is not None, timeout=5)
        version = _served_version(ranking)
        old_pid = stack.triton.process.pid
        assert old_pid is not None
        killed = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        _wait_for_new_pid(stack.triton.process, old_pid)
        restarted = time.monotonic()
        wait_until(
            lambda: _served_version(ranking) >= version,
            timeout=120,
            interval=0.1,
            what="the model served again",
        )
        served = time.monotonic()
        assert _trainer_model_version(trainer) == _served_version(ranking)
    print(
        f"\nTriton kill -9 -> restarted by the supervisor {restarted - killed:.1f} s -> "
        f"version {version} served by ranking {served - killed:.1f} s "
        f"({served - restarted:.1f} s after the restart)"
    )
