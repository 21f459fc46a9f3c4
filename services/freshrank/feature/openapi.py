"""The feature API's OpenAPI 3.1 document (served at ``/openapi.json``), generated from
``protos/freshrank/v1/features.proto`` by ``freshrank.core.protojson`` (the proto3 JSON mapping:
proto field names, int64 fields as decimal strings, enums by name)."""

from __future__ import annotations

from typing import Any

from freshrank.core import protojson
from freshrank.core.codec import ID_JSON_SCHEMA
from freshrank.core.contracts import routes
from freshrank.core.protojson import JSON, PROTOBUF, FieldRule, message_content, schema_ref
from freshrank.v1 import features_pb2

__all__ = ["openapi_spec", "request_rules"]

_REQUESTS = (features_pb2.BatchUserFeaturesRequest, features_pb2.BatchItemFeaturesRequest)
_RESPONSES = (
    features_pb2.UserFeatures,
    features_pb2.ItemFeatures,
    features_pb2.BatchUserFeaturesResponse,
    features_pb2.BatchItemFeaturesResponse,
    features_pb2.PopularItemsResponse,
)


def request_rules(max_batch: int) -> protojson.Rules:
    """What the schema says beyond the proto types (the handlers enforce each)."""
    ids = FieldRule({"items": ID_JSON_SCHEMA, "minItems": 1, "maxItems": max_batch}, required=True)
    return {"BatchUserFeaturesRequest.user_ids": ids, "BatchItemFeaturesRequest.item_ids": ids}


def _ok(message: str) -> dict[str, Any]:
    error = {JSON: {"schema": schema_ref("Error")}}
    return {
        "200": {"description": "OK", "content": message_content(message)},
        "400": {"description": "malformed request", "content": error},
        "503": {
            "description": "feature store unavailable",
            "headers": {
                "Retry-After": {
                    "description": "seconds until the store is tried again",
                    "schema": {"type": "integer", "minimum": 1},
                }
            },
            "content": error,
        },
    }


def _path_param(name: str) -> dict[str, Any]:
    # An id as the service accepts it: the event contract's id rule (codec.id_problem).
    return {"name": name, "in": "path", "required": True, "schema": ID_JSON_SCHEMA}


def _read(summary: str, message: str, parameter: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": [_path_param(parameter)],
            "responses": _ok(message),
        }
    }


def _batch(summary: str, request: str, response: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": message_content(request)},
            "responses": _ok(response),
        }
    }


def openapi_spec(max_batch: int, max_k: int) -> dict[str, Any]:
    schemas = {
        **protojson.request_schemas(_REQUESTS, request_rules(max_batch)),
        **protojson.response_schemas(_RESPONSES),
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
    }
    popular_k = {
        "name": "k",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": max_k},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Freshrank feature API",
            "version": "v1",
            "description": "User history and item features, kept fresh from the event stream. "
            "Unknown users and items get an empty feature set (cold start), never an error. "
            "Bodies are JSON (the proto3 JSON mapping: int64 fields are decimal strings) or "
            f"protobuf ({PROTOBUF}).",
        },
        "paths": {
            routes.FEATURE_USER: _read(
                "One user's features (history most recent first)", "UserFeatures", "user_id"
            ),
            routes.FEATURE_USERS_BATCH: _batch(
                "Several users' features, in the order asked",
                "BatchUserFeaturesRequest",
                "BatchUserFeaturesResponse",
            ),
            routes.FEATURE_ITEM: _read("One item's features", "ItemFeatures", "item_id"),
            routes.FEATURE_ITEMS_BATCH: _batch(
                "Several items' features, in the order asked",
                "BatchItemFeaturesRequest",
                "BatchItemFeaturesResponse",
            ),
            routes.FEATURE_POPULAR: {
                "get": {
                    "summary": "The k items with the highest decayed popularity",
                    "parameters": [popular_k],
                    "responses": _ok("PopularItemsResponse"),
                }
            },
        },
        "components": {"schemas": schemas},
    }
