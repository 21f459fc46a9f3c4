"""`freshrank demo`: the whole product on one machine, with a live view and a final report.

Starts the local stack (broker, Triton, feature, trainer, ranking), replays a stream into
Kafka at a steady rate, drives the ranking API with an open-loop load generator while the
trainer learns and exports, then reports what happened, and checks it: at least two model
versions served, prequential HR@10 above the popularity baseline, zero errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from freshrank.bench.report import model_served, percentile
from freshrank.core.codec import InteractionEvent
from freshrank.core.contracts import metrics
from freshrank.core.contracts.quality import QualityMetric
from freshrank.core.kafka import EventProducer
from freshrank.core.model_repo import ExportRecord
from freshrank.demo.load import LoadResult, RankLoad
from freshrank.demo.observe import Snapshot, scrape
from freshrank.demo.report import print_report, write_chart, write_json
from freshrank.sim import replay
from freshrank.stack import LocalStack, StackConfig

__all__ = ["DemoConfig", "run_demo"]

# Metrics the view reads (exported by freshrank.trainer and freshrank.ranking).
EVENTS_TRAINED = metrics.TRAINER_EVENTS_TRAINED
DEAD_LETTERS = metrics.TRAINER_EVENTS_DEAD_LETTERED
ROLLING_HR = metrics.labelled(metrics.TRAINER_PREQUENTIAL, metric=QualityMetric.HR_AT_10)
FALLBACKS = metrics.RANKING_FALLBACKS
MODEL_SHARE_AIM = 0.99
FRESHNESS_P50_AIM_S = 5.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoConfig:
    dataset: str = "synthetic"
    events: int = 30_000
    rate: float = 300.0  # events/s into Kafka
    request_rate: float = 20.0  # ranking requests/s
    max_seconds: float = 240.0
    architecture: str = "sasrec"
    export_interval_s: float = 8.0
    workdir: Path = Path("demo-report")
    live: bool = True


@dataclasses.dataclass
class _Run:
    sent: int = 0
    replay_done: bool = False
    snapshots: list[Snapshot] = dataclasses.field(default_factory=list)
    fallback_reasons: dict[str, int] = dataclasses.field(default_factory=dict)


def run_demo(
    config: DemoConfig,
    events: Callable[[], Iterable[InteractionEvent]],
    users: list[str],
    baseline_hr: Callable[[], float],
    console: Console | None = None,
    table_rows: int = 4096,
) -> dict[str, Any]:
    console = console or Console()
    stack_config = StackConfig(
        workdir=config.workdir / "stack",
        name="demo",
        architecture=config.architecture,
        export_interval_s=config.export_interval_s,
        extra_settings={"num_users": table_rows, "num_items": table_rows, "export_every_events": 0},
    )
    console.print("[bold]starting the stack[/] (broker, Triton, feature, trainer, ranking)...")
    with LocalStack(stack_config) as stack:
        for name, url in stack.urls().items():
            console.print(f"  {name:12} {url}")
        state = _Run()
        load = RankLoad(stack.url("ranking"), users, rate=config.request_rate)
        started = time.monotonic()

        def produce() -> None:
            # The producer lives only in this thread: gone before the broker stops.
            producer = EventProducer(stack.broker.bootstrap, "demo.events")

            def progress(sent: int) -> None:
                state.sent = sent

            replay(events(), producer, rate=config.rate, on_progress=progress, progress_every=200)
            state.replay_done = True

        threading.Thread(target=produce, name="replay", daemon=True).start()
        result = asyncio.run(_drive(config, stack, state, load, started, console))
        report = _report(config, state, result, baseline_hr(), started)
    config.workdir.mkdir(parents=True, exist_ok=True)
    write_chart(
        [(s.seconds, s.trainer.get(ROLLING_HR, 0.0)) for s in state.snapshots],
        report["popularity_hr_at_10"],
        result.timeline,
        [(e.exported_at_ms / 1000 - report["started_epoch_s"], e.version)
         for e in (state.snapshots[-1].exports if state.snapshots else [])],
        config.workdir,
    )  # fmt: skip
    write_json(report, config.workdir)
    print_report(report, console)
    console.print(
        f"report: {config.workdir / 'report.json'}, chart: {config.workdir / 'report.png'}"
    )
    return report


async def _drive(
    config: DemoConfig,
    stack: LocalStack,
    state: _Run,
    load: RankLoad,
    started: float,
    console: Console,
) -> LoadResult:
    load_task = asyncio.create_task(load.run())
    model = f"{stack.config.name}-ranker"
    with Live(console=console, refresh_per_second=2, transient=not config.live) as live:
        while time.monotonic() - started < config.max_seconds:
            await asyncio.sleep(1.0)
            snapshot = await asyncio.to_thread(
                Snapshot.take,
                time.monotonic() - started,
                stack.url("trainer"),
                stack.model_repository,
                model,
            )
            state.snapshots.append(snapshot)
            live.update(_view(config, state, snapshot, load.result))
            if _finished(state, snapshot, load.result):
                break
    load.stop()
    result = await load_task
    state.fallback_reasons = _fallback_reasons(
        await asyncio.to_thread(scrape, stack.url("ranking"))
    )
    return result


def _fallback_reasons(ranking_metrics: dict[str, float]) -> dict[str, int]:
    """Fallback answers by reason, as the ranking service counted them."""
    prefix = FALLBACKS + '{reason="'
    return {
        key[len(prefix) : -2]: int(value)
        for key, value in ranking_metrics.items()
        if key.startswith(prefix) and value > 0
    }


def _finished(state: _Run, snapshot: Snapshot, load: LoadResult) -> bool:
    """All events trained, exported, and that newest version seen by the clients."""
    trained = snapshot.trainer.get(EVENTS_TRAINED, 0.0)
    handled = trained + snapshot.trainer.get(DEAD_LETTERS, 0.0)
    if not (state.replay_done and handled >= state.sent and len(snapshot.exports) >= 2):
        return False
    newest = snapshot.exports[-1]
    return newest.events_covered >= trained and newest.version in load.versions_served


def _view(config: DemoConfig, state: _Run, snapshot: Snapshot, load: LoadResult) -> Table:
    recent = load.latencies_ms[-200:]
    exports = snapshot.exports
    freshness = _freshness_series(exports)
    table = Table(title=f"freshrank demo ({config.dataset}, {snapshot.seconds:.0f}s)")
    table.add_column("what")
    table.add_column("now", justify="right")
    rows = [
        ("events sent -> Kafka", f"{state.sent:,} / {config.events:,}"),
        ("events trained", f"{snapshot.trainer.get(EVENTS_TRAINED, 0):,.0f}"),
        ("dead-lettered", f"{snapshot.trainer.get(DEAD_LETTERS, 0):,.0f}"),
        ("model versions exported", str(len(exports))),
        ("versions served (seen by clients)", ", ".join(map(str, sorted(load.versions_served)))),
        ("rolling HR@10 (prequential)", f"{snapshot.trainer.get(ROLLING_HR, 0.0):.3f}"),
        ("freshness, last export", f"{freshness[-1]:.1f} s" if freshness else "-"),
        ("ranking requests", f"{load.requests:,}"),
        ("ranking p95 (last 200)", f"{percentile(recent, 95):.1f} ms" if recent else "-"),
        ("fallbacks / errors", f"{load.fallbacks} / {load.errors}"),
    ]
    for what, value in rows:
        table.add_row(what, value)
    return table


def _freshness_series(exports: list[ExportRecord]) -> list[float]:
    """Measured freshness (event ingest -> READY on Triton) of each export, in seconds."""
    return [e.timings.freshness_s for e in exports if e.timings is not None]


def _report(
    config: DemoConfig, state: _Run, load: LoadResult, baseline: float, started: float
) -> dict[str, Any]:
    last = state.snapshots[-1] if state.snapshots else None
    trainer = last.trainer if last else {}
    exports = last.exports if last else []
    freshness = _freshness_series(exports)
    hr = trainer.get(ROLLING_HR, 0.0)
    errors = load.errors
    served = model_served([not fallback for _, _, fallback in sorted(load.timeline)])
    freshness_p50 = percentile(freshness, 50) if freshness else float("nan")
    checks = {
        "at least two model versions served": len(load.versions_served) >= 2,
        "HR@10 above the popularity baseline": hr > baseline,
        "zero errors": errors == 0,
    }
    summary: dict[str, Any] = {
        "events sent": state.sent,
        "events trained": trainer.get(EVENTS_TRAINED, 0.0),
        "dead-lettered": trainer.get(DEAD_LETTERS, 0.0),
        "versions exported": len(exports),
        "versions served": len(load.versions_served),
        "prequential HR@10 (trainer, rolling)": hr,
        "popularity baseline HR@10": baseline,
        "freshness p50 (s)": freshness_p50,
        "freshness p95 (s)": percentile(freshness, 95) if freshness else float("nan"),
        "ranking requests": load.requests,
        "ranking p50 (ms)": percentile(load.latencies_ms, 50),
        "ranking p99 (ms)": percentile(load.latencies_ms, 99),
        "fallbacks": load.fallbacks,
        "fallbacks before the first model": served.before_first_model,
        "model-served after the first model (%)": 100 * served.share,
        "fallbacks by reason": ", ".join(
            f"{reason} {count:,}" for reason, count in sorted(state.fallback_reasons.items())
        )
        or "-",
        "errors": errors,
    }
    summary.update({f"check: {k}": "PASS" if ok else "FAIL" for k, ok in checks.items()})
    # Goals of the serving path (issue 13), reported but not enforced: a shared machine's
    # load decides whether one run meets them.
    aims = {
        f"model-served after the first model >= {MODEL_SHARE_AIM:.0%}": served.share
        >= MODEL_SHARE_AIM,
        f"freshness p50 <= {FRESHNESS_P50_AIM_S:g} s": freshness_p50 <= FRESHNESS_P50_AIM_S,
    }
    summary.update({f"aim: {k}": "met" if ok else "missed" for k, ok in aims.items()})
    return {
        "dataset": config.dataset,
        "config": {k: str(v) for k, v in dataclasses.asdict(config).items()},
        "started_epoch_s": time.time() - (time.monotonic() - started),
        "summary": summary,
        "passed": all(checks.values()),
        "popularity_hr_at_10": baseline,
        "exports": [e.to_json() for e in exports],
        "error_samples": load.error_samples,
        "latency_ms": {
            "median": statistics.median(load.latencies_ms) if load.latencies_ms else None
        },
        "hr_series": [(s.seconds, s.trainer.get(ROLLING_HR, 0.0)) for s in state.snapshots],
    }
