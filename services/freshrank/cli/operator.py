"""`freshrank operator`: run the Kopf operator that reconciles RecommenderDeployments."""

from __future__ import annotations

import argparse

from freshrank.cli.common import Subparsers, add_command
from freshrank.core.settings import add_arguments


def register(subparsers: Subparsers) -> None:
    from freshrank_operator.config import OperatorConfig

    parser = add_command(
        subparsers,
        "operator",
        "run the Kopf operator that reconciles RecommenderDeployments",
        description=(
            "Watch RecommenderDeployments (all namespaces, or --namespaces) and keep their "
            "feature service, trainer, Triton and ranking API applied, their Kafka topics "
            "created, their status current and the ranking replicas sized to the p95 target. "
            "Serves /healthz, /readyz and /metrics on --metrics-port."
        ),
    )
    add_arguments(parser, OperatorConfig)
    parser.add_argument(
        "--print-crd",
        action="store_true",
        help="print the RecommenderDeployment CRD (YAML) and exit",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from freshrank.core.settings import load_settings
    from freshrank.core.telemetry import setup_tracing
    from freshrank_operator.config import OperatorConfig
    from freshrank_operator.crd import crd_path
    from freshrank_operator.logs import setup_operator_logging
    from freshrank_operator.runtime import run_operator

    if args.print_crd:
        print(crd_path().read_text(), end="")
        return 0
    config = load_settings(OperatorConfig, args)
    setup_operator_logging(config.log_level)
    setup_tracing(
        "freshrank-operator",
        otlp_endpoint=config.otlp_endpoint,
        sample_ratio=config.trace_sample_ratio,
    )
    asyncio.run(run_operator(config))
    return 0
