"""Operator benchmark against kmock's KubernetesEmulator (an in-memory API server over HTTP).

Ours: the real Kopf operator (own thread and loop) reconciling RecommenderDeployments.
Peer: the floor for the same work on the same emulator, i.e. rendering and server-side
applying the same children straight from a client, with no Kopf, no watch and no status.
Measured: time from CR create to every child present (one CR at a time), throughput with
``--crs`` CRs created at once, and resident memory growth over the run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

from freshrank.bench.report import BenchTable, percentile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--crs", type=int, default=100, help="CRs created at once (throughput)")
    parser.add_argument("--samples", type=int, default=10, help="CRs timed one by one (latency)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after (seconds)")


def run(args: argparse.Namespace) -> int:
    results = asyncio.run(_measure(args))
    table = BenchTable("freshrank operator vs direct apply (kmock emulator)", peer="direct apply")
    table.add(
        "create -> all children (median)",
        results["ours_latency_ms"],
        results["peer_latency_ms"],
        "ms",
        higher_is_better=False,
    )
    table.add(
        f"reconcile throughput ({args.crs} CRs)",
        results["ours_throughput"],
        results["peer_throughput"],
        "CR/s",
    )
    table.add(
        f"RSS growth ({args.crs + args.samples} CRs)",
        results["ours_rss_mb"],
        results["peer_rss_mb"],
        "MiB",
        higher_is_better=False,
    )
    table.print()
    path = table.write_json("operator", extra={"params": vars(args) | {"handler": None}, **results})
    print(f"wrote {path}")
    return 0


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _cr(name: str, namespace: str) -> dict[str, Any]:
    from freshrank_operator import crd

    body = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            # What the API server would add (the emulator does not).
            "uid": str(uuid.uuid4()),
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": {"kafka": {"bootstrapServers": "kafka:9092"}},
    }
    return crd.validate(body)


class _Cluster:
    """The emulator plus what the benchmark needs to see in it."""

    def __init__(self, emulator: Any) -> None:
        self.emulator = emulator

    def children(self, namespace: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for (_, ns, _), obj in list(self.emulator.objects.items()):
            if ns != namespace or obj.deleted:
                continue
            labels = obj.raw.get("metadata", {}).get("labels") or {}
            if labels.get("app.kubernetes.io/managed-by") == "freshrank-operator":
                instance = labels["app.kubernetes.io/instance"]
                counts[instance] = counts.get(instance, 0) + 1
        return counts

    async def post(self, body: dict[str, Any]) -> None:
        from freshrank_operator import crd

        namespace = body["metadata"]["namespace"]
        path = f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{namespace}/{crd.PLURAL}"
        async with self.emulator.post(path, json=body) as response:
            response.raise_for_status()

    async def wait_children(
        self, namespace: str, names: list[str], expected: int, deadline: float
    ) -> None:
        while time.monotonic() < deadline:
            counts = self.children(namespace)
            if all(counts.get(n, 0) >= expected for n in names):
                return
            await asyncio.sleep(0.01)
        raise TimeoutError(f"children of {len(names)} CRs not all present in time")


async def _peer(cluster: _Cluster, url: str, args: argparse.Namespace) -> dict[str, float]:
    from freshrank_operator import reconcile, render
    from freshrank_operator.kube import Credentials, KubeClient

    async def login() -> Credentials:
        return Credentials(server=url)

    rss = _rss_mib()
    async with KubeClient(login) as client:
        latencies = []
        for i in range(args.samples):
            cr = _cr(f"peer-{i}", "peer")
            start = time.perf_counter()
            await cluster.post(cr)
            await reconcile.apply_children(client, cr, render.render(cr))
            latencies.append((time.perf_counter() - start) * 1000.0)
        crs = [_cr(f"bulk-{i}", "peer") for i in range(args.crs)]
        start = time.perf_counter()
        await asyncio.gather(*(cluster.post(cr) for cr in crs))
        gate = asyncio.Semaphore(16)  # a client applying 16 deployments at a time

        async def apply(cr: dict[str, Any]) -> None:
            async with gate:
                await reconcile.apply_children(client, cr, render.render(cr))

        await asyncio.gather(*(apply(cr) for cr in crs))
        elapsed = time.perf_counter() - start
    return {
        "latency_ms": statistics.median(latencies),
        "throughput": args.crs / elapsed,
        "rss_mb": _rss_mib() - rss,
    }


async def _ours(cluster: _Cluster, url: str, args: argparse.Namespace) -> dict[str, float]:
    from freshrank_operator import render
    from freshrank_operator.testing import emulator_config, operator_thread

    deadline = time.monotonic() + args.timeout
    expected = len(render.render(_cr("probe", "bench")))
    rss = _rss_mib()
    config = emulator_config(url, "bench", tick_seconds=5.0)
    async with operator_thread(config):
        latencies = []
        for i in range(args.samples):
            cr = _cr(f"one-{i}", "bench")
            start = time.perf_counter()
            await cluster.post(cr)
            await cluster.wait_children("bench", [cr["metadata"]["name"]], expected, deadline)
            latencies.append((time.perf_counter() - start) * 1000.0)
        crs = [_cr(f"bulk-{i}", "bench") for i in range(args.crs)]
        start = time.perf_counter()
        await asyncio.gather(*(cluster.post(cr) for cr in crs))
        names = [cr["metadata"]["name"] for cr in crs]
        await cluster.wait_children("bench", names, expected, deadline)
        elapsed = time.perf_counter() - start
        rss_after = _rss_mib()
    return {
        "latency_ms": statistics.median(latencies),
        "latency_p95_ms": percentile(latencies, 95),
        "throughput": args.crs / elapsed,
        "rss_mb": rss_after - rss,
    }


async def _measure(args: argparse.Namespace) -> dict[str, float]:
    import kmock

    from freshrank_operator.testing import make_emulator

    async with make_emulator(keep_requests=150) as emulator, kmock.Server(emulator):
        cluster = _Cluster(emulator)
        url = str(emulator.url)
        peer = await _peer(cluster, url, args)
        ours = await _ours(cluster, url, args)
    return {
        "ours_latency_ms": ours["latency_ms"],
        "ours_latency_p95_ms": ours["latency_p95_ms"],
        "ours_throughput": ours["throughput"],
        "ours_rss_mb": ours["rss_mb"],
        "peer_latency_ms": peer["latency_ms"],
        "peer_throughput": peer["throughput"],
        "peer_rss_mb": peer["rss_mb"],
    }
