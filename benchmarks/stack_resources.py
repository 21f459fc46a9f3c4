"""RSS and disk of every local-stack process before and after a large stream.

    python benchmarks/stack_resources.py --users 200000 --events 400000

Starts the local stack (broker, Triton, feature, trainer, ranking: ``freshrank stack``'s code),
samples each component's resident memory (its whole process group: Triton's Python-backend stubs
count) and the disk of its state, replays ``freshrank simulate --users N`` into it, waits until
the trainer and the feature service have consumed every event (their own counters, not a
guess of time), and samples again. Prints a table and writes JSON beside the other results.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from freshrank.bench.report import results_dir
from freshrank.core.contracts import metrics, routes
from freshrank.stack import LocalStack, StackConfig

PAGE = os.sysconf("SC_PAGE_SIZE")


def group_rss_mib(pgid: int) -> float:
    """Resident memory of every process in group ``pgid`` (our components lead their group)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5 of stat: the process group
                total += int((entry / "statm").read_text().split()[1]) * PAGE
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total / 2**20


def disk_mib(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}{routes.METRICS}", timeout=5) as response:
        text = response.read().decode()
    values = re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.MULTILINE)
    return sum(float(v) for v in values)


def sample(stack: LocalStack) -> dict[str, Any]:
    processes = {"broker": stack.broker.process, "triton": stack.triton.process}
    processes.update(stack.services)
    rss = {name: round(group_rss_mib(p.pid), 1) for name, p in processes.items() if p.pid}
    work = stack.workdir
    disk = {
        name: round(disk_mib(work / name), 2)
        for name in ("models", "checkpoints", "features.db", "logs")
        if (work / name).exists()
    }
    return {"rss_mib": rss, "disk_mib": disk}


def wait_consumed(stack: LocalStack, events: int, stall_s: float) -> dict[str, float]:
    """Until both consumers have seen every event; fails only when progress stops."""
    counters = {
        "trainer": (metrics.TRAINER_EVENTS_TRAINED, "trainer"),
        "feature": (metrics.FEATURE_EVENTS_APPLIED, "feature"),
    }
    last, last_change = {}, time.monotonic()
    while True:
        now = {role: metric(stack.url(service), name) for role, (name, service) in counters.items()}
        if now != last:
            last, last_change = now, time.monotonic()
        if all(v >= events for v in now.values()):
            return now
        if time.monotonic() - last_change > stall_s:
            raise TimeoutError(f"no progress for {stall_s:.0f} s: {now} of {events}")
        time.sleep(2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--architecture", default="sasrec")
    parser.add_argument("--stall-seconds", type=float, default=120.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="freshrank-resources-") as tmp:
        config = StackConfig(workdir=Path(tmp), name="soak", architecture=args.architecture)
        with LocalStack(config) as stack:
            time.sleep(5)  # settle: services finish their start-up imports
            before = sample(stack)
            started = time.monotonic()
            simulate = ["simulate", "--name", "soak", "--bootstrap-servers", stack.broker.bootstrap]
            sizes = ["--users", str(args.users), "--items", str(args.items)]
            sizes += ["--events", str(args.events)]
            subprocess.run([sys.executable, "-m", "freshrank.cli", *simulate, *sizes], check=True)
            consumed = wait_consumed(stack, args.events, args.stall_seconds)
            after = sample(stack)
            elapsed = time.monotonic() - started
    result = {"args": vars(args), "before": before, "after": after, "consumed": consumed}
    result["seconds"] = round(elapsed, 1)
    print(f"{'part':<12}{'RSS before':>12}{'RSS after':>12}   (MiB)")
    for name, rss in after["rss_mib"].items():
        print(f"{name:<12}{before['rss_mib'].get(name, 0):>12}{rss:>12}")
    print(f"{'disk':<12}{'before':>12}{'after':>12}   (MiB)")
    for name, size in after["disk_mib"].items():
        print(f"{name:<12}{before['disk_mib'].get(name, 0):>12}{size:>12}")
    print(f"{args.events} events from {args.users} users consumed in {elapsed:.0f} s: {consumed}")
    out = results_dir() / "stack-resources.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
