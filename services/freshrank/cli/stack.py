"""`freshrank stack up|down`: the local stack for development."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from freshrank.cli.common import Subparsers, add_command, add_command_group
from freshrank.core.service_settings import ARCHITECTURE_NAMES

DEFAULT_WORKDIR = Path(".freshrank/stack")


def register(subparsers: Subparsers) -> None:
    actions = add_command_group(
        subparsers,
        "stack",
        "run the local stack (broker, Triton, feature, trainer, ranking) until Ctrl-C, or stop it",
        dest="action",
        metavar="ACTION",
    )
    up = add_command(actions, "up", "start the stack and keep it running until Ctrl-C")
    down = add_command(actions, "down", "stop a stack started by 'stack up'")
    for action in (up, down):
        action.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    up.add_argument("--name", default="freshrank", help="deployment name")
    up.add_argument(
        "--services",
        default="feature,trainer,ranking",
        help="comma-separated services to start ('' = broker and Triton only)",
    )
    up.add_argument("--architecture", default="sasrec", choices=ARCHITECTURE_NAMES)
    up.set_defaults(handler=run_up)
    down.set_defaults(handler=run_down)


def run_up(args: argparse.Namespace) -> int:
    from freshrank.stack import LocalStack, StackConfig

    services = tuple(s for s in args.services.split(",") if s)
    config = StackConfig(
        workdir=args.workdir, name=args.name, services=services, architecture=args.architecture
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with LocalStack(config) as stack:
        for name, url in stack.urls().items():
            print(f"{name:12} {url}")
        print(f"events topic {args.name}.events; logs in {stack.workdir / 'logs'}; Ctrl-C stops")
        sys.stdout.flush()
        while True:
            time.sleep(3600)
    return 0


def run_down(args: argparse.Namespace) -> int:
    state_file = args.workdir / "stack.json"
    if not state_file.exists():
        print(f"no stack running (no {state_file})", file=sys.stderr)
        return 1
    pid = int(json.loads(state_file.read_text())["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        state_file.unlink(missing_ok=True)
        print("stack was not running; state cleared", file=sys.stderr)
        return 0
    for _ in range(150):
        if not state_file.exists():
            print("stack stopped")
            return 0
        time.sleep(0.2)
    print(f"stack (pid {pid}) did not stop within 30 s", file=sys.stderr)
    return 1
