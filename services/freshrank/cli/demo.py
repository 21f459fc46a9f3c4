"""`freshrank demo`: the whole stack locally, a replayed stream, a live view and a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from freshrank.cli.common import Subparsers, add_command
from freshrank.core.service_settings import ARCHITECTURE_NAMES


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "demo",
        "run the whole stack locally (broker, Triton, feature store, trainer, ranking API), "
        "replay a stream, load the ranking API, show a live view and write a final report",
    )
    parser.add_argument("--dataset", choices=["synthetic", "ml-100k"], default="synthetic")
    parser.add_argument("--events", type=int, default=30_000, help="events to replay (cap)")
    parser.add_argument("--rate", type=float, default=300.0, help="events/s into Kafka")
    parser.add_argument("--request-rate", type=float, default=20.0, help="ranking requests/s")
    parser.add_argument("--max-seconds", type=float, default=240.0, help="hard stop")
    parser.add_argument("--architecture", choices=ARCHITECTURE_NAMES, default="sasrec")
    parser.add_argument("--export-interval", type=float, default=8.0, help="seconds")
    parser.add_argument("--report-dir", type=Path, default=Path("demo-report"))
    parser.add_argument("--no-live", action="store_true", help="no live view (CI, logs)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from freshrank.demo import DemoConfig, popularity_hr_at_10, run_demo, stream_for

    config = DemoConfig(
        dataset=args.dataset,
        events=args.events,
        rate=args.rate,
        request_rate=args.request_rate,
        max_seconds=args.max_seconds,
        architecture=args.architecture,
        export_interval_s=args.export_interval,
        workdir=args.report_dir,
        live=not args.no_live,
    )
    events, users = stream_for(config)
    report = run_demo(config, events, users, lambda: popularity_hr_at_10(events()))
    return 0 if report["passed"] else 1
