"""The feature API's OpenAPI 3.1 document (served at ``/openapi.json``).

Schemas follow ``protos/freshrank/v1/features.proto`` (JSON names = proto field names; int64
fields are JSON strings, per the proto3 JSON mapping).
"""

from __future__ import annotations

from typing import Any

from freshrank.core.codec import ID_JSON_SCHEMA

__all__ = ["openapi_spec"]

_PROTOBUF = "application/x-protobuf"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: str, proto: str) -> dict[str, Any]:
    return {
        "application/json": {"schema": _ref(schema)},
        _PROTOBUF: {"schema": {"type": "string", "format": "binary", "x-proto": proto}},
    }


def _ok(schema: str, proto: str) -> dict[str, Any]:
    return {
        "200": {"description": "OK", "content": _body(schema, proto)},
        "400": {"description": "malformed request", "content": _error()},
        "503": {
            "description": "feature store unavailable",
            "headers": {
                "Retry-After": {
                    "description": "seconds until the store is tried again",
                    "schema": {"type": "integer", "minimum": 1},
                }
            },
            "content": _error(),
        },
    }


def _error() -> dict[str, Any]:
    return {"application/json": {"schema": _ref("Error")}}


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _ID}


# An id as the service accepts it: the event contract's id rule (codec.id_problem).
_ID = ID_JSON_SCHEMA


_INT64 = {"type": "string", "format": "int64"}
_EVENT_TYPES = ["EVENT_TYPE_UNSPECIFIED", "VIEW", "CLICK", "ADD_TO_CART", "PURCHASE", "RATING"]


def openapi_spec(max_batch: int, max_k: int) -> dict[str, Any]:
    ids = {"type": "array", "items": _ID, "minItems": 1, "maxItems": max_batch}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Freshrank feature API",
            "version": "v1",
            "description": "User history and item features, kept fresh from the event stream. "
            "Unknown users and items get an empty feature set (cold start), never an error.",
        },
        "paths": {
            "/v1/users/{user_id}": {
                "get": {
                    "summary": "One user's features (history most recent first)",
                    "parameters": [_path_param("user_id")],
                    "responses": _ok("UserFeatures", "freshrank.v1.UserFeatures"),
                }
            },
            "/v1/users:batch": {
                "post": {
                    "summary": "Several users' features, in the order asked",
                    "requestBody": {
                        "required": True,
                        "content": _body(
                            "BatchUserFeaturesRequest", "freshrank.v1.BatchUserFeaturesRequest"
                        ),
                    },
                    "responses": _ok(
                        "BatchUserFeaturesResponse", "freshrank.v1.BatchUserFeaturesResponse"
                    ),
                }
            },
            "/v1/items/{item_id}": {
                "get": {
                    "summary": "One item's features",
                    "parameters": [_path_param("item_id")],
                    "responses": _ok("ItemFeatures", "freshrank.v1.ItemFeatures"),
                }
            },
            "/v1/items:batch": {
                "post": {
                    "summary": "Several items' features, in the order asked",
                    "requestBody": {
                        "required": True,
                        "content": _body(
                            "BatchItemFeaturesRequest", "freshrank.v1.BatchItemFeaturesRequest"
                        ),
                    },
                    "responses": _ok(
                        "BatchItemFeaturesResponse", "freshrank.v1.BatchItemFeaturesResponse"
                    ),
                }
            },
            "/v1/items:popular": {
                "get": {
                    "summary": "The k items with the highest decayed popularity",
                    "parameters": [
                        {
                            "name": "k",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": max_k},
                        }
                    ],
                    "responses": _ok("PopularItemsResponse", "freshrank.v1.PopularItemsResponse"),
                }
            },
        },
        "components": {
            "schemas": {
                "HistoryEntry": {
                    "type": "object",
                    "properties": {
                        "item_id": {"type": "string"},
                        "type": {"type": "string", "enum": _EVENT_TYPES},
                        "timestamp_ms": _INT64,
                    },
                },
                "UserFeatures": {
                    "type": "object",
                    "properties": {
                        "user_id": {"type": "string"},
                        "history": {"type": "array", "items": _ref("HistoryEntry")},
                        "decayed_activity": {"type": "number"},
                        "event_count": _INT64,
                    },
                },
                "ItemFeatures": {
                    "type": "object",
                    "properties": {
                        "item_id": {"type": "string"},
                        "decayed_popularity": {"type": "number"},
                        "event_count": _INT64,
                    },
                },
                "BatchUserFeaturesRequest": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["user_ids"],
                    "properties": {"user_ids": ids},
                },
                "BatchUserFeaturesResponse": {
                    "type": "object",
                    "properties": {"users": {"type": "array", "items": _ref("UserFeatures")}},
                },
                "BatchItemFeaturesRequest": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["item_ids"],
                    "properties": {"item_ids": ids},
                },
                "BatchItemFeaturesResponse": {
                    "type": "object",
                    "properties": {"items": {"type": "array", "items": _ref("ItemFeatures")}},
                },
                "PopularItemsResponse": {
                    "type": "object",
                    "properties": {"items": {"type": "array", "items": _ref("ItemFeatures")}},
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
            }
        },
    }
