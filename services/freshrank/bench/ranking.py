"""Ranking benchmark: ``/v1/rank`` on Triton vs the same service scoring in-process with PyTorch.

Both sides are the real ranking service (``freshrank ranking`` in its own process) on the same
model versions: ours scores on Triton (``scorer=triton``), the peer loads the same ``model.pt``
into the service process (``scorer=torch``), which is what a team without Triton would run.
A load generator in a separate process drives each side closed-loop (N workers back to back:
peak throughput) and open-loop (fixed arrival rate; latency counted from the scheduled send
time, so a stall is not hidden by coordinated omission). Every request carries
``--candidates`` candidate items. The feature service is not part of this measurement
(``feature_url`` empty: empty history on both sides).

``--serving live`` (default) is the embedded Triton's live model, one long-lived model on our C++
backend that swaps versions in place; ``--serving versions`` makes every version a Triton model
version on the Python backend (a new stub process each), for before/after comparisons in one build.

``--trainer-beside``: a real trainer (``freshrank trainer``, niced as in the local stack) reads a
synthetic stream from an embedded broker and exports a version every ``--export-interval``
seconds while the load runs, into the repository both sides serve from. No model exists at the
start: answers before a side's first model-served answer are reported apart ("before first
model"); after it every fallback counts against the model-served share.

``--device cuda`` runs Triton's model and the in-process peer on the GPU (and the trainer).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import itertools
import json
import multiprocessing
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from freshrank.bench.load import drive
from freshrank.bench.report import BenchTable, model_served, summarize
from freshrank.core.contracts import routes

MODEL_NAME = "bench-ranker"
TARGET_P99_MS = 20.0
TARGET_P99_TRAINING_MS = 50.0
TARGET_MODEL_SHARE = 0.99
TARGET_RATIO = 0.8
# The answer's JSON (proto3 mapping: int64 as a decimal string), read without parsing it all.
_VERSION = re.compile(rb'"model_version":\s*"?(\d+)')
_FALLBACK = re.compile(rb'"fallback":\s*true')


def answered_version(reply: bytes) -> int:
    """The model version a ranking answer came from; 0 for a fallback."""
    match = _VERSION.search(reply)
    return 0 if match is None or _FALLBACK.search(reply) else int(match.group(1))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, default=10_000, help="users in the model")
    parser.add_argument("--items", type=int, default=5_000, help="items in the model")
    parser.add_argument("--dim", type=int, default=32, help="embedding dimension")
    parser.add_argument("--architecture", default="mf", help="model architecture (registry)")
    for name, what in (("views", "item-table views"), ("neighbours", "kNN term's neighbours")):
        parser.add_argument(f"--{name}", type=int, help=f"sasrec: {what} (default: the model's)")
    parser.add_argument("--candidates", type=int, default=100, help="candidates per request")
    parser.add_argument("--k", type=int, default=10, help="items returned per request")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians are reported)")
    parser.add_argument("--rate", type=float, default=200.0, help="open-loop requests/s")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop workers")
    parser.add_argument("--protocol", default="http", choices=["http", "grpc"], help="to Triton")
    parser.add_argument(
        "--serving",
        default="live",
        choices=["live", "versions"],
        help="Triton serves versions in place (live model) or as Triton model versions",
    )
    parser.add_argument(
        "--trainer-beside",
        action="store_true",
        help="a real trainer exports versions from a synthetic stream while the load runs",
    )
    parser.add_argument("--event-rate", type=float, default=200.0, help="events/s to the trainer")
    parser.add_argument("--export-interval", type=float, default=2.0, help="trainer export period")
    parser.add_argument(
        "--trainer-nice", type=int, default=10, help="niceness of the trainer (CPU budget)"
    )
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="where the models run"
    )
    parser.add_argument(
        "--triton-deadline-ms",
        type=float,
        default=50.0,
        help="the service's Triton deadline; a request past it is answered by the fallback",
    )


@dataclasses.dataclass(frozen=True)
class LoadResult:
    latencies_s: list[float]
    versions: list[int]  # model_version of each answer (0: a fallback)
    errors: int
    seconds: float
    load_average: tuple[float, float]  # 1-minute load average before, after

    @property
    def throughput(self) -> float:
        return len(self.latencies_s) / self.seconds if self.seconds else 0.0

    @property
    def fallbacks(self) -> int:
        return sum(1 for v in self.versions if v == 0)


def require_device(device: str) -> None:
    """Refuse a GPU run up front, with the reason, instead of failing inside a service."""
    if device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise SystemExit(
            "--device cuda: this torch build sees no CUDA device "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
            "run on a GPU machine with a CUDA torch wheel"
        )


def run(args: argparse.Namespace) -> int:
    from freshrank.embedded import EmbeddedTriton

    require_device(args.device)
    with (
        tempfile.TemporaryDirectory(prefix="bench-ranking-") as tmp,
        contextlib.ExitStack() as on_exit,
    ):
        workdir = Path(tmp)
        repository = workdir / "models"
        triton_env = {"FRESHRANK_TRITON_DEVICE": args.device, "FRESHRANK_TRITON_THREADS": "1"}
        triton = on_exit.enter_context(EmbeddedTriton(workdir, repository, env=triton_env))
        if args.trainer_beside:
            on_exit.enter_context(_trainer_beside(workdir, repository, triton, args))
        else:
            _write_model(repository, args)
            asyncio.run(_load_on_triton(triton, args))
        sides = {
            "triton": _start_service(workdir, repository, "triton", triton, args),
            "torch": _start_service(workdir, repository, "torch", triton, args),
        }
        try:
            results = _measure(sides, args)
            reasons = {side: _fallback_reasons(url) for side, (_, url) in sides.items()}
        finally:
            for process, _ in sides.values():
                process.stop()
        versions = _versions_published(repository)
    return _report(results, args, versions, reasons)


def _write_model(repository: Path, args: argparse.Namespace) -> None:
    import torch

    from freshrank.core.model_repo import ExportRecord, ModelRepository
    from freshrank.model import IdMap, ModelConfig, build_model
    from freshrank.model.export import export_version

    users, items = IdMap(args.users + 1), IdMap(args.items + 1)
    users.assign([f"u{i}" for i in range(args.users)])
    items.assign([f"i{i}" for i in range(args.items)])
    torch.manual_seed(0)
    # --architecture and --dim from the flags, --views and --neighbours where given.
    config = ModelConfig.from_settings(args, num_users=users.capacity, num_items=items.capacity)
    model = build_model(config).eval()
    # A full kNN memory (sasrec), 20 items per user: a request's neighbours then vote.
    pairs = 20 * args.users
    model.observe_pairs(
        torch.randint(1, users.capacity, (pairs,)), torch.randint(1, items.capacity, (pairs,))
    )

    def populate(directory: Path) -> None:
        export_version(model, directory, {"users": users.to_json(), "items": items.to_json()})

    store = ModelRepository(repository, MODEL_NAME)
    store.write_version(
        populate,
        lambda v: ExportRecord(
            version=v,
            model=store.export_manifest(v),
            events_covered=0,
            last_event_timestamp_ms=0,
        ),
    )


async def _load_on_triton(triton: Any, args: argparse.Namespace) -> None:
    from freshrank.trainer.exporter import LiveTritonControl, TritonControl

    control = (LiveTritonControl if args.serving == "live" else TritonControl)(triton.http_url)
    try:
        await control.load_and_wait(MODEL_NAME, 1, timeout_s=120.0)
    finally:
        await control.close()


@contextlib.contextmanager
def _trainer_beside(
    workdir: Path, repository: Path, triton: Any, args: argparse.Namespace
) -> Iterator[None]:
    """Broker + a synthetic stream at ``--event-rate`` + ``freshrank trainer``, until exit."""
    from freshrank.core.kafka import EventProducer, ensure_topics
    from freshrank.core.service_settings import TrainerSettings
    from freshrank.core.settings import settings_env
    from freshrank.embedded import EmbeddedBroker, ManagedProcess, free_port
    from freshrank.sim import SyntheticConfig, SyntheticStream

    name = MODEL_NAME.removesuffix("-ranker")
    topic = f"{name}.events"
    with EmbeddedBroker(workdir / "broker") as broker:
        ensure_topics(broker.bootstrap, [topic, f"{topic}.dlq"])
        env = {
            **os.environ,
            **settings_env(
                TrainerSettings,
                name=name,
                bootstrap_servers=broker.bootstrap,
                host="127.0.0.1",
                port=free_port(),
                model_repository=repository,
                checkpoint_dir=workdir / "checkpoints",
                triton_url=triton.http_url,
                triton_live=args.serving == "live",
                architecture=args.architecture,
                dim=args.dim,
                num_users=args.users + 1,
                num_items=args.items + 1,
                export_interval_s=args.export_interval,
                min_events=200,
                device=args.device,
                log_level="WARNING",
            ),
            "OMP_NUM_THREADS": "1",
        }
        trainer = ManagedProcess(
            "trainer",
            [
                "nice",
                "-n",
                str(args.trainer_nice),
                sys.executable,
                "-m",
                "freshrank.cli",
                "trainer",
            ],
            log_path=workdir / "logs" / "trainer.log",
            env=env,
        )
        stop = threading.Event()
        stream = SyntheticStream(
            SyntheticConfig(users=args.users, items=args.items, events=10**9, drift_at=None)
        )

        def produce() -> None:
            producer = EventProducer(broker.bootstrap, topic)
            start = time.monotonic()
            for sent, event in enumerate(stream.events()):
                if stop.is_set():
                    break
                ahead = sent / args.event_rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
                producer.send(event)
            producer.flush()

        producer = threading.Thread(target=produce, name="events", daemon=True)
        trainer.start()
        producer.start()
        try:
            yield
        finally:
            stop.set()
            producer.join(timeout=10)
            trainer.stop()


def _start_service(
    workdir: Path, repository: Path, scorer: str, triton: Any, args: argparse.Namespace
) -> tuple[Any, str]:
    from freshrank.core.service_settings import RankingSettings
    from freshrank.core.settings import settings_env
    from freshrank.embedded import ManagedProcess, free_port
    from freshrank.embedded.process import http_ok

    port = free_port()
    env = {
        **os.environ,
        **settings_env(
            RankingSettings,
            name=MODEL_NAME.removesuffix("-ranker"),
            port=port,
            host="127.0.0.1",
            scorer=scorer,
            device=args.device,
            triton_url=triton.grpc_url if args.protocol == "grpc" else triton.http_url,
            triton_protocol=args.protocol,
            triton_live=args.serving == "live",
            triton_deadline_ms=args.triton_deadline_ms,
            model_poll_s=0.25,
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
    if args.trainer_beside:  # no model yet: answers until the first one count apart
        process.wait_ready(lambda: http_ok(f"{url}/healthz"), timeout=60)
    else:
        process.wait_ready(lambda: _serving_version(url) > 0, timeout=60)
    return process, url


def _serving_version(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}{routes.READY}", timeout=1) as response:
            return int(json.loads(response.read())["model_version"])
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return 0


def _fallback_reasons(url: str) -> dict[str, int]:
    """The service's own count of fallbacks by reason (its Prometheus metrics)."""
    pattern = re.compile(r'^freshrank_ranking_fallback_total\{reason="([^"]+)"\} (\S+)$', re.M)
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    return {reason: int(float(count)) for reason, count in pattern.findall(text)}


def _versions_published(repository: Path) -> int:
    from freshrank.core.model_repo import ModelRepository

    manifest = ModelRepository(repository, MODEL_NAME).manifest()
    return max((r.version for r in manifest), default=0)


Results = dict[str, dict[str, list[LoadResult]]]  # side -> phase -> one result per round


def _measure(sides: dict[str, tuple[Any, str]], args: argparse.Namespace) -> Results:
    """Warm-up (until both sides answered from a model), then rounds of closed then open
    loop; the sides alternate (the same noise hits both)."""
    results: Results = {side: {"warmup": [], "closed": [], "open": []} for side in sides}
    options = {k: v for k, v in vars(args).items() if k != "handler"}
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
        deadline = time.monotonic() + (240.0 if args.trainer_beside else 0.0)
        while True:
            for side, (_, url) in sides.items():
                results[side]["warmup"].append(
                    pool.submit(_load_process, url, "warmup", options).result()
                )
            served = all(
                any(r.versions and max(r.versions) > 0 for r in results[s]["warmup"]) for s in sides
            )
            if served or time.monotonic() > deadline:
                break
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
    versions: list[int] = []
    counts = {"errors": 0}
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=256)
    load_before = os.getloadavg()[0]
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
                versions.append(0)
                return
            versions.append(answered_version(reply))

        sent = itertools.count()
        rate = float(options["rate"]) if mode != "closed" else 0.0
        workers = int(options["concurrency"]) if mode == "closed" else 2
        start = await drive(one, duration=duration, rate=rate, concurrency=workers)
        seconds = time.perf_counter() - start
    return LoadResult(
        latencies, versions, counts["errors"], seconds, (load_before, os.getloadavg()[0])
    )


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


def model_share(phases: list[LoadResult]) -> dict[str, float]:
    """Model-served share after the first model-served answer (``report.model_served``) and
    the versions that served."""
    answers = [v for result in phases for v in result.versions]
    split = model_served([v > 0 for v in answers])
    return {
        "before_first_model": float(split.before_first_model),
        "after_first_model": float(split.after_first_model),
        "fallbacks_after_first_model": float(split.fallbacks_after),
        "model_served_share": split.share,
        "versions_seen": float(len({v for v in answers if v > 0})),
    }


def _report(
    results: Results, args: argparse.Namespace, versions: int, reasons: dict[str, dict[str, int]]
) -> int:
    training = " with a trainer exporting beside" if args.trainer_beside else ""
    table = BenchTable(
        f"ranking: POST /v1/rank, {args.candidates} candidates, {args.architecture} "
        f"dim {args.dim}, {args.users:,} users, {args.device}{training}; closed loop "
        f"{args.concurrency} workers, open loop {args.rate:g} req/s; median of {args.rounds} "
        f"rounds x {args.duration:g} s",
        ours=f"Triton ({args.protocol}, {args.serving})",
        peer="in-process PyTorch",
    )
    summary = {
        mode: {side: _medians(results[side][mode]) for side in results}
        for mode in ("closed", "open")
    }
    shares = {
        side: model_share([r for mode in ("warmup", "closed", "open") for r in phases[mode]])
        for side, phases in results.items()
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
    ours_share, peer_share = shares["triton"], shares["torch"]
    table.add(
        "model-served after the first model",
        100 * ours_share["model_served_share"],
        100 * peer_share["model_served_share"],
        "%",
    )
    table.add(
        "fallbacks before the first model",
        ours_share["before_first_model"],
        peer_share["before_first_model"],
        "requests",
        higher_is_better=False,
    )
    table.add(
        "model versions answered with",
        ours_share["versions_seen"],
        peer_share["versions_seen"],
        "versions",
    )
    table.print()
    open_ours, open_peer = summary["open"]["triton"], summary["open"]["torch"]
    target = TARGET_P99_TRAINING_MS if args.trainer_beside else TARGET_P99_MS
    ratio = open_peer["p99"] / open_ours["p99"] if open_ours["p99"] else float("nan")
    loads = [r.load_average for side in results.values() for rs in side.values() for r in rs]
    load_range = (min(a for a, _ in loads), max(b for _, b in loads))
    met = {
        "p99": open_ours["p99"] <= target and open_ours["errors"] == 0,
        "model_share": ours_share["model_served_share"] >= TARGET_MODEL_SHARE,
        "ratio": ratio >= TARGET_RATIO,
    }
    print(
        f"aim p99 <= {target:g} ms at {args.rate:g} req/s on Triton: "
        f"{'met' if met['p99'] else 'missed'} (median p99 {open_ours['p99']:.1f} ms, "
        f"in-process {open_peer['p99']:.1f} ms, ratio {ratio:.2f} "
        f"{'>=' if met['ratio'] else '<'} {TARGET_RATIO}); "
        f"model-served after the first model {100 * ours_share['model_served_share']:.2f} % "
        f"({ours_share['fallbacks_after_first_model']:.0f} fallbacks of "
        f"{ours_share['after_first_model']:.0f}; aim >= {100 * TARGET_MODEL_SHARE:g} %), "
        f"{ours_share['before_first_model']:.0f} answers before it; "
        f"{versions} versions published; load average {load_range[0]:.1f}-{load_range[1]:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    for side, counts in reasons.items():
        listed = ", ".join(f"{reason} {count}" for reason, count in sorted(counts.items()))
        print(f"fallbacks by reason ({side}): {listed or 'none'}")
    table.write_json(
        "ranking-trainer-beside" if args.trainer_beside else "ranking",
        {
            "options": {k: v for k, v in vars(args).items() if k != "handler"},
            "results": summary,
            "model_share": shares,
            "fallback_reasons": reasons,
            "versions_published": versions,
            "aim": {
                "p99_ms": target,
                "rate": args.rate,
                "model_share": TARGET_MODEL_SHARE,
                "ratio": TARGET_RATIO,
                "met": met,
            },
            # The machine is shared: the load says how much of it this run really had.
            "load_average_range": load_range,
            "load_average_after": os.getloadavg(),
        },
    )
    return 0
