"""`freshrank ranking`: run the ranking API (port 8080) in front of Triton."""

from __future__ import annotations

import argparse

from freshrank.cli.common import NotAvailable, Subparsers, add_command


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers, "ranking", "run the ranking API (port 8080) in front of Triton"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise NotAvailable("not yet available (issue #5)")
