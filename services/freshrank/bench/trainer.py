"""Trainer benchmark: events/s trained end to end from Kafka vs the same loop in memory; freshness.

Throughput: the same synthetic events are (a) produced to a fresh topic on the broker and
trained by the trainer's loop (consume, decode, test-then-train, checkpoints, commits), timed
from partition assignment to the last event trained, and (b) trained by the same learner
configuration straight from in-memory micro-batches. Ratio = (a) / (b). On a machine with CUDA
both run again on the GPU.

Freshness: the whole trainer service runs against the broker and a real Triton while events
arrive at a steady rate; each export's manifest record carries its freshness (Kafka ingest time
of the newest covered event -> version READY on Triton); p50/p95 over the exports.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from freshrank.bench.report import BenchTable, percentile

if TYPE_CHECKING:
    from freshrank.core.codec import InteractionEvent
    from freshrank.trainer.settings import TrainerSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=20_000, help="events per throughput run")
    parser.add_argument("--batch-size", type=int, default=256, help="events per micro-batch")
    parser.add_argument("--architecture", default="mf", help="model architecture")
    parser.add_argument("--dim", type=int, default=32, help="embedding dimension")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (median)")
    parser.add_argument(
        "--freshness-seconds", type=float, default=60.0, help="freshness run length; 0 skips it"
    )
    parser.add_argument("--rate", type=float, default=500.0, help="events/s in the freshness run")
    parser.add_argument("--export-interval", type=float, default=2.0, help="seconds per export")
    parser.add_argument(
        "--bootstrap-servers", default="", help="use this broker instead of an embedded one"
    )
    parser.add_argument(
        "--device",
        default="auto",
        choices=["auto", "cpu", "cuda"],
        help="throughput on: 'auto' (CPU, and CUDA when present), 'cpu', or 'cuda' only",
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from freshrank.bench.ranking import require_device
    from freshrank.embedded import EmbeddedBroker, EmbeddedTriton

    require_device(args.device)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.device == "auto":
        devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    else:
        devices = [args.device]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        broker = None if args.bootstrap_servers else EmbeddedBroker(tmp / "broker").start()
        bootstrap = args.bootstrap_servers or (broker.bootstrap if broker else "")
        try:
            throughput = {d: _throughput(args, bootstrap, tmp, d) for d in devices}
            freshness: list[dict[str, float]] = []
            if args.freshness_seconds > 0:
                with EmbeddedTriton(tmp / "triton", tmp / "models") as triton:
                    freshness = asyncio.run(_freshness(args, bootstrap, tmp, triton.http_url))
        finally:
            if broker is not None:
                broker.stop()
    return _report(args, throughput, freshness)


def _settings(args: argparse.Namespace, bootstrap: str, tmp: Path, **extra: Any) -> TrainerSettings:
    from freshrank.trainer.settings import TrainerSettings

    values: dict[str, Any] = {
        "name": f"bench{uuid.uuid4().hex[:8]}",
        "bootstrap_servers": bootstrap,
        "model_repository": str(tmp / "models"),
        "architecture": args.architecture,
        "dim": args.dim,
        "num_users": 2048,
        "num_items": 1024,
        "batch_size": args.batch_size,
        "min_events": 0,
    }
    values.update(extra)
    values["checkpoint_dir"] = str(tmp / values["name"] / "checkpoints")
    return TrainerSettings(**values)


def _events(count: int) -> list[InteractionEvent]:
    from freshrank.sim import SyntheticConfig, SyntheticStream

    config = SyntheticConfig(users=1000, items=500, events=count, drift_at=0.5)
    return list(SyntheticStream(config).events())


def _throughput(
    args: argparse.Namespace, bootstrap: str, tmp: Path, device: str
) -> dict[str, list[float]]:
    events = _events(args.events)
    results: dict[str, list[float]] = {"kafka": [], "memory": []}
    for _ in range(args.rounds):
        settings = _settings(args, bootstrap, tmp, device=device, triton_url="")
        # Alternate which side goes first so neither always runs on a cooler machine.
        if len(results["kafka"]) % 2:
            results["memory"].append(_in_memory(settings, events))
            results["kafka"].append(asyncio.run(_from_kafka(settings, events)))
        else:
            results["kafka"].append(asyncio.run(_from_kafka(settings, events)))
            results["memory"].append(_in_memory(settings, events))
    return results


async def _from_kafka(settings: TrainerSettings, events: list[InteractionEvent]) -> float:
    """Events/s from partition assignment to the last event trained (checkpoints included)."""
    from prometheus_client import CollectorRegistry

    from freshrank.core.kafka import EventProducer, ensure_topics
    from freshrank.trainer.checkpoint import CheckpointStore
    from freshrank.trainer.learning import build_learner
    from freshrank.trainer.loop import TrainerLoop
    from freshrank.trainer.metrics import TrainerMetrics

    ensure_topics(settings.bootstrap_servers, [settings.events_topic, settings.dlq_topic])
    producer = EventProducer(settings.bootstrap_servers, settings.events_topic)
    for event in events:
        producer.send(event)
    producer.flush()
    learner = build_learner(settings)
    loop = TrainerLoop(
        settings,
        learner,
        CheckpointStore(Path(settings.checkpoint_dir)),
        TrainerMetrics(CollectorRegistry()),
    )
    stop = asyncio.Event()
    task = asyncio.ensure_future(loop.run(stop))
    # Polling counters the loop owns keeps the measured code free of benchmark hooks.
    while not loop.assigned:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    start = time.perf_counter()
    while learner.events_trained < len(events):  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - start
    stop.set()
    await task
    return len(events) / elapsed


def _in_memory(settings: TrainerSettings, events: list[InteractionEvent]) -> float:
    """The same learner on the same micro-batches, on a worker thread like the trainer's."""
    from concurrent.futures import ThreadPoolExecutor

    from freshrank.trainer.learning import build_learner

    learner = build_learner(settings)
    batches = [
        events[i : i + settings.batch_size] for i in range(0, len(events), settings.batch_size)
    ]

    def train_all() -> float:
        start = time.perf_counter()
        for batch in batches:
            learner.step(batch)
        return len(events) / (time.perf_counter() - start)

    with ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(train_all).result()


async def _freshness(
    args: argparse.Namespace, bootstrap: str, tmp: Path, triton_url: str
) -> list[dict[str, float]]:
    """Per export: freshness, and its two parts (stream -> staged model, staged -> READY)."""
    from freshrank.core.kafka import EventProducer, ensure_topics
    from freshrank.core.model_repo import ModelRepository
    from freshrank.embedded import free_port
    from freshrank.sim import replay
    from freshrank.trainer.service import run_service

    settings = _settings(
        args,
        bootstrap,
        tmp,
        triton_url=triton_url,
        triton_live=True,  # as the local stack serves: versions swapped in place
        export_interval_s=args.export_interval,
        port=free_port(),
        host="127.0.0.1",
    )
    ensure_topics(bootstrap, [settings.events_topic, settings.dlq_topic])
    events = _events(int(args.rate * args.freshness_seconds))
    stop = asyncio.Event()
    service = asyncio.ensure_future(run_service(settings, stop, handle_signals=False))
    producer = EventProducer(bootstrap, settings.events_topic)
    await asyncio.to_thread(replay, events, producer, rate=args.rate)
    await asyncio.sleep(2 * args.export_interval)
    stop.set()
    await service
    records = ModelRepository(Path(settings.model_repository), settings.triton_model).manifest()
    keys = ("freshness_s", "staged_s", "publish_s")
    return [{key: getattr(r.timings, key) for key in keys} for r in records if r.timings]


def _report(
    args: argparse.Namespace,
    throughput: dict[str, dict[str, list[float]]],
    freshness: list[dict[str, float]],
) -> int:
    import statistics

    table = BenchTable(
        f"trainer: {args.architecture} dim {args.dim}, batch {args.batch_size} (medians)",
        ours="from Kafka",
        peer="in-memory loop",
    )
    for device, results in throughput.items():
        table.add(
            f"events/s trained ({device})",
            statistics.median(results["kafka"]),
            statistics.median(results["memory"]),
            "events/s",
        )
    labels = {
        "freshness_s": "freshness (ingest -> READY)",
        "staged_s": "  part: ingest -> model staged",
        "publish_s": "  part: staged -> READY (Triton load)",
    }
    for key, label in labels.items():
        values = [f[key] for f in freshness]
        for q in (50, 95) if values else ():
            table.add(f"{label} p{q}", percentile(values, q), None, "s", higher_is_better=False)
    table.print()
    extra = {
        "args": {k: v for k, v in vars(args).items() if isinstance(v, int | float | str)},
        "throughput": throughput,
        "freshness": freshness,
    }
    path = table.write_json("trainer", extra)
    print(f"wrote {path}")
    return 0


__all__ = ["add_arguments", "run"]
