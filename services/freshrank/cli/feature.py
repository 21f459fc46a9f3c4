"""`freshrank feature`: run the feature service (Kafka ingest + feature API on port 8081)."""

from __future__ import annotations

import argparse

from freshrank.cli.common import Subparsers, add_command
from freshrank.core.settings import add_arguments


def register(subparsers: Subparsers) -> None:
    from freshrank.feature.settings import FeatureSettings

    parser = add_command(
        subparsers, "feature", "run the feature service (Kafka ingest + feature API on port 8081)"
    )
    add_arguments(parser, FeatureSettings)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from freshrank.core.logs import setup_logging
    from freshrank.core.settings import load_settings
    from freshrank.core.telemetry import setup_tracing
    from freshrank.feature.service import run_service
    from freshrank.feature.settings import FeatureSettings

    settings = load_settings(FeatureSettings, args)
    setup_logging(settings.log_level)
    setup_tracing(
        "freshrank-feature",
        otlp_endpoint=settings.otlp_endpoint,
        sample_ratio=settings.trace_sample_ratio,
    )
    asyncio.run(run_service(settings))
    return 0
