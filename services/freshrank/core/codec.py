"""The one event codec and input contract: every producer and consumer of ``InteractionEvent``
goes through it.

Decoding validates what protobuf cannot express in proto3, so a consumer never sees an event
the store, the model or the ID maps cannot take: it gets a typed ``MalformedEvent`` naming the
problem (the reason the dead-letter topic carries). The contract, defined once here:

- ids (``event_id``, ``user_id``, ``item_id``): present, at most ``MAX_ID_BYTES`` bytes of
  UTF-8 (protobuf already refuses invalid UTF-8), no control characters (C0 with NUL, DEL, C1);
- ``type``: one of the known ``EventType`` values (never ``EVENT_TYPE_UNSPECIFIED``);
- ``value``: a finite number;
- ``timestamp_ms``: positive and, where the Kafka record carries a time (the broker's or the
  producer's record timestamp), inside ``EventTimeWindow`` of it. The window is what catches
  unit mix-ups (seconds land in January 1970, microseconds thousands of years ahead) and
  far-future events, which would otherwise move every consumer's notion of "now".

The checks that need no record time run on every path (``make_event``, ``encode_event``,
``decode_event``); ``decode_record`` adds the time window. The verdict depends on the record
alone (bytes and record time, never the consumer's clock), so every consumer group reaches the
same one: one of them can own dead-lettering (the feature ingester does; the trainer skips).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence

from google.protobuf.message import DecodeError

from freshrank.v1.events_pb2 import EventType, InteractionEvent

__all__ = [
    "DEFAULT_TIME_WINDOW",
    "ID_JSON_SCHEMA",
    "MAX_ID_BYTES",
    "EventTimeWindow",
    "EventType",
    "InteractionEvent",
    "InvalidField",
    "MalformedEvent",
    "MissingField",
    "OutOfTimeWindow",
    "UndecodableEvent",
    "UnknownEventType",
    "decode_event",
    "decode_record",
    "encode_event",
    "id_problem",
    "ids_problem",
    "make_event",
    "validate_event",
]

MAX_ID_BYTES = 256
_REQUIRED_STRINGS = ("event_id", "user_id", "item_id")
_from_string = InteractionEvent.FromString
_KNOWN_TYPES = frozenset(v for v in EventType.values() if v != EventType.EVENT_TYPE_UNSPECIFIED)
# Control characters (C0 including NUL, DEL, C1) and lone surrogates (a Python str can hold
# them; UTF-8 cannot): no id may contain one.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# The id rule as the HTTP APIs document it (JSON Schema counts characters: for ASCII ids, the
# common case, that is the byte limit; the server checks bytes).
ID_JSON_SCHEMA: Mapping[str, object] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_ID_BYTES,
    "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]+$",
    "description": f"at most {MAX_ID_BYTES} bytes of UTF-8, no control characters",
}
_HOUR_MS = 3_600_000
_YEAR_MS = 365.25 * 24 * _HOUR_MS


class MalformedEvent(ValueError):
    """Bytes that are not a valid ``InteractionEvent``; ``reason`` goes to the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UndecodableEvent(MalformedEvent):
    """The bytes are not a protobuf ``InteractionEvent`` at all."""


class UnknownEventType(MalformedEvent):
    """The ``type`` field holds a value this version does not know (or is unspecified)."""


class MissingField(MalformedEvent):
    """A field every event must carry is empty."""

    def __init__(self, field: str) -> None:
        super().__init__(f"missing required field '{field}'")
        self.field = field


class InvalidField(MalformedEvent):
    """A field is present but breaks the contract (too long, control characters, not finite)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field


class OutOfTimeWindow(MalformedEvent):
    """``timestamp_ms`` is too far from the record's time (a unit mix-up, a broken clock)."""


@dataclasses.dataclass(frozen=True, slots=True)
class EventTimeWindow:
    """How far an event's time may lie from its Kafka record's time.

    ``max_ahead_ms``: producers' clocks drift by seconds; an hour is far beyond any skew, and
    every consumer also treats an accepted event as happening no later than its record.
    ``max_behind_ms``: lateness is legitimate (replays of historical data: MovieLens-100K is
    from 1997) and an old event cannot move any clock, so the bound is only there for
    seconds mistaken for milliseconds, which land in January 1970: 40 years.
    """

    max_ahead_ms: float = _HOUR_MS
    max_behind_ms: float = 40 * _YEAR_MS

    def check(self, event_ms: int, record_ms: int) -> None:
        """Raise ``OutOfTimeWindow`` (with a hint at the likely unit) when out of the window."""
        ahead = event_ms - record_ms
        if -self.max_behind_ms <= ahead <= self.max_ahead_ms:
            return
        if ahead > 0:
            where = f"{_span(ahead)} after its record time (limit {_span(self.max_ahead_ms)})"
        else:
            where = f"{_span(-ahead)} before its record time (limit {_span(self.max_behind_ms)})"
        hint = self._hint(event_ms, record_ms)
        raise OutOfTimeWindow(f"timestamp_ms {event_ms} is {where}{hint}")

    def _hint(self, event_ms: int, record_ms: int) -> str:
        for factor, unit in ((1 / 1000, "microseconds"), (1000, "seconds")):
            if -self.max_behind_ms <= event_ms * factor - record_ms <= self.max_ahead_ms:
                return f"; {unit} instead of milliseconds?"
        return ""


DEFAULT_TIME_WINDOW = EventTimeWindow()


def _span(ms: float) -> str:
    if ms >= _YEAR_MS:
        return f"{ms / _YEAR_MS:,.1f} years"
    if ms >= _HOUR_MS:
        return f"{ms / _HOUR_MS:,.1f} h"
    return f"{ms / 1000:,.1f} s"


def id_problem(value: str) -> str | None:
    """Why ``value`` is not a valid id (``None`` when it is): empty, longer than
    ``MAX_ID_BYTES`` bytes of UTF-8, or holding a control character or a lone surrogate.
    The feature API checks request ids with it too: one rule at every edge."""
    if value.isascii():  # the common case, two C-level passes
        if 0 < len(value) <= MAX_ID_BYTES and value.isprintable():
            return None
        size = len(value)
    else:
        size = len(value.encode("utf-8", "surrogatepass"))
    if not value:
        return "is empty"
    if size > MAX_ID_BYTES:
        return f"is {size} bytes, over the limit of {MAX_ID_BYTES}"
    forbidden = _FORBIDDEN.search(value)
    if forbidden is not None:
        return (
            f"contains a control character or lone surrogate (U+{ord(forbidden.group()):04X}"
            f" at index {forbidden.start()})"
        )
    return None


def ids_problem(values: Sequence[str]) -> str | None:
    """``id_problem`` of the first bad value (with its index), plain ASCII in C-level passes."""
    joined = "".join(values)
    ascii_ok = all(values) and joined.isascii() and joined.isprintable()
    if ascii_ok and max(map(len, values), default=0) <= MAX_ID_BYTES:
        return None
    for index, value in enumerate(values):
        problem = id_problem(value)
        if problem is not None:
            return f"[{index}] {problem}"
    return None


def make_event(
    *,
    event_id: str,
    user_id: str,
    item_id: str,
    type: EventType.ValueType,
    timestamp_ms: int,
    value: float = 0.0,
    context: Mapping[str, str] | None = None,
) -> InteractionEvent:
    """Build a validated event (raises ``MalformedEvent`` exactly as decoding would)."""
    for field, text in (("event_id", event_id), ("user_id", user_id), ("item_id", item_id)):
        problem = id_problem(text) if text else None
        if problem is not None:  # before protobuf, which raises UnicodeError on a surrogate
            raise InvalidField(field, problem)
    event = InteractionEvent(
        event_id=event_id,
        user_id=user_id,
        item_id=item_id,
        type=type,
        value=value,
        timestamp_ms=timestamp_ms,
        context=context,
    )
    validate_event(event)
    return event


def encode_event(event: InteractionEvent) -> bytes:
    """Serialize an event for Kafka; refuses to put an invalid event on the wire."""
    validate_event(event)
    return event.SerializeToString()


def decode_event(data: bytes) -> InteractionEvent:
    """Parse and validate one Kafka message value (everything but the time window)."""
    try:
        event = _from_string(data)
    except DecodeError as exc:
        raise UndecodableEvent(
            f"not a protobuf InteractionEvent ({len(data)} bytes): {exc}"
        ) from exc
    validate_event(event)
    return event


def decode_record(
    data: bytes, record_ms: int | None, window: EventTimeWindow = DEFAULT_TIME_WINDOW
) -> InteractionEvent:
    """``decode_event`` plus the time window around the record's time (``None``: the record
    carries no time, and only the rest of the contract applies)."""
    event = decode_event(data)
    if record_ms is not None:
        window.check(event.timestamp_ms, record_ms)
    return event


def _plain(value: str) -> bool:
    return 0 < len(value) <= MAX_ID_BYTES and value.isascii() and value.isprintable()


def validate_event(event: InteractionEvent) -> None:
    """Check the invariants proto3 cannot express (one fast path, details only on failure)."""
    if (
        _plain(event.event_id)
        and _plain(event.user_id)
        and _plain(event.item_id)
        and event.type in _KNOWN_TYPES
        and event.timestamp_ms > 0
        and math.isfinite(event.value)
    ):
        return
    for field in _REQUIRED_STRINGS:
        text = getattr(event, field)
        if not text:
            raise MissingField(field)
        problem = id_problem(text)
        if problem is not None:
            raise InvalidField(field, problem)
    if event.type == EventType.EVENT_TYPE_UNSPECIFIED:
        raise MissingField("type")
    if event.type not in _KNOWN_TYPES:
        raise UnknownEventType(f"unknown event type {event.type}")
    if event.timestamp_ms == 0:
        raise MissingField("timestamp_ms")
    if event.timestamp_ms < 0:
        raise InvalidField("timestamp_ms", f"is negative ({event.timestamp_ms})")
    if not math.isfinite(event.value):
        raise InvalidField("value", f"is not a finite number ({event.value})")
