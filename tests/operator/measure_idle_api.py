"""Idle API cost of the operator at N CRs on envtest (issue 11, defect 12): a measurement script.

    PYTHONPATH=services:operator .venv/bin/python tests/operator/measure_idle_api.py \
        [--crs 20] [--window 60] [--operator-path DIR]

Starts etcd + kube-apiserver + kube-controller-manager, installs the CRD, runs ``freshrank
operator`` as a subprocess (``--operator-path``: a directory holding the ``freshrank_operator``
package to measure, e.g. an older checkout's ``operator/``; it logs in through $KUBECONFIG),
creates N CRs, waits until every CR is reconciled and the controllers are done creating pods,
then reads ``apiserver_request_total`` over a window with the operator running and over the same
window after it stopped. The difference is the operator's idle cost (the controller manager's
own traffic, e.g. the PV binder's retries on unbound claims, is in both windows).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _assets() -> Any:
    from freshrank.embedded.kubernetes import KubeAssets

    located = subprocess.run(
        [str(REPO / "tests" / "envtest" / "build.sh"), "--locate"],
        capture_output=True,
        text=True,
        check=True,
    )
    return KubeAssets.in_directory(Path(located.stdout.strip()))


def _totals(text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            if sample.name != "apiserver_request_total" or sample.labels.get("verb") == "WATCH":
                continue
            key = f"{sample.labels['verb']} {sample.labels.get('resource', '')}"
            if sample.labels.get("subresource"):
                key += "/" + sample.labels["subresource"]
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


async def _metrics(cluster: Any) -> str:
    # a non-resource path: read with kubectl (the same request in every window)
    text: str = await asyncio.to_thread(cluster.kubectl, "get", "--raw", "/metrics")
    return text


async def _window(cluster: Any, seconds: float) -> dict[str, float]:
    before = _totals(await _metrics(cluster))
    await asyncio.sleep(seconds)
    after = _totals(await _metrics(cluster))
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0)}


async def _settle(cluster: Any, quiet_s: float = 10.0, timeout: float = 300.0) -> None:
    moving = ("POST pods", "PATCH recommenderdeployments/status", "PUT deployments/status")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counted = await _window(cluster, quiet_s)
        if not any(key in counted for key in moving):
            return


async def measure(args: argparse.Namespace) -> None:
    from freshrank.embedded.kubernetes import EmbeddedKubernetes
    from freshrank.embedded.process import free_port
    from freshrank_operator import crd
    from freshrank_operator.kube import Credentials, KubeClient

    with (
        tempfile.TemporaryDirectory() as workdir,
        EmbeddedKubernetes(Path(workdir), _assets()) as cluster,
    ):
        cluster.kubectl("apply", "--server-side", "-f", str(crd.crd_path()))
        for _ in range(30):  # until the CRD has a status to wait on
            if "Established" in cluster.kubectl(
                "get", f"crd/{crd.PLURAL}.{crd.GROUP}", "-o", "yaml"
            ):
                break
            await asyncio.sleep(1)
        cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd.PLURAL}.{crd.GROUP}"
        )
        creds = Credentials(server=cluster.server, token=cluster.token, ca_data=cluster.ca_data())

        async def login() -> Credentials:
            return creds

        async with KubeClient(login) as client:
            namespace = f"idle-{uuid.uuid4().hex[:6]}"
            await client.create(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
            )
            env = {
                **os.environ,
                "KUBECONFIG": str(cluster.kubeconfig),
                "PYTHONPATH": f"{REPO / 'services'}:{args.operator_path}",
            }
            operator = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited)
                [
                    sys.executable,
                    "-m",
                    "freshrank.cli",
                    "operator",
                    "--namespaces",
                    namespace,
                    "--ensure-topics",
                    "false",
                    "--metrics-port",
                    str(free_port()),
                    "--metrics-host",
                    "127.0.0.1",
                    "--log-level",
                    "WARNING",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                for i in range(args.crs):
                    body = {
                        "apiVersion": crd.API_VERSION,
                        "kind": crd.KIND,
                        "metadata": {"name": f"idle-{i}", "namespace": namespace},
                        "spec": {"kafka": {"bootstrapServers": "127.0.0.1:9"}},
                    }
                    await client.create(body)
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    items = await client.list(crd.API_VERSION, crd.KIND, namespace)
                    if all((i.get("status") or {}).get("observedGeneration") for i in items):
                        break
                    await asyncio.sleep(1)
                await _settle(cluster)
                running = await _window(cluster, args.window)
            finally:
                operator.send_signal(signal.SIGTERM)
                await asyncio.to_thread(operator.wait, 60)
            stopped = await _window(cluster, args.window)
    scale = 60.0 / args.window
    keys = sorted(set(running) | set(stopped))
    print(f"idle API requests/min, {args.crs} CRs, operator {args.operator_path}")
    print(f"{'request':45} {'running':>9} {'stopped':>9} {'operator':>9}")
    for key in keys:
        a, b = running.get(key, 0.0) * scale, stopped.get(key, 0.0) * scale
        print(f"{key:45} {a:9.1f} {b:9.1f} {a - b:9.1f}")
    total_a, total_b = sum(running.values()) * scale, sum(stopped.values()) * scale
    print(f"{'total':45} {total_a:9.1f} {total_b:9.1f} {total_a - total_b:9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crs", type=int, default=20)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--operator-path", default=str(REPO / "operator"))
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
