from __future__ import annotations

import pytest

from freshrank.core.codec import (
    EventType,
    InteractionEvent,
    MalformedEvent,
    MissingField,
    UndecodableEvent,
    UnknownEventType,
    decode_event,
    encode_event,
    make_event,
)


def _event(**overrides: object) -> InteractionEvent:
    fields: dict[str, object] = {
        "event_id": "e1",
        "user_id": "u1",
        "item_id": "i1",
        "type": EventType.CLICK,
        "timestamp_ms": 1_700_000_000_000,
        "value": 1.5,
        "context": {"page": "home"},
    }
    fields.update(overrides)
    return InteractionEvent(**fields)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field() -> None:
    event = _event()
    decoded = decode_event(encode_event(event))
    assert decoded == event
    assert decoded.context["page"] == "home"


def test_make_event_validates_like_decoding() -> None:
    with pytest.raises(MissingField, match="user_id"):
        make_event(event_id="e", user_id="", item_id="i", type=EventType.VIEW, timestamp_ms=1)


def test_malformed_bytes_raise_undecodable_with_reason() -> None:
    with pytest.raises(UndecodableEvent) as info:
        decode_event(b"\xff\xff\xff\xff not protobuf")
    assert "not a protobuf InteractionEvent" in info.value.reason
    assert isinstance(info.value, MalformedEvent)


def test_unknown_event_type_is_typed_error() -> None:
    data = _event(type=42).SerializeToString()  # a newer producer's enum value
    with pytest.raises(UnknownEventType, match="unknown event type 42"):
        decode_event(data)


@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id"])
def test_missing_required_string_names_the_field(field: str) -> None:
    data = _event(**{field: ""}).SerializeToString()
    with pytest.raises(MissingField) as info:
        decode_event(data)
    assert info.value.field == field
    assert field in info.value.reason


def test_missing_type_and_timestamp_are_reported() -> None:
    with pytest.raises(MissingField, match="'type'"):
        decode_event(_event(type=EventType.EVENT_TYPE_UNSPECIFIED).SerializeToString())
    with pytest.raises(MissingField, match="timestamp_ms"):
        decode_event(_event(timestamp_ms=0).SerializeToString())


def test_encoder_refuses_invalid_event() -> None:
    with pytest.raises(MissingField, match="item_id"):
        encode_event(_event(item_id=""))
