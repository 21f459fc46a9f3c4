"""`freshrank feature`: run the feature service (Kafka ingest + feature API on port 8081)."""

from __future__ import annotations

import argparse

from freshrank.cli.common import NotAvailable, Subparsers, add_command


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "feature", "run the feature service (Kafka ingest + feature API on port 8081)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise NotAvailable("not yet available (issue #4)")
