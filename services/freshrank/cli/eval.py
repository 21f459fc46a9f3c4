"""`freshrank eval`: prequential evaluation (HR@10/NDCG@10) of models and baselines on a stream."""

from __future__ import annotations

import argparse

from freshrank.cli.common import NotAvailable, Subparsers, add_command


def register(subparsers: Subparsers) -> None:
    parser = add_command(
        subparsers,
        "eval",
        "prequential evaluation (HR@10/NDCG@10) of models and baselines on a stream",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    raise NotAvailable("not yet available (issue #3)")
