"""Embedded components never outlive their owner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from freshrank.embedded import ManagedProcess


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); check its state
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    proc = ManagedProcess(
        "sleeper", ["sh", "-c", "sleep 300 & sleep 300"], log_path=tmp_path / "log"
    )
    proc.start()
    time.sleep(0.3)
    children = subprocess.run(
        ["pgrep", "-g", str(proc.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert len(children) >= 2
    proc.stop(grace=2)
    time.sleep(0.2)
    assert not any(_alive(int(pid)) for pid in children)


def test_child_dies_when_owner_is_killed_hard(tmp_path: Path) -> None:
    pid_file, log = tmp_path / "pid", tmp_path / "log"
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, pathlib\n"
            "from freshrank.embedded import ManagedProcess\n"
            f"p = ManagedProcess('s', ['sleep', '300'], log_path=pathlib.Path({str(log)!r}))\n"
            "p.start()\n"
            f"pathlib.Path({str(pid_file)!r}).write_text(str(p.pid))\n"
            "time.sleep(300)\n",
        ]
    )
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(pid_file.read_text())
    assert _alive(child)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(child):
        os.kill(child, signal.SIGKILL)
        pytest.fail("child survived its owner's SIGKILL")
