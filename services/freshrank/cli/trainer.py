"""`freshrank trainer`: run the trainer (Kafka stream -> incremental training -> Triton export)."""

from __future__ import annotations

import argparse

from freshrank.cli.common import NotAvailable, Subparsers, add_command


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "trainer",
        "run the trainer (Kafka stream -> incremental training -> Triton export)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise NotAvailable("not yet available (issue #3)")
