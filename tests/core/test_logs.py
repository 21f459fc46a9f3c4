"""Structured logs: one JSON object per line on stderr, librdkafka's own lines included."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer

from freshrank.core.kafka import LIBRDKAFKA_LOGGER, producer_config
from freshrank.core.logs import setup_logging
from freshrank.embedded import free_port


@pytest.fixture
def root_logging() -> Iterator[None]:
    """setup_logging() replaces the root handlers: give them back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _json_lines(text: str) -> list[dict[str, object]]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # a non-JSON line fails here, naming it


def test_librdkafka_lines_come_out_as_our_json(
    root_logging: None, capfd: pytest.CaptureFixture[str]
) -> None:
    setup_logging("INFO")
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    keep = Keep()
    LIBRDKAFKA_LOGGER.addHandler(keep)
    # Nothing listens there: librdkafka reports the refused connection (to stderr, raw,
    # unless routed).
    producer = Producer(producer_config(f"127.0.0.1:{free_port()}"))
    try:
        producer.produce("t", b"x")
        deadline = time.monotonic() + 60.0
        while not seen and time.monotonic() < deadline:
            producer.poll(0.1)
    finally:
        LIBRDKAFKA_LOGGER.removeHandler(keep)
        producer.purge()
        producer.flush(0)
    assert seen, "librdkafka logged nothing through the configured logger"
    captured = capfd.readouterr()
    records = _json_lines(captured.err)
    ours = [r for r in records if r["logger"] == LIBRDKAFKA_LOGGER.name]
    assert ours, captured.err
    assert any("Connect to" in str(r["msg"]) for r in ours), ours
    assert captured.out == ""
