"""`freshrank trainer`: run the trainer (Kafka stream -> incremental training -> Triton export)."""

from __future__ import annotations

import argparse

from freshrank.cli.common import Subparsers, add_command
from freshrank.core.settings import add_arguments


def register(subparsers: Subparsers) -> None:
    from freshrank.trainer.settings import TrainerSettings

    parser = add_command(
        subparsers,
        "trainer",
        "run the trainer (Kafka stream -> incremental training -> Triton export)",
    )
    add_arguments(parser, TrainerSettings)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from freshrank.core.logs import setup_logging
    from freshrank.core.settings import load_settings
    from freshrank.core.telemetry import setup_tracing
    from freshrank.trainer.service import run_service
    from freshrank.trainer.settings import TrainerSettings

    settings = load_settings(TrainerSettings, args)
    setup_logging(settings.log_level)
    setup_tracing(
        "freshrank-trainer",
        otlp_endpoint=settings.otlp_endpoint,
        sample_ratio=settings.trace_sample_ratio,
    )
    asyncio.run(run_service(settings))
    return 0
