"""HTTP handlers of the ranking API: ``POST /v1/rank`` (JSON or protobuf) and ``/openapi.json``.

Requests are validated here, once; a bad one gets 400 with the reason. The response format
follows ``Accept`` when it names protobuf or JSON, else the request's ``Content-Type``.
``openapi()`` states exactly these rules (types, bounds, lengths), so a request the schema
accepts is one the server accepts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from google.protobuf.message import DecodeError

from freshrank.core.codec import ID_JSON_SCHEMA, id_problem, ids_problem
from freshrank.core.http import json_error
from freshrank.ranking.ranker import Ranker, Ranking, RankQuery
from freshrank.v1 import ranking_pb2

__all__ = ["PROTOBUF", "RankLimits", "add_routes", "openapi", "parse_json_query"]

PROTOBUF = "application/x-protobuf"
RANKER_KEY = web.AppKey("ranker", Ranker)


class BadRequest(ValueError):
    """The request is malformed; the message says how."""


class RankLimits:
    def __init__(self, *, default_k: int, max_k: int, max_candidates: int) -> None:
        self.default_k = default_k
        self.max_k = max_k
        self.max_candidates = max_candidates


LIMITS_KEY = web.AppKey("limits", RankLimits)


def add_routes(app: web.Application, ranker: Ranker, limits: RankLimits) -> None:
    app[RANKER_KEY] = ranker
    app[LIMITS_KEY] = limits
    app.router.add_post("/v1/rank", rank)
    app.router.add_get("/openapi.json", openapi_handler)


async def rank(request: web.Request) -> web.Response:
    limits = request.app[LIMITS_KEY]
    try:
        if request.content_type == PROTOBUF:
            query = _parse_proto_query(await request.read(), limits)
        else:
            query = parse_json_query(await _json_body(request), limits)
    except BadRequest as exc:
        return json_error(400, str(exc))
    ranking = await request.app[RANKER_KEY].rank(query)
    if _wants_protobuf(request):
        return web.Response(body=_encode_proto(ranking), content_type=PROTOBUF)
    return web.Response(text=_encode_json(ranking), content_type="application/json")


async def _json_body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None
    except RecursionError:  # e.g. 100,000 nested arrays: the parser gives up, so do we
        raise BadRequest("body is not valid JSON: nested too deeply") from None


def _wants_protobuf(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    if PROTOBUF in accept:
        return True
    if "application/json" in accept:
        return False
    return request.content_type == PROTOBUF


def parse_json_query(body: Any, limits: RankLimits) -> RankQuery:
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    unknown = set(body) - {"user_id", "k", "candidates", "context"}
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(sorted(unknown))}")
    k = body.get("k", 0)
    if k is None:
        k = 0
    if isinstance(k, float) and k.is_integer():
        k = int(k)  # JSON Schema (and so the OpenAPI document) counts 649.0 as an integer
    if not isinstance(k, int) or isinstance(k, bool):
        raise BadRequest("k must be an integer")
    candidates = body.get("candidates")
    if candidates is not None and not isinstance(candidates, list):
        raise BadRequest("candidates must be a list of item ids")
    context = body.get("context")
    if context is None:
        context = {}
    if not isinstance(context, dict):  # 0, "" and [] are not an absent context
        raise BadRequest("context must be an object of strings")
    return _query(body.get("user_id"), k, candidates, context, limits)


def _parse_proto_query(body: bytes, limits: RankLimits) -> RankQuery:
    message = ranking_pb2.RankRequest()
    try:
        message.ParseFromString(body)
    except DecodeError as exc:
        raise BadRequest(f"body is not a RankRequest: {exc}") from None
    return _query(message.user_id, message.k, list(message.candidates), message.context, limits)


def _query(
    user_id: Any,
    k: int,
    candidates: list[Any] | None,
    context: Mapping[Any, Any],
    limits: RankLimits,
) -> RankQuery:
    if not isinstance(user_id, str) or not user_id:
        raise BadRequest("user_id must be a non-empty string")
    problem = id_problem(user_id)  # the event contract's id rule, as at every edge
    if problem is not None:
        raise BadRequest(f"user_id {problem}")
    if k < 0 or k > limits.max_k:
        raise BadRequest(
            f"k must be between 1 and {limits.max_k} (0 or absent: {limits.default_k})"
        )
    if candidates is not None:
        if len(candidates) > limits.max_candidates:
            raise BadRequest(f"at most {limits.max_candidates} candidates per request")
        if not set(map(type, candidates)) <= {str}:  # one C-level pass over the list
            raise BadRequest("candidates must be non-empty strings")
        unique = dict.fromkeys(candidates)  # dedupe, keeping the caller's order
        if "" in unique:
            raise BadRequest("candidates must be non-empty strings")
        problem = ids_problem(list(unique))
        if problem is not None:
            raise BadRequest(f"candidates{problem}")
        candidates = list(unique) or None  # [] means: retrieve
    if not all(isinstance(key, str) and isinstance(v, str) for key, v in context.items()):
        raise BadRequest("context must map strings to strings")
    _require_utf8("".join(f"{key}{v}" for key, v in context.items()), "context")
    return RankQuery(
        user_id=user_id, k=k or limits.default_k, candidates=candidates, context=dict(context)
    )


def _require_utf8(text: str, field: str) -> None:
    """JSON may carry lone surrogates (``"\\ud800"``): no valid id, and no URL can hold one."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"{field} must be valid Unicode (lone surrogate)") from None


def _encode_json(ranking: Ranking) -> str:
    items = [
        {"item_id": item, "score": score}
        for item, score in zip(ranking.item_ids, ranking.scores, strict=True)
    ]
    return json.dumps(
        {"items": items, "model_version": ranking.model_version, "fallback": ranking.fallback}
    )


def _encode_proto(ranking: Ranking) -> bytes:
    response = ranking_pb2.RankResponse(
        model_version=ranking.model_version, fallback=ranking.fallback
    )
    response.items.extend(
        ranking_pb2.ScoredItem(item_id=item, score=score)
        for item, score in zip(ranking.item_ids, ranking.scores, strict=True)
    )
    return response.SerializeToString()


async def openapi_handler(request: web.Request) -> web.Response:
    return web.json_response(openapi(request.app[LIMITS_KEY]))


def openapi(limits: RankLimits) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the ranking API."""
    scored_item = {
        "type": "object",
        "required": ["item_id", "score"],
        "properties": {"item_id": {"type": "string"}, "score": {"type": "number"}},
    }
    error = {"type": "object", "properties": {"error": {"type": "string"}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Freshrank ranking API",
            "version": "v1",
            "description": "Rank items for a user with the latest READY model on Triton; "
            "a popularity fallback (flagged) when the model cannot answer. Bodies are JSON or "
            "protobuf (freshrank.v1.RankRequest / RankResponse, application/x-protobuf).",
        },
        "paths": {
            "/v1/rank": {
                "post": {
                    "operationId": "rank",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/RankRequest"}
                            },
                            PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "ranked items, best first",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/RankResponse"}
                                },
                                PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
                            },
                        },
                        "400": {
                            "description": "malformed request; the reason is in `error`",
                            "content": {"application/json": {"schema": error}},
                        },
                    },
                }
            }
        },
        "components": {
            "schemas": {
                "RankRequest": {
                    "type": "object",
                    "required": ["user_id"],
                    "additionalProperties": False,
                    "properties": {
                        "user_id": ID_JSON_SCHEMA,
                        "k": {
                            "type": ["integer", "null"],
                            "minimum": 0,
                            "maximum": limits.max_k,
                            "description": f"items to return; 0 or absent: {limits.default_k}",
                        },
                        "candidates": {
                            "type": ["array", "null"],
                            "items": ID_JSON_SCHEMA,
                            "maxItems": limits.max_candidates,
                            "description": "items to rank; absent or empty: the server retrieves",
                        },
                        "context": {
                            "type": ["object", "null"],
                            "additionalProperties": {"type": "string"},
                            "description": "free-form string attributes; absent or null: none",
                        },
                    },
                },
                "ScoredItem": scored_item,
                "RankResponse": {
                    "type": "object",
                    "required": ["items", "model_version", "fallback"],
                    "properties": {
                        "items": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/ScoredItem"},
                        },
                        "model_version": {
                            "type": "integer",
                            "description": "model version that scored; 0 for a fallback",
                        },
                        "fallback": {
                            "type": "boolean",
                            "description": "true: popularity fallback, the model was not used",
                        },
                    },
                },
            }
        },
    }
