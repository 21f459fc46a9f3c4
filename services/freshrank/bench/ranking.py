"""Ranking benchmark: ``/v1/rank`` on Triton vs the same service scoring in-process with PyTorch.

Both sides are the real ranking service (``freshrank ranking`` in its own process) on the same
model version: ours scores on Triton (``scorer=triton``), the peer loads the same ``model.pt``
into the service process (``scorer=torch``), which is what a team without Triton would run.
A load generator in a separate process drives each side closed-loop (N workers back to back:
peak throughput) and open-loop (fixed arrival rate; latency counted from the scheduled send
time, so a stall is not hidden by coordinated omission). Every request carries
``--candidates`` candidate items. The feature service is not part of this measurement
(``feature_url`` empty: empty history on both sides).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import itertools
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from freshrank.bench.load import drive
from freshrank.bench.report import BenchTable, summarize
from freshrank.core.contracts import routes

MODEL_NAME = "bench-ranker"
TARGET_P99_MS = 20.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=10_000, help="users in the model")
    parser.add_argument("--items", type=int, default=5_000, help="items in the model")
    parser.add_argument("--dim", type=int, default=32, help="embedding dimension")
    parser.add_argument("--architecture", default="mf", help="model architecture (registry)")
    parser.add_argument("--candidates", type=int, default=100, help="candidates per request")
    parser.add_argument("--k", type=int, default=10, help="items returned per request")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians are reported)")
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop requests/s")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop workers")
    parser.add_argument("--protocol", default="http", choices=["http", "grpc"], help="to Triton")
    parser.add_argument(
        "--triton-deadline-ms",
        type=float,
        default=50.0,
        help="the service's Triton deadline; a request past it is answered by the fallback",
    )


@dataclasses.dataclass(frozen=True)
class LoadResult:
    latencies_s: list[float]
    errors: int
    fallbacks: int
    seconds: float

    @property
    def throughput(self) -> float:
        return len(self.latencies_s) / self.seconds if self.seconds else 0.0


def run(args: argparse.Namespace) -> int:
    from freshrank.embedded import EmbeddedTriton

    with tempfile.TemporaryDirectory(prefix="bench-ranking-") as tmp:
        workdir = Path(tmp)
        repository = workdir / "models"
        _write_model(repository, args)
        with EmbeddedTriton(workdir, repository, load_models=[MODEL_NAME]) as triton:
            sides = {
                "triton": _start_service(workdir, repository, "triton", triton, args),
                "torch": _start_service(workdir, repository, "torch", triton, args),
            }
            try:
                results = _measure(sides, args)
            finally:
                for process, _ in sides.values():
                    process.stop()
    return _report(results, args)


def _write_model(repository: Path, args: argparse.Namespace) -> None:
    import torch

    from freshrank.core.model_repo import ExportRecord, ModelRepository
    from freshrank.model import IdMap, ModelConfig, build_model

    users, items = IdMap(args.users + 1), IdMap(args.items + 1)
    users.assign([f"u{i}" for i in range(args.users)])
    items.assign([f"i{i}" for i in range(args.items)])
    torch.manual_seed(0)
    # --architecture and --dim from the flags.
    config = ModelConfig.from_settings(args, num_users=users.capacity, num_items=items.capacity)
    model = build_model(config).eval()

    def populate(directory: Path) -> None:
        torch.jit.script(model).save(str(directory / "model.pt"))  # type: ignore[no-untyped-call]
        ids = {"users": users.to_json(), "items": items.to_json()}
        (directory / "ids.json").write_text(json.dumps({**ids, "history_len": config.history_len}))

    ModelRepository(repository, MODEL_NAME).write_version(
        populate,
        lambda v: ExportRecord(
            version=v, architecture=args.architecture, events_covered=0, last_event_timestamp_ms=0
        ),
    )


def _start_service(
    workdir: Path, repository: Path, scorer: str, triton: Any, args: argparse.Namespace
) -> tuple[Any, str]:
    from freshrank.core.service_settings import RankingSettings
    from freshrank.core.settings import settings_env
    from freshrank.embedded import ManagedProcess, free_port

    port = free_port()
    env = {
        **os.environ,
        **settings_env(
            RankingSettings,
            name=MODEL_NAME.removesuffix("-ranker"),
            port=port,
            host="127.0.0.1",
            scorer=scorer,
            triton_url=triton.grpc_url if args.protocol == "grpc" else triton.http_url,
            triton_protocol=args.protocol,
            triton_deadline_ms=args.triton_deadline_ms,
            feature_url="",
            model_repository=repository,
            log_level="WARNING",
        ),
        "OMP_NUM_THREADS": "1",
    }
    process = ManagedProcess(
        f"ranking-{scorer}",
        [sys.executable, "-m", "freshrank.cli", "ranking"],
        log_path=workdir / "logs" / f"ranking-{scorer}.log",
        env=env,
    )
    process.start()
    url = f"http://127.0.0.1:{port}"
    process.wait_ready(lambda: _serving_version(url) > 0, timeout=60)
    return process, url


def _serving_version(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}{routes.READY}", timeout=1) as response:
            return int(json.loads(response.read())["model_version"])
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return 0


Results = dict[str, dict[str, list[LoadResult]]]  # side -> mode -> one result per round


def _measure(sides: dict[str, tuple[Any, str]], args: argparse.Namespace) -> Results:
    """Rounds of closed then open loop; the sides alternate (the same noise hits both)."""
    results: Results = {side: {"closed": [], "open": []} for side in sides}
    options = {k: v for k, v in vars(args).items() if k != "handler"}
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
        for _, url in sides.values():
            pool.submit(_load_process, url, "warmup", options).result()
        for _ in range(args.rounds):
            for mode in ("closed", "open"):
                for side, (_, url) in sides.items():
                    job = pool.submit(_load_process, url, mode, options)
                    results[side][mode].append(job.result())
    return results


def _load_process(url: str, mode: str, options: dict[str, Any]) -> LoadResult:
    """Runs in the load-generator process."""
    return asyncio.run(_load(url, mode, options))


async def _load(url: str, mode: str, options: dict[str, Any]) -> LoadResult:
    import aiohttp

    rng = random.Random(0)
    bodies = [
        json.dumps(
            {
                "user_id": f"u{rng.randrange(options['users'])}",
                "k": options["k"],
                "candidates": [
                    f"i{i}" for i in rng.sample(range(options["items"]), options["candidates"])
                ],
            }
        ).encode()
        for _ in range(256)
    ]
    duration = 2.0 if mode == "warmup" else float(options["duration"])
    latencies: list[float] = []
    counts = {"errors": 0, "fallbacks": 0}
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(scheduled: float) -> None:
            body = bodies[next(sent) % len(bodies)]
            try:
                async with session.post(
                    f"{url}{routes.RANK}", data=body, headers=headers
                ) as response:
                    reply = await response.read()
                    ok = response.status == 200
            except aiohttp.ClientError:
                ok, reply = False, b""
            latencies.append(time.perf_counter() - scheduled)
            if not ok:
                counts["errors"] += 1
            elif b'"fallback": true' in reply:
                counts["fallbacks"] += 1

        sent = itertools.count()
        rate = float(options["rate"]) if mode == "open" else 0.0
        workers = int(options["concurrency"]) if mode == "closed" else 2
        start = await drive(one, duration=duration, rate=rate, concurrency=workers)
        seconds = time.perf_counter() - start
    return LoadResult(latencies, counts["errors"], counts["fallbacks"], seconds)


def _round_stats(result: LoadResult) -> dict[str, float]:
    stats = summarize(result.latencies_s)
    return {
        **{q: stats[q] * 1000 for q in ("p50", "p95", "p99")},
        "throughput": result.throughput,
        "requests": float(len(result.latencies_s)),
        "errors": float(result.errors),
        "fallbacks": float(result.fallbacks),
    }


def _medians(rounds: list[LoadResult]) -> dict[str, float]:
    per_round = [_round_stats(r) for r in rounds]
    medians = {key: statistics.median(s[key] for s in per_round) for key in per_round[0]}
    medians["errors"] = sum(s["errors"] for s in per_round)  # any error counts
    medians["fallbacks"] = sum(s["fallbacks"] for s in per_round)
    return medians


def _report(results: Results, args: argparse.Namespace) -> int:
    table = BenchTable(
        f"ranking: POST /v1/rank, {args.candidates} candidates, {args.architecture} "
        f"dim {args.dim}; closed loop {args.concurrency} workers, open loop {args.rate:g} req/s; "
        f"median of {args.rounds} rounds x {args.duration:g} s",
        ours=f"Triton ({args.protocol})",
        peer="in-process PyTorch",
    )
    summary = {
        mode: {side: _medians(results[side][mode]) for side in results}
        for mode in ("closed", "open")
    }
    for mode, sides in summary.items():
        ours, peer = sides["triton"], sides["torch"]
        for q in ("p50", "p95", "p99"):
            table.add(f"{mode}: {q} latency", ours[q], peer[q], "ms", higher_is_better=False)
        table.add(f"{mode}: throughput", ours["throughput"], peer["throughput"], "req/s")
        # Fallback answers are fast and not the model's: they must be visible, not averaged in.
        table.add(
            f"{mode}: fallback answers",
            ours["fallbacks"],
            peer["fallbacks"],
            "requests",
            higher_is_better=False,
        )
    table.print()
    open_ours = summary["open"]["triton"]
    met = open_ours["p99"] < TARGET_P99_MS and open_ours["errors"] == 0
    print(
        f"aim p99 < {TARGET_P99_MS:g} ms at {args.rate:g} req/s on Triton: "
        f"{'met' if met else 'missed'} (median p99 {open_ours['p99']:.1f} ms; "
        f"errors {open_ours['errors']:.0f}, fallbacks {open_ours['fallbacks']:.0f}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    table.write_json(
        "ranking",
        {
            "options": {k: v for k, v in vars(args).items() if k != "handler"},
            "results": summary,
            "aim": {"p99_ms": TARGET_P99_MS, "rate": args.rate, "met": met},
            # The machine is shared: the load says how much of it this run really had.
            "load_average_after": os.getloadavg(),
        },
    )
    return 0
