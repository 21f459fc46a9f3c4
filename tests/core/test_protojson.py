"""The one JSON mapping: what ``parse_json`` accepts is what its generated schema accepts, it
builds what ``json_format`` builds, and the printed form validates against the schema."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import jsonschema
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from freshrank.core import protojson
from freshrank.v1 import events_pb2, features_pb2, ranking_pb2

# Valid bodies: each parses, to what json_format.ParseDict makes of it.
VALID: list[tuple[type[Message], Any]] = [
    (ranking_pb2.RankRequest, {"user_id": "u1"}),
    (ranking_pb2.RankRequest, {"user_id": "u1", "k": 3, "candidates": ["a", "b"]}),
    (ranking_pb2.RankRequest, {"user_id": "ü", "k": 3.0, "context": {"page": "home"}}),
    (ranking_pb2.RankRequest, {"user_id": "u1", "k": None, "candidates": None, "context": None}),
    (ranking_pb2.RankRequest, {}),
    (features_pb2.BatchUserFeaturesRequest, {"user_ids": ["u1", "u2"]}),
    (
        events_pb2.InteractionEvent,
        {"event_id": "e", "type": "CLICK", "value": 1, "timestamp_ms": "17", "context": {}},
    ),
    (events_pb2.InteractionEvent, {"timestamp_ms": -5, "value": 0.5, "type": None}),
    (features_pb2.BatchUserFeaturesResponse, {"users": [{"user_id": "u", "history": []}]}),
]

# Invalid bodies: each is refused, with the reason naming the field.
INVALID: list[tuple[type[Message], Any, str]] = [
    (ranking_pb2.RankRequest, [1], "JSON object"),
    (ranking_pb2.RankRequest, {"user_id": 7}, "user_id must be a string"),
    (ranking_pb2.RankRequest, {"userId": "u1"}, "unknown fields: userId"),
    (ranking_pb2.RankRequest, {"user_id": "u", "k": "3"}, "k must be an integer"),
    (ranking_pb2.RankRequest, {"user_id": "u", "k": True}, "k must be an integer"),
    (ranking_pb2.RankRequest, {"user_id": "u", "k": 2.5}, "k must be an integer"),
    (ranking_pb2.RankRequest, {"user_id": "u", "k": -1}, "k must be an integer from 0"),
    (ranking_pb2.RankRequest, {"user_id": "u", "candidates": "a"}, "must be a list of strings"),
    (ranking_pb2.RankRequest, {"user_id": "u", "candidates": ["a", 1]}, "candidates[1] must"),
    (ranking_pb2.RankRequest, {"user_id": "u", "context": {"a": 1}}, "context['a'] must be"),
    (ranking_pb2.RankRequest, {"user_id": "u", "context": []}, "context must be an object"),
    (events_pb2.InteractionEvent, {"type": 2}, "type must be one of"),
    (events_pb2.InteractionEvent, {"type": "LIKE"}, "type must be one of"),
    (events_pb2.InteractionEvent, {"value": "NaN"}, "value must be a number"),
    (events_pb2.InteractionEvent, {"timestamp_ms": "1e3"}, "timestamp_ms must be an integer"),
    (features_pb2.BatchUserFeaturesResponse, {"users": [{"x": 1}]}, "unknown fields: x"),
]


def _schema(kind: type[Message]) -> dict[str, Any]:
    components = protojson.request_schemas([kind])
    return {
        "$ref": f"#/components/schemas/{kind.DESCRIPTOR.name}",
        "components": {"schemas": components},
    }


@pytest.mark.parametrize(("kind", "body"), VALID)
def test_a_valid_body_is_what_json_format_makes_of_it_and_fits_the_schema(
    kind: type[Message], body: Any
) -> None:
    jsonschema.validate(body, _schema(kind))
    parsed = protojson.parse_json(json.dumps(body).encode(), kind)
    assert parsed == json_format.ParseDict(body, kind())


@pytest.mark.parametrize(("kind", "body", "reason"), INVALID)
def test_an_invalid_body_is_refused_by_parser_and_schema_alike(
    kind: type[Message], body: Any, reason: str
) -> None:
    with pytest.raises(protojson.BadJson) as refused:
        protojson.parse_json(json.dumps(body).encode(), kind)
    assert reason in str(refused.value)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, _schema(kind))


def test_lone_surrogates_and_broken_json_are_refused() -> None:
    with pytest.raises(protojson.BadJson, match=r"candidates\[1\] must be valid Unicode"):
        protojson.parse_json(b'{"candidates": ["a", "\\udfff"]}', ranking_pb2.RankRequest)
    with pytest.raises(protojson.BadJson, match="not valid JSON"):
        protojson.parse_json(b"{", ranking_pb2.RankRequest)
    with pytest.raises(protojson.BadJson, match="nested too deeply"):
        protojson.parse_json(b"[" * 100_000 + b"]" * 100_000, ranking_pb2.RankRequest)


def test_required_rule_refuses_an_absent_or_null_field() -> None:
    rules = {"RankRequest.user_id": protojson.FieldRule(required=True)}
    for body in (b"{}", b'{"user_id": null}'):
        with pytest.raises(protojson.BadJson, match="user_id is required"):
            protojson.parse_json(body, ranking_pb2.RankRequest, rules)
    assert protojson.request_schemas([ranking_pb2.RankRequest], rules)["RankRequest"][
        "required"
    ] == ["user_id"]


def test_printed_responses_fit_the_response_schema_int64_as_strings() -> None:
    response = ranking_pb2.RankResponse(model_version=7)
    response.items.add(item_id="i1", score=0.5)
    printed = json.loads(protojson.to_json(response))
    assert printed == {
        "items": [{"item_id": "i1", "score": 0.5}],
        "model_version": "7",
        "fallback": False,
    }
    schemas = protojson.response_schemas([ranking_pb2.RankResponse])
    jsonschema.validate(
        printed, {"$ref": "#/components/schemas/RankResponse", "components": {"schemas": schemas}}
    )


def test_a_joined_batch_is_the_batch_message_printed() -> None:
    users = [
        features_pb2.UserFeatures(user_id="u1", event_count=3),
        features_pb2.UserFeatures(
            user_id="u2", history=[features_pb2.HistoryEntry(item_id="i", type=events_pb2.VIEW)]
        ),
    ]
    joined = protojson.json_list("users", [protojson.to_json(user) for user in users])
    assert joined == protojson.to_json(features_pb2.BatchUserFeaturesResponse(users=users))


def _printed_by_json_format(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _messages_to_print() -> list[Message]:
    rng = random.Random(7)
    scores = [rng.uniform(-50, 50) for _ in range(300)]
    scores += [0.0, -0.0, 0.1, 1e-30, 3.4e38, 2.0**-149, 16777217.0, math.inf, -math.inf, math.nan]
    scores += [2.0**e for e in range(-20, 20)]  # powers of two: the asymmetric rounding gaps
    ranked = ranking_pb2.RankResponse(model_version=2**40, fallback=True)
    for i, score in enumerate(scores):
        ranked.items.add(item_id=f"i{i}", score=score)
    user = features_pb2.UserFeatures(user_id="ü", decayed_activity=math.nan, event_count=-3)
    user.history.add(item_id="a", type=events_pb2.PURCHASE, timestamp_ms=2**62)
    user.history.add(item_id="b", type=7)  # a number the enum does not name
    event = events_pb2.InteractionEvent(event_id="e", value=1e300, context={"k": "v", "": "x"})
    return [
        ranked,
        ranking_pb2.RankResponse(),
        ranking_pb2.RankRequest(user_id="u", k=3, candidates=["a"], context={"a": "b"}),
        user,
        features_pb2.UserFeatures(),
        features_pb2.BatchUserFeaturesResponse(users=[user, features_pb2.UserFeatures()]),
        features_pb2.PopularItemsResponse(items=[features_pb2.ItemFeatures(item_id="i")]),
        event,
        events_pb2.InteractionEvent(value=-math.inf),
    ]


@pytest.mark.parametrize("message", _messages_to_print(), ids=lambda m: m.DESCRIPTOR.name)
def test_the_printer_prints_what_json_format_prints(message: Message) -> None:
    ours = json.dumps(protojson.to_dict(message), sort_keys=True)
    theirs = json.dumps(_printed_by_json_format(message), sort_keys=True)
    assert ours == theirs
