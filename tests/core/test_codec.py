from __future__ import annotations

import pytest

from freshrank.core.codec import (
    EventTimeWindow,
    EventType,
    InteractionEvent,
    InvalidField,
    MalformedEvent,
    MissingField,
    OutOfTimeWindow,
    UndecodableEvent,
    UnknownEventType,
    decode_event,
    decode_record,
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


# -- the input contract --------------------------------------------------------------------

RECORD_MS = 1_795_000_000_000  # a record's (broker) time


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("u" * 301, "is 301 bytes, over the limit of 256"),
        ("é" * 129, "is 258 bytes, over the limit of 256"),  # 129 characters, 258 bytes
        ("item\x00one", "control character or lone surrogate (U+0000 at index 4)"),
        ("tab\there", "(U+0009"),
        ("c1\x85", "(U+0085"),
        ("del\x7f", "(U+007F"),
    ],
)
@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id"])
def test_ids_longer_than_256_bytes_or_with_control_characters_are_rejected(
    field: str, value: str, problem: str
) -> None:
    data = _event(**{field: value}).SerializeToString()
    with pytest.raises(InvalidField) as info:
        decode_event(data)
    assert info.value.field == field
    assert problem in info.value.reason
    with pytest.raises(InvalidField):
        make_event(
            **{"event_id": "e", "user_id": "u", "item_id": "i", field: value},  # type: ignore[arg-type]
            type=EventType.VIEW,
            timestamp_ms=RECORD_MS,
        )


def test_ids_at_the_limit_and_unicode_ids_are_accepted() -> None:
    for value in ("u" * 256, "é" * 128, "ユーザー/42", "café au lait", "🙂" * 64):
        assert decode_event(_event(user_id=value).SerializeToString()).user_id == value


def test_lone_surrogate_is_a_typed_error_not_a_unicode_crash() -> None:
    with pytest.raises(InvalidField, match="U\\+D800"):
        make_event(event_id="e", user_id="\ud800", item_id="i", type=1, timestamp_ms=1)


def test_invalid_utf8_is_undecodable() -> None:
    data = _event(user_id="bob").SerializeToString().replace(b"bob", b"b\xffb")
    with pytest.raises(UndecodableEvent):
        decode_event(data)


def test_value_must_be_finite_and_timestamp_positive() -> None:
    with pytest.raises(InvalidField, match="value is not a finite number"):
        decode_event(_event(value=float("nan")).SerializeToString())
    with pytest.raises(InvalidField, match="timestamp_ms is negative"):
        decode_event(_event(timestamp_ms=-5).SerializeToString())


@pytest.mark.parametrize(
    ("event_ms", "expected"),
    [
        (RECORD_MS * 1000, "after its record time (limit 1.0 h); microseconds instead"),
        (RECORD_MS // 1000, "before its record time (limit 40.0 years); seconds instead"),
        (RECORD_MS + 2 * 3_600_000, "2.0 h after its record time"),
    ],
)
def test_event_time_outside_the_window_of_its_record_time_is_rejected(
    event_ms: int, expected: str
) -> None:
    data = _event(timestamp_ms=event_ms).SerializeToString()
    decode_event(data)  # nothing wrong with the event itself...
    with pytest.raises(OutOfTimeWindow) as info:
        decode_record(data, RECORD_MS)  # ...but it cannot be from when it was recorded
    assert expected in info.value.reason


def test_late_replays_and_small_skew_pass_the_window() -> None:
    for event_ms in (
        874_724_710_000,  # MovieLens-100K, 1997: a historical replay
        RECORD_MS - 86_400_000,
        RECORD_MS + 60_000,  # a producer's clock a minute ahead
    ):
        assert decode_record(_event(timestamp_ms=event_ms).SerializeToString(), RECORD_MS)
    # No record time (an old broker): the rest of the contract still applies.
    assert decode_record(_event(timestamp_ms=RECORD_MS * 1000).SerializeToString(), None)


def test_window_is_configurable() -> None:
    tight = EventTimeWindow(max_ahead_ms=1_000, max_behind_ms=86_400_000)
    with pytest.raises(OutOfTimeWindow, match="before its record time"):
        decode_record(
            _event(timestamp_ms=RECORD_MS - 2 * 86_400_000).SerializeToString(), RECORD_MS, tight
        )
    with pytest.raises(OutOfTimeWindow, match="after its record time"):
        decode_record(_event(timestamp_ms=RECORD_MS + 2_000).SerializeToString(), RECORD_MS, tight)
