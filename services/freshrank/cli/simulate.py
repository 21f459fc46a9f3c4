"""`freshrank simulate`: replay a synthetic stream, a dataset or any interaction file into Kafka."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from freshrank.cli.common import Subparsers, add_command
from freshrank.core.codec import InteractionEvent
from freshrank.core.settings import CommonSettings, add_arguments, load_settings


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "simulate",
        "replay events into <name>.events: a synthetic stream with planted tastes and a drift, "
        "MovieLens-100K, Amazon Beauty or any CSV/TSV interaction file, in timestamp order",
    )
    parser.add_argument(
        "--source",
        default="synthetic",
        help="synthetic, ml-100k, amazon-beauty, or the path of a CSV/TSV interaction file with "
        "a header (read the same way as `freshrank eval --dataset`)",
    )
    parser.add_argument("--events", type=int, default=50_000, help="events to send (files: cap)")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="holds ml-100k/, amazon-beauty/"
    )
    parser.add_argument("--separator", default=None, help="file: column separator")
    parser.add_argument("--user-column", default=None, help="file: user column (default: by name)")
    parser.add_argument("--item-column", default=None, help="file: item column (default: by name)")
    parser.add_argument("--time-column", default=None, help="file: time column (default: by name)")
    parser.add_argument(
        "--time-unit", default="auto", choices=["auto", "s", "ms", "us", "ns", "iso"]
    )
    parser.add_argument("--rate", type=float, default=0.0, help="events/s; 0 = as fast as possible")
    parser.add_argument("--users", type=int, default=1000, help="synthetic: users")
    parser.add_argument("--items", type=int, default=500, help="synthetic: items")
    parser.add_argument("--topics", type=int, default=10, help="synthetic: taste topics")
    parser.add_argument(
        "--drift-at", type=float, default=0.5, help="synthetic: drift point as a fraction; 0 = none"
    )
    parser.add_argument("--seed", type=int, default=7, help="synthetic: random seed")
    add_arguments(parser, CommonSettings)
    parser.set_defaults(handler=run)


def source_events(args: argparse.Namespace) -> Iterator[InteractionEvent]:
    from freshrank.sim import SyntheticConfig, SyntheticStream, movielens_events
    from freshrank.sim.files import FileFormat, file_events, resolve_source

    if args.source == "ml-100k":
        path = args.data_dir / "ml-100k" / "u.data" if args.data_dir else None
        return movielens_events(path, limit=args.events)
    if args.source != "synthetic":
        path, fmt = resolve_source(args.source, args.data_dir)
        if any((args.separator, args.user_column, args.item_column, args.time_column)) or (
            args.time_unit != "auto"
        ):
            fmt = FileFormat(
                separator=args.separator,
                user_column=args.user_column,
                item_column=args.item_column,
                time_column=args.time_column,
                time_unit=args.time_unit,
            )
        return file_events(path, fmt, limit=args.events)
    config = SyntheticConfig(
        users=args.users,
        items=args.items,
        topics=args.topics,
        events=args.events,
        drift_at=args.drift_at or None,
        seed=args.seed,
    )
    return SyntheticStream(config).events()


def run(args: argparse.Namespace) -> int:
    from freshrank.core.kafka import (
        EventProducer,
        credentials_from_settings,
        ensure_topics,
        security_config,
    )
    from freshrank.sim import replay

    try:
        events = source_events(args)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"cannot read --source {args.source}: {error}") from None
    settings = load_settings(CommonSettings, args)
    topics = [settings.events_topic, settings.dlq_topic]
    credentials = credentials_from_settings(settings)
    ensure_topics(settings.bootstrap_servers, topics, credentials=credentials)
    producer = EventProducer(
        settings.bootstrap_servers, settings.events_topic, **security_config(settings)
    )
    start = time.monotonic()

    def progress(sent: int) -> None:
        print(f"\rsent {sent:,} events", end="", file=sys.stderr, flush=True)

    sent = replay(events, producer, rate=args.rate or None, on_progress=progress)
    elapsed = time.monotonic() - start
    print(
        f"\n{sent:,} {args.source} events -> {settings.events_topic} "
        f"in {elapsed:.1f}s ({sent / max(elapsed, 1e-9):,.0f} events/s)",
        file=sys.stderr,
    )
    return 0
