"""`freshrank operator|feature|trainer|ranking`: the four roles of the image, from one table.

Every role is the same skeleton: its settings class becomes flags (and ``FRESHRANK_*`` env
vars), then logging and tracing are set up and the role's ``run_*(settings)`` coroutine runs
until stopped. Only the table below differs. The role's service module is imported when the
role runs, so ``freshrank ROLE --help`` imports nothing but the settings class.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from typing import Any

from freshrank.cli.common import Subparsers, add_command
from freshrank.core.settings import Settings, add_arguments

__all__ = ["ROLES", "Role", "register"]


@dataclasses.dataclass(frozen=True)
class Role:
    name: str
    help: str
    settings: str  # "module:Class", a subclass of core.settings.CommonSettings
    run: str  # "module:function", an async function of the settings
    description: str | None = None
    logging: str = "freshrank.core.logs:setup_logging"  # "module:function" of the log level

    def settings_class(self) -> type[Settings]:
        cls: type[Settings] = _load(self.settings)
        return cls


ROLES = (
    Role(
        name="operator",
        help="run the Kopf operator that reconciles RecommenderDeployments",
        description=(
            "Watch RecommenderDeployments (all namespaces, or --namespaces) and keep their "
            "feature service, trainer, Triton and ranking API applied, their Kafka topics "
            "created, their status current and the ranking replicas sized to the p95 target. "
            "Serves /healthz, /readyz and /metrics on --metrics-port."
        ),
        settings="freshrank_operator.config:OperatorConfig",
        run="freshrank_operator.runtime:run_operator",
        logging="freshrank_operator.logs:setup_operator_logging",
    ),
    Role(
        name="feature",
        help="run the feature service (Kafka ingest + feature API on port 8081)",
        settings="freshrank.core.service_settings:FeatureSettings",
        run="freshrank.feature.service:run_service",
    ),
    Role(
        name="trainer",
        help="run the trainer (Kafka stream -> incremental training -> Triton export)",
        settings="freshrank.core.service_settings:TrainerSettings",
        run="freshrank.trainer.service:run_service",
    ),
    Role(
        name="ranking",
        help="run the ranking API (port 8080) in front of Triton",
        settings="freshrank.core.service_settings:RankingSettings",
        run="freshrank.ranking.service:run_service",
    ),
)


def _load(target: str) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def register(subparsers: Subparsers) -> None:
    for role in ROLES:
        parser = add_command(subparsers, role.name, role.help, role.description)
        add_arguments(parser, role.settings_class())
        if role.name == "operator":
            parser.add_argument(
                "--print-crd",
                action="store_true",
                help="print the RecommenderDeployment CRD (YAML) and exit",
            )
        parser.set_defaults(handler=_handler(role))


def _handler(role: Role) -> Any:
    def handler(args: argparse.Namespace) -> int:
        return run(role, args)

    return handler


def run(role: Role, args: argparse.Namespace) -> int:
    import asyncio

    from freshrank.core.settings import load_settings
    from freshrank.core.telemetry import setup_tracing

    if getattr(args, "print_crd", False):
        from freshrank_operator.crd import crd_path

        print(crd_path().read_text(), end="")
        return 0
    settings: Any = load_settings(role.settings_class(), args)
    _load(role.logging)(settings.log_level)
    setup_tracing(
        f"freshrank-{role.name}",
        otlp_endpoint=settings.otlp_endpoint,
        sample_ratio=settings.trace_sample_ratio,
    )
    asyncio.run(_load(role.run)(settings))
    return 0
