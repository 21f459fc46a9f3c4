"""Operator benchmark against kmock's KubernetesEmulator (an in-memory API server over HTTP).

Ours: the real Kopf operator (``operator_thread``: its own thread and loop) reconciling
RecommenderDeployments. Peer: the floor for the same work, i.e. rendering and server-side
applying the same children straight from a client, with no Kopf, no watch and no status.
Measured: time from CR create to every child present (one CR at a time), throughput with
``--crs`` CRs created at once, what each side cost the emulator (API requests) and the machine
(CPU, client and emulator together) per CR, and the client process's resident memory growth.

Layout, the same for both sides: the emulator runs in a process of its own (an API server is
another process; sharing one with the client made both fight over one GIL), and each side's
client runs in a fresh process of its own (neither inherits the other's heap, objects or
garbage-collector state, so the order of the two runs does not matter). The emulator itself
notes when the last awaited child is stored and reports that moment: no polling in the loop
that is being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from freshrank.bench.report import BenchTable, percentile

# (resource, namespace, name) of a child as the emulator keys it; resource as "v1/services".
ChildKey = tuple[str, str, str]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--crs", type=int, default=100, help="CRs created at once (throughput)")
    parser.add_argument("--samples", type=int, default=10, help="CRs timed one by one (latency)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after (seconds)")
    parser.add_argument(
        "--envtest",
        action="store_true",
        help="on a real API server (envtest, built by `make envtest`) instead of kmock's emulator",
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=60.0,
        help="--envtest: how long the idle CRs' API requests and CPU are measured",
    )


def run(args: argparse.Namespace) -> int:
    if args.envtest:
        from freshrank.bench import operator_cluster

        return operator_cluster.run(args)
    params = {"crs": args.crs, "samples": args.samples, "timeout": args.timeout}
    load_before = os.getloadavg()
    peer = _in_fresh_process("peer", params)
    ours = _in_fresh_process("ours", params)
    table = BenchTable("freshrank operator vs direct apply (kmock emulator)", peer="direct apply")
    table.add(
        "create -> all children (median)",
        ours["latency_ms"],
        peer["latency_ms"],
        "ms",
        higher_is_better=False,
    )
    table.add(
        f"reconcile throughput ({args.crs} CRs)", ours["throughput"], peer["throughput"], "CR/s"
    )
    table.add(
        "API requests per CR (bulk, until children exist)",
        ours["requests_per_cr"],
        peer["requests_per_cr"],
        "req",
        higher_is_better=False,
    )
    table.add(
        "CPU per CR (bulk, client + emulator)",
        ours["cpu_ms_per_cr"],
        peer["cpu_ms_per_cr"],
        "ms",
        higher_is_better=False,
    )
    table.add(
        f"client RSS growth ({args.crs + args.samples} CRs)",
        ours["rss_mb"],
        peer["rss_mb"],
        "MiB",
        higher_is_better=False,
    )
    table.print()
    load_after = os.getloadavg()
    print(
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
        f"on {os.cpu_count()} CPUs; emulator and client in separate fresh processes per side"
    )
    results = {
        **{f"ours_{k}": v for k, v in ours.items()},
        **{f"peer_{k}": v for k, v in peer.items()},
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
    path = table.write_json("operator", extra={"params": params, **results})
    print(f"wrote {path}")
    return 0


def _in_fresh_process(side: str, params: dict[str, Any]) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        result: dict[str, float] = pool.submit(_run_side, side, params).result()
    return result


def _run_side(side: str, params: dict[str, Any]) -> dict[str, float]:
    """One side, in its own process, against a fresh emulator in another process."""
    args = argparse.Namespace(**params)
    with _EmulatorProcess() as emulator:
        return asyncio.run(_SIDES[side](emulator, args))


# --- the emulator's process ------------------------------------------------------------------


class _EmulatorProcess:
    """A fresh emulator served from its own process, driven over a pipe.

    Requests on the pipe: ``("await", keys)`` answers ``("stored", t)``, the
    ``time.monotonic()`` at which the last of ``keys`` was stored (the clock is system-wide on
    Linux); ``("stats",)`` answers requests answered, CPU seconds and RSS of that process.
    """

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_emulator_main, args=(child,), daemon=True)
        self._process.start()
        child.close()
        message = self._conn.recv()
        self.url: str = message[1]
        self._lock = asyncio.Lock()

    def __enter__(self) -> _EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.send(("stop",))
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()

    async def _ask(self, *message: Any) -> Any:
        async with self._lock:
            self._conn.send(message)
            return await asyncio.get_running_loop().run_in_executor(None, self._conn.recv)

    async def stored(self, keys: list[ChildKey], timeout: float) -> float:
        """When the emulator held every one of ``keys`` (monotonic clock)."""
        reply = await asyncio.wait_for(self._ask("await", keys), timeout)
        return float(reply[1])

    async def stats(self) -> tuple[int, float, float]:
        reply = await self._ask("stats")
        return int(reply[1]), float(reply[2]), float(reply[3])


def _emulator_main(conn: Connection) -> None:
    asyncio.run(_serve_emulator(conn))


async def _serve_emulator(conn: Connection) -> None:
    import kmock

    from freshrank_operator.testing import make_emulator

    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()

    def receive() -> None:
        try:
            inbox.put_nowait(conn.recv())
        except EOFError:  # the benchmark went away: do not outlive it
            loop.remove_reader(conn.fileno())
            inbox.put_nowait(("stop",))

    loop.add_reader(conn.fileno(), receive)
    async with make_emulator(keep_requests=10) as emulator, kmock.Server(emulator):
        waiting: collections.deque[Any] = collections.deque()  # keys not stored yet
        answer_due = False  # an "await" is outstanding
        handle = emulator._handle

        def check() -> None:
            nonlocal answer_due
            objects = emulator.objects
            while waiting and waiting[0] in objects and not objects[waiting[0]].deleted:
                waiting.popleft()
            if not waiting and answer_due:
                answer_due = False
                conn.send(("stored", time.monotonic()))

        async def handle_and_check(request: Any) -> Any:
            try:
                return await handle(request)
            finally:
                if answer_due:
                    check()

        emulator._handle = handle_and_check
        rss = _rss_mib()
        conn.send(("url", str(emulator.url)))
        while True:
            message = await inbox.get()
            if message[0] == "stop":
                break
            if message[0] == "stats":
                used = time.process_time()
                conn.send(("stats", emulator.requests_answered, used, _rss_mib() - rss))
            elif message[0] == "await":
                waiting.extend((kmock.resource(r), ns, name) for r, ns, name in message[1])
                answer_due = True
                check()


# --- the two sides ---------------------------------------------------------------------------


class _Cost:
    """API requests and CPU (this process and the emulator's) between start and ``per_cr``."""

    def __init__(self, emulator: _EmulatorProcess) -> None:
        self._emulator = emulator
        self._start: tuple[int, float, float] = (0, 0.0, 0.0)

    async def start(self) -> _Cost:
        requests, emulator_cpu, _ = await self._emulator.stats()
        self._start = (requests, emulator_cpu, time.process_time())
        return self

    async def per_cr(self, crs: int) -> dict[str, float]:
        client_cpu = time.process_time()
        requests, emulator_cpu, emulator_rss = await self._emulator.stats()
        cpu = (emulator_cpu - self._start[1]) + (client_cpu - self._start[2])
        return {
            "requests_per_cr": (requests - self._start[0]) / crs,
            "cpu_ms_per_cr": cpu * 1000.0 / crs,
            "client_cpu_ms_per_cr": (client_cpu - self._start[2]) * 1000.0 / crs,
            "emulator_cpu_ms_per_cr": (emulator_cpu - self._start[1]) * 1000.0 / crs,
            "emulator_rss_mb": emulator_rss,
        }


def _watch(
    emulator: _EmulatorProcess, keys: list[ChildKey], deadline: float
) -> asyncio.Task[float]:
    """Ask the emulator, before the work starts, when it will hold every one of ``keys``."""
    return asyncio.create_task(emulator.stored(keys, deadline - time.monotonic()))


async def _post(session: Any, url: str, body: dict[str, Any]) -> None:
    from freshrank_operator import crd

    namespace = body["metadata"]["namespace"]
    path = f"{url}/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{namespace}/{crd.PLURAL}"
    async with session.post(path, json=body) as response:
        response.raise_for_status()


CRApply = Callable[[list[dict[str, Any]]], Awaitable[None]]


async def _drive(
    emulator: _EmulatorProcess, args: argparse.Namespace, deadline: float, apply: CRApply
) -> tuple[list[float], float, dict[str, float]]:
    """The run both sides share: ``--samples`` CRs one at a time (latency), then ``--crs`` at
    once (throughput and cost). ``apply`` is the client's own work after posting CRs."""
    import aiohttp

    samples = [_cr(f"one-{i}", "bench") for i in range(args.samples)]
    crs = [_cr(f"bulk-{i}", "bench") for i in range(args.crs)]
    keys = {cr["metadata"]["name"]: _child_keys(cr) for cr in samples + crs}
    async with aiohttp.ClientSession() as session:
        latencies = []
        for cr in samples:
            start = time.monotonic()
            stored = _watch(emulator, keys[cr["metadata"]["name"]], deadline)
            await _post(session, emulator.url, cr)
            await apply([cr])
            latencies.append((await stored - start) * 1000.0)
        cost = await _Cost(emulator).start()
        start = time.monotonic()
        every = [key for cr in crs for key in keys[cr["metadata"]["name"]]]
        stored = _watch(emulator, every, deadline)
        await asyncio.gather(*(_post(session, emulator.url, cr) for cr in crs))
        await apply(crs)
        elapsed = await stored - start
        costs = await cost.per_cr(args.crs)
    return latencies, args.crs / elapsed, costs


async def _peer(emulator: _EmulatorProcess, args: argparse.Namespace) -> dict[str, float]:
    from freshrank_operator import reconcile, render
    from freshrank_operator.kube import Credentials, KubeClient

    async def login() -> Credentials:
        return Credentials(server=emulator.url)

    deadline = time.monotonic() + args.timeout
    rss = _rss_mib()
    async with KubeClient(login) as client:
        gate = asyncio.Semaphore(16)  # a client applying 16 deployments at a time

        async def apply_one(cr: dict[str, Any]) -> None:
            async with gate:
                await reconcile.apply_children(client, cr, render.render(cr))

        async def apply(crs: list[dict[str, Any]]) -> None:
            await asyncio.gather(*(apply_one(cr) for cr in crs))

        latencies, throughput, costs = await _drive(emulator, args, deadline, apply)
    return _summary(latencies, throughput, costs, _rss_mib() - rss)


async def _ours(emulator: _EmulatorProcess, args: argparse.Namespace) -> dict[str, float]:
    from freshrank_operator.testing import emulator_config, operator_thread

    async def operator_applies(_crs: list[dict[str, Any]]) -> None:
        """Nothing for the client to do: the operator reconciles what was posted."""

    deadline = time.monotonic() + args.timeout
    rss = _rss_mib()
    config = emulator_config(emulator.url, "bench", tick_seconds=5.0)
    async with operator_thread(config):
        latencies, throughput, costs = await _drive(emulator, args, deadline, operator_applies)
        rss_after = _rss_mib()
    return _summary(latencies, throughput, costs, rss_after - rss)


def _summary(
    latencies: list[float], throughput: float, costs: dict[str, float], rss_mb: float
) -> dict[str, float]:
    return {
        "latency_ms": statistics.median(latencies),
        "latency_p95_ms": percentile(latencies, 95),
        "throughput": throughput,
        **costs,
        "rss_mb": rss_mb,
    }


_SIDES: dict[
    str, Callable[[_EmulatorProcess, argparse.Namespace], Coroutine[Any, Any, dict[str, float]]]
]
_SIDES = {"peer": _peer, "ours": _ours}


# --- helpers ---------------------------------------------------------------------------------


def _rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _cr(name: str, namespace: str) -> dict[str, Any]:
    from freshrank_operator import crd_validation as crd

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


def _child_keys(cr: dict[str, Any]) -> list[ChildKey]:
    """The emulator's keys of every child the operator renders for ``cr``."""
    from freshrank_operator import render
    from freshrank_operator.testing import CHILD_RESOURCES

    namespace = cr["metadata"]["namespace"]
    return [
        (CHILD_RESOURCES[m["kind"]], namespace, m["metadata"]["name"]) for m in render.render(cr)
    ]
