"""The one event codec: every producer and consumer of ``InteractionEvent`` goes through it.

Decoding validates what protobuf cannot express in proto3 (required fields, closed enums), so a
consumer never sees a half-formed event: it gets a typed ``MalformedEvent`` naming the problem.
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.message import DecodeError

from freshrank.v1.events_pb2 import EventType, InteractionEvent

__all__ = [
    "EventType",
    "InteractionEvent",
    "MalformedEvent",
    "MissingField",
    "UndecodableEvent",
    "UnknownEventType",
    "decode_event",
    "encode_event",
    "make_event",
]

_REQUIRED_STRINGS = ("event_id", "user_id", "item_id")
_from_string = InteractionEvent.FromString
_KNOWN_TYPES = frozenset(v for v in EventType.values() if v != EventType.EVENT_TYPE_UNSPECIFIED)


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
    """Parse and validate one Kafka message value."""
    try:
        event = _from_string(data)
    except DecodeError as exc:
        raise UndecodableEvent(
            f"not a protobuf InteractionEvent ({len(data)} bytes): {exc}"
        ) from exc
    validate_event(event)
    return event


def validate_event(event: InteractionEvent) -> None:
    """Check the invariants proto3 cannot express (one fast path, details only on failure)."""
    if (
        event.event_id
        and event.user_id
        and event.item_id
        and event.type in _KNOWN_TYPES
        and event.timestamp_ms > 0
    ):
        return
    for field in _REQUIRED_STRINGS:
        if not getattr(event, field):
            raise MissingField(field)
    if event.type == EventType.EVENT_TYPE_UNSPECIFIED:
        raise MissingField("type")
    if event.type not in _KNOWN_TYPES:
        raise UnknownEventType(f"unknown event type {event.type}")
    raise MissingField("timestamp_ms")
