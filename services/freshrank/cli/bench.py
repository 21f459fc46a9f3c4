"""`freshrank bench NAME`: benchmarks that measure us and a peer in the same run."""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

from freshrank.cli.common import NotAvailable, Subparsers, add_command, add_command_group

# name -> (module, one-line description, issue that owns it)
BENCHMARKS: dict[str, tuple[str, str, int]] = {
    "codec": ("freshrank.bench.codec", "event encode+decode rate vs raw protobuf", 2),
    "kafka": ("freshrank.bench.kafka", "produce->consume through our helpers vs bare client", 2),
    "trainer": ("freshrank.bench.trainer", "events/s trained from Kafka vs in-memory loop", 3),
    "feature": ("freshrank.bench.feature", "feature API latency/throughput vs bare SQL", 4),
    "ranking": ("freshrank.bench.ranking", "ranking API on Triton vs in-process PyTorch", 5),
    "operator": ("freshrank.bench.operator", "CR create -> children, reconcile throughput", 6),
}


def _load(module_name: str) -> ModuleType | None:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return None


def register(subparsers: Subparsers) -> None:
    names = add_command_group(
        subparsers,
        "bench",
        "run a benchmark (prints a table with the peer and the ratio, writes JSON)",
        dest="benchmark",
        metavar="NAME",
    )
    for name, (module_name, description, issue) in BENCHMARKS.items():
        sub = add_command(names, name, description)
        module = _load(module_name)
        if module is None:
            sub.set_defaults(handler=_not_available(issue))
            continue
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)


def _not_available(issue: int) -> object:
    def handler(args: argparse.Namespace) -> int:
        raise NotAvailable(f"benchmark '{args.benchmark}' not yet available (issue #{issue})")

    return handler
