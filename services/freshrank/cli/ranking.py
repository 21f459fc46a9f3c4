"""`freshrank ranking`: run the ranking API (port 8080) in front of Triton."""

from __future__ import annotations

import argparse

from freshrank.cli.common import Subparsers, add_command
from freshrank.core.settings import add_arguments


def register(subparsers: Subparsers) -> None:
    from freshrank.ranking.settings import RankingSettings

    parser = add_command(
        subparsers, "ranking", "run the ranking API (port 8080) in front of Triton"
    )
    add_arguments(parser, RankingSettings)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from freshrank.core.logs import setup_logging
    from freshrank.core.settings import load_settings
    from freshrank.core.telemetry import setup_tracing
    from freshrank.ranking.service import run_service
    from freshrank.ranking.settings import RankingSettings

    settings = load_settings(RankingSettings, args)
    setup_logging(settings.log_level)
    setup_tracing(
        "freshrank-ranking",
        otlp_endpoint=settings.otlp_endpoint,
        sample_ratio=settings.trace_sample_ratio,
    )
    asyncio.run(run_service(settings))
    return 0
