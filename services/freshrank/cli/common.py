"""What the subcommand modules share."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["NotAvailable", "Subparsers", "add_command", "add_command_group"]

Subparsers = Any  # argparse's _SubParsersAction is private


class NotAvailable(RuntimeError):
    """A command whose implementation has not landed yet (the message says which issue owns it)."""


def add_command(
    subparsers: Subparsers, name: str, help: str, description: str | None = None
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help,
        description=description or help,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    return parser


def add_command_group(
    subparsers: Subparsers, name: str, help: str, *, dest: str, metavar: str
) -> Subparsers:
    """A command whose subcommands (one required, named into ``args.<dest>``) do the work."""
    parser = add_command(subparsers, name, help)
    return parser.add_subparsers(dest=dest, metavar=metavar, required=True)
