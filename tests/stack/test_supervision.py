"""The local stack restarts what crashes, as Kubernetes would, and leaves no zombie."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from freshrank.embedded import ManagedProcess, Supervisor
from freshrank.embedded.process import http_ok, wait_until
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
