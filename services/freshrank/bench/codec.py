"""Codec benchmark: our validated encode+decode vs raw protobuf on the same events."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from freshrank.bench.report import BenchTable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=100_000, help="events per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (median is reported)")


def run(args: argparse.Namespace) -> int:
    from freshrank.core.codec import decode_event, encode_event
    from freshrank.sim import SyntheticConfig, SyntheticStream
    from freshrank.v1.events_pb2 import InteractionEvent

    events = list(SyntheticStream(SyntheticConfig(events=args.events)).events())

    def ours() -> None:
        for event in events:
            decode_event(encode_event(event))

    def raw() -> None:
        for event in events:
            InteractionEvent.FromString(event.SerializeToString())

    ours_rate, raw_rate = _rates(ours, raw, len(events), args.rounds)
    table = BenchTable("codec: encode+decode, events/s (median)", peer="raw protobuf")
    table.add("events/s", ours_rate, raw_rate, "events/s")
    table.print()
    table.write_json("codec", {"events": args.events, "rounds": args.rounds})
    return 0


def _rates(
    ours: Callable[[], None], peer: Callable[[], None], n: int, rounds: int
) -> tuple[float, float]:
    """Alternate the two so machine noise hits both alike; return median rates."""
    ours_s: list[float] = []
    peer_s: list[float] = []
    for _ in range(rounds):
        for fn, out in ((ours, ours_s), (peer, peer_s)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return n / statistics.median(ours_s), n / statistics.median(peer_s)
