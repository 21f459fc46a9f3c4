"""`freshrank demo`: the whole stack locally, a replayed stream, a live view and a report."""

from __future__ import annotations

import argparse

from freshrank.cli.common import NotAvailable, Subparsers, add_command


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "demo",
        "run the whole stack locally with a replayed stream, a live view and a report",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise NotAvailable("not yet available (issue #7)")
