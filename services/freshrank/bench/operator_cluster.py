"""Operator benchmark on a real API server: ``freshrank bench operator --envtest``.

A fresh envtest control plane (etcd, kube-apiserver, kube-controller-manager; ``make envtest``
builds it) with the API server's audit log on. Both sides in the same run and cluster, each in a
namespace of its own, ``--crs`` CRs created at once:

- ours: the real operator (``operator_thread``, logged in with the kubeconfig, production
  timers) reconciles them;
- peer: the floor for the same API work: a client creates the CRs and server-side applies their
  rendered children itself (``reconcile.apply_children``, 16 CRs at a time), no Kopf, no watch,
  no status.

Measured per CR: the time from the creates to every one of its children existing, taken from
watches on the child kinds (the API server's event times, no polling); the API requests each
side made until then (from the audit log, by user agent); then, with ours' CRs idle, the
operator's API requests per minute and CPU per CR over ``--idle-seconds`` (a one-shot apply
costs nothing idle).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from freshrank.bench.report import BenchTable, percentile

__all__ = ["run"]

# Requests the control plane makes itself, not counted against either side.
SYSTEM_AGENTS = ("kube-controller-manager", "kube-apiserver")
CREATES = {"create", "patch"}  # a server-side apply that creates answers 201 too
CR_RESOURCE = "recommenderdeployments"


def _epoch(timestamp: str) -> float:
    """An audit timestamp (RFC 3339, microseconds, UTC) as epoch seconds."""
    return datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def run(args: argparse.Namespace) -> int:
    from freshrank.embedded.kubernetes import EmbeddedKubernetes, KubeAssets, default_assets_dir

    assets = KubeAssets.in_directory(default_assets_dir())
    load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="freshrank-bench-envtest-") as workdir,
        EmbeddedKubernetes(Path(workdir), assets, audit=True) as cluster,
    ):
        cluster.kubectl("apply", "--server-side", "-f", str(_crd_path()))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/" + _crd())
        results = asyncio.run(_measure(cluster, args))
    load_after = os.getloadavg()
    ours, peer = results["ours"], results["peer"]
    crs = args.crs
    table = BenchTable(
        f"freshrank operator vs direct apply (envtest kube-apiserver, {crs} CRs at once)",
        peer="direct apply",
    )
    for q in ("p50", "p95", "max"):
        table.add(
            f"create -> all children, {q}",
            ours[f"children_{q}_ms"],
            peer[f"children_{q}_ms"],
            "ms",
            higher_is_better=False,
        )
    table.add(
        "API requests per CR (until children exist)",
        ours["requests_per_cr"],
        peer["requests_per_cr"],
        "req",
        higher_is_better=False,
    )
    table.add(
        f"idle API requests per minute ({crs} CRs)",
        results["idle"]["requests_per_min"],
        0.0,
        "req/min",
        higher_is_better=False,
    )
    table.add(
        "idle CPU per CR",
        results["idle"]["cpu_ms_per_min_per_cr"],
        0.0,
        "ms/min",
        higher_is_better=False,
    )
    table.print()
    print(
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after on "
        f"{os.cpu_count()} CPUs; idle requests by verb: {results['idle']['by_verb']}"
    )
    params = {"crs": crs, "idle_seconds": args.idle_seconds, "timeout": args.timeout}
    extra = {
        "params": params,
        **results,
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
    path = table.write_json("operator-envtest", extra=extra)
    print(f"wrote {path}")
    return 0


def _crd() -> str:
    from freshrank_operator import crd

    return f"{crd.PLURAL}.{crd.GROUP}"


def _crd_path() -> Path:
    from freshrank_operator import crd

    return crd.crd_path()


async def _measure(cluster: Any, args: argparse.Namespace) -> dict[str, Any]:
    from freshrank_operator.kube import Credentials, KubeClient

    creds = Credentials(server=cluster.server, token=cluster.token, ca_data=cluster.ca_data())

    async def login() -> Credentials:
        return creds

    audit = _AuditLog(cluster.audit_log)
    async with KubeClient(login) as client:
        # A fresh API server builds caches (OpenAPI models for apply, watch caches) on first
        # use: a few CRs applied first, unmeasured, so neither side pays for them.
        warm = argparse.Namespace(**{**vars(args), "crs": 2})
        await _side(client, audit, "bench-warmup", warm, _direct(client))
        peer = await _side(client, audit, "bench-direct", args, _direct(client))
        ours_ns = "bench-operator"
        async with _operator(cluster, ours_ns):
            ours = await _side(client, audit, ours_ns, args, _nothing)
            idle = await _idle(audit, args)
    return {"ours": ours, "peer": peer, "idle": idle}


CreateAndApply = Callable[[list[dict[str, Any]]], Awaitable[None]]


def _direct(client: Any) -> CreateAndApply:
    """The peer's own work: apply each created CR's rendered children, 16 CRs at a time."""
    from freshrank_operator import reconcile, render

    gate = asyncio.Semaphore(16)

    async def apply_one(cr: dict[str, Any]) -> None:
        async with gate:
            await reconcile.apply_children(client, cr, render.render(cr))

    async def apply(created: list[dict[str, Any]]) -> None:
        await asyncio.gather(*(apply_one(cr) for cr in created))

    return apply


async def _nothing(_created: list[dict[str, Any]]) -> None:
    """Ours: nothing for the client to do, the operator reconciles what was created."""


async def _side(
    client: Any,
    audit: _AuditLog,
    namespace: str,
    args: argparse.Namespace,
    apply: CreateAndApply,
) -> dict[str, float]:
    from freshrank_operator import render
    from freshrank_operator.kube import plural

    await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    bodies = [_cr(f"rec-{i}", namespace) for i in range(args.crs)]
    mark = audit.mark()
    created = await asyncio.gather(*(client.create(b) for b in bodies))
    await apply(list(created))
    expected = {
        cr["metadata"]["name"]: {
            (plural(m["apiVersion"], m["kind"]), m["metadata"]["name"]) for m in render.render(cr)
        }
        for cr in created
    }
    start, stored = await audit.creations(namespace, expected, time.monotonic() + args.timeout)
    requests = audit.count_since(mark)
    times = [(max(stored[key] for key in keys) - start) * 1000.0 for keys in expected.values()]
    return {
        "children_p50_ms": percentile(times, 50),
        "children_p95_ms": percentile(times, 95),
        "children_max_ms": max(times),
        "requests_per_cr": sum(requests.values()) / args.crs,
    }


async def _idle(audit: _AuditLog, args: argparse.Namespace) -> dict[str, Any]:
    """The operator's cost with its CRs idle: requests per minute and CPU (this process hosts
    the operator's thread and nothing else that runs)."""
    await asyncio.sleep(10.0)  # first status writes and ticks settle
    mark, cpu = audit.mark(), time.process_time()
    await asyncio.sleep(args.idle_seconds)
    used, requests = time.process_time() - cpu, audit.count_since(mark)
    minutes = args.idle_seconds / 60.0
    return {
        "requests_per_min": sum(requests.values()) / minutes,
        "cpu_ms_per_min_per_cr": used * 1000.0 / minutes / args.crs,
        "by_verb": {verb: round(n / minutes, 1) for verb, n in sorted(requests.items())},
    }


@contextlib.asynccontextmanager
async def _operator(cluster: Any, namespace: str) -> AsyncIterator[None]:
    from freshrank_operator.config import OperatorConfig
    from freshrank_operator.testing import operator_thread

    config = OperatorConfig(
        kubeconfig=str(cluster.kubeconfig), namespaces=namespace, ensure_topics=False
    )
    async with operator_thread(config):
        yield


def _cr(name: str, namespace: str) -> dict[str, Any]:
    from freshrank_operator import crd

    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"kafka": {"bootstrapServers": "kafka:9092"}},
    }


class _AuditLog:
    """Requests the API server logged (one JSON line each), counted by verb, leaving out the
    control plane's own and the benchmark's watches."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def events_since(self, offset: int) -> list[dict[str, Any]]:
        with self.path.open("rb") as log:
            log.seek(offset)
            data = log.read()
        return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]

    def count_since(self, offset: int) -> Counter[str]:
        counts: Counter[str] = Counter()
        for event in self.events_since(offset):
            if not str(event.get("userAgent", "")).startswith(SYSTEM_AGENTS):
                counts[str(event.get("verb"))] += 1
        return counts

    async def creations(
        self, namespace: str, expected: dict[str, set[tuple[str, str]]], deadline: float
    ) -> tuple[float, dict[tuple[str, str], float]]:
        """When the first CR of ``namespace`` was received, and when each expected child
        (resource, name) was created (201), by the API server's clock (epoch seconds).

        The audit log is a local file the API server appends to: reading it until every
        child is there puts no load on the API server."""
        wanted = set().union(*expected.values())
        start, stored = float("inf"), dict[tuple[str, str], float]()
        while True:
            for event in self.events_since(0):
                ref = event.get("objectRef") or {}
                if ref.get("namespace") != namespace or event.get("verb") not in CREATES:
                    continue
                if (event.get("responseStatus") or {}).get("code") != 201:
                    continue
                key = (ref.get("resource"), ref.get("name"))
                if key[0] == CR_RESOURCE:
                    start = min(start, _epoch(event["requestReceivedTimestamp"]))
                elif key in wanted:
                    stored.setdefault(key, _epoch(event["stageTimestamp"]))
            missing = wanted - stored.keys()
            if not missing and start != float("inf"):
                return start, stored
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} children never created: {sorted(missing)[:5]}")
            await asyncio.sleep(0.2)
