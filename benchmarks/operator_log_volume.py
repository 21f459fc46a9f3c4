"""Idle log volume of the operator on envtest (issue 11 #13): bytes of log per minute at idle.

    PYTHONPATH=services:operator .venv/bin/python benchmarks/operator_log_volume.py 20 60 420

Arguments: N CRs, SETTLE_S, IDLE_S. Starts envtest (the binaries `make envtest` built),
installs the CRD, runs the operator with its CLI's logging setup (one JSON line per record)
and the default 5 s timer, creates N CRs, waits SETTLE_S, then counts what the operator writes
during IDLE_S and extrapolates to a day.
"""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "operator"))

from envtest import cluster_config, credentials, example_cr, install_crd, new_namespace

from freshrank.embedded.kubernetes import EmbeddedKubernetes, KubeAssets
from freshrank_operator.kube import Credentials, KubeClient
from freshrank_operator.logs import setup_operator_logging
from freshrank_operator.testing import operator_thread


class _Counter(io.TextIOBase):
    def __init__(self) -> None:
        self.bytes, self.lines, self.on = 0, 0, False

    def write(self, text: str) -> int:
        if self.on:
            self.bytes += len(text.encode())
            self.lines += text.count("\n")
        return len(text)


def _assets() -> KubeAssets:
    located = subprocess.run(
        ["tests/envtest/build.sh", "--locate"], capture_output=True, text=True, check=True
    )
    return KubeAssets.in_directory(Path(located.stdout.strip()))


async def main(crs: int, settle_s: float, idle_s: float) -> None:
    assets = _assets()
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedKubernetes(Path(tmp), assets) as cluster,
    ):
        install_crd(cluster)
        cluster_credentials = credentials(cluster)

        async def login() -> Credentials:
            return cluster_credentials

        async with KubeClient(login) as kube:
            namespace = await new_namespace(kube)
            counter = _Counter()
            handler = setup_operator_logging("INFO")
            assert isinstance(handler, logging.StreamHandler)
            handler.setStream(counter)
            config = cluster_config(cluster, namespace, tick_seconds=5.0, retry_seconds=30.0)
            async with operator_thread(config):
                for i in range(crs):
                    await kube.create(example_cr(f"cr{i}", namespace))
                await asyncio.sleep(settle_s)
                counter.on, started = True, time.monotonic()
                await asyncio.sleep(idle_s)
                counter.on, elapsed = False, time.monotonic() - started
    per_minute = counter.bytes / elapsed * 60
    print(
        f"{crs} CRs, {elapsed:.0f} s idle after {settle_s:.0f} s: {counter.bytes} bytes, "
        f"{counter.lines} lines = {per_minute:.1f} B/min = {per_minute * 1440 / 2**20:.3f} MiB/day"
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])))
