"""`freshrank operator`: run the Kopf operator that reconciles RecommenderDeployments."""

from __future__ import annotations

import argparse

from freshrank.cli.common import NotAvailable, Subparsers, add_command


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "operator", "run the Kopf operator that reconciles RecommenderDeployments"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise NotAvailable("not yet available (issue #6)")
