"""HTTP handlers of the ranking API: ``POST /v1/rank`` (JSON or protobuf) and ``/openapi.json``.

Requests are validated here, once; a bad one gets 400 with the reason. Both body formats are
``freshrank.v1.RankRequest`` / ``RankResponse``: protobuf as is, JSON in the proto3 mapping of
``freshrank.core.protojson`` (the same as the feature API's; ``model_version`` is an int64, so a
decimal string). The response format follows ``Accept`` when it names protobuf or JSON, else the
request's ``Content-Type``. ``openapi()`` is generated from the messages plus the bounds below,
so a request the schema accepts is one the server accepts.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from google.protobuf.message import DecodeError

from freshrank.core import protojson
from freshrank.core.codec import ID_JSON_SCHEMA, id_problem, ids_problem
from freshrank.core.contracts import routes
from freshrank.core.http import json_error
from freshrank.core.protojson import JSON, PROTOBUF, FieldRule, message_content, schema_ref
from freshrank.ranking.ranker import Ranker, Ranking, RankQuery
from freshrank.v1 import ranking_pb2

__all__ = ["PROTOBUF", "RankLimits", "add_routes", "openapi", "parse_json_query"]

RANKER_KEY = web.AppKey("ranker", Ranker)


class BadRequest(ValueError):
    """The request is malformed; the message says how."""


class RankLimits:
    def __init__(self, *, default_k: int, max_k: int, max_candidates: int) -> None:
        self.default_k = default_k
        self.max_k = max_k
        self.max_candidates = max_candidates

    def rules(self) -> protojson.Rules:
        """What the schema says beyond the proto types (``_query`` enforces each)."""
        return {
            "RankRequest.user_id": FieldRule(ID_JSON_SCHEMA, required=True),
            "RankRequest.k": FieldRule(
                {
                    "maximum": self.max_k,
                    "description": f"items to return; 0 or absent: {self.default_k}",
                }
            ),
            "RankRequest.candidates": FieldRule(
                {
                    "items": ID_JSON_SCHEMA,
                    "maxItems": self.max_candidates,
                    "description": "items to rank; absent or empty: the server retrieves",
                }
            ),
            "RankRequest.context": FieldRule(
                {"description": "free-form string attributes; absent or null: none"}
            ),
            "RankResponse.model_version": FieldRule(
                {"description": "model version that scored; 0 for a fallback"}
            ),
            "RankResponse.fallback": FieldRule(
                {"description": "true: popularity fallback, the model was not used"}
            ),
        }


LIMITS_KEY = web.AppKey("limits", RankLimits)


def add_routes(app: web.Application, ranker: Ranker, limits: RankLimits) -> None:
    app[RANKER_KEY] = ranker
    app[LIMITS_KEY] = limits
    app.router.add_post(routes.RANK, rank)
    app.router.add_get(routes.OPENAPI, openapi_handler)


async def rank(request: web.Request) -> web.Response:
    limits = request.app[LIMITS_KEY]
    raw = await request.read()
    try:
        if request.content_type == PROTOBUF:
            query = _parse_proto_query(raw, limits)
        else:
            query = parse_json_query(raw, limits)
    except BadRequest as exc:
        return json_error(400, str(exc))
    response = _response(await request.app[RANKER_KEY].rank(query))
    if _wants_protobuf(request):
        return web.Response(body=response.SerializeToString(), content_type=PROTOBUF)
    return web.Response(body=protojson.to_json(response), content_type=JSON)


def _wants_protobuf(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    if PROTOBUF in accept:
        return True
    if JSON in accept:
        return False
    return request.content_type == PROTOBUF


def parse_json_query(raw: bytes, limits: RankLimits) -> RankQuery:
    try:
        message = protojson.parse_json(raw, ranking_pb2.RankRequest, limits.rules())
    except protojson.BadJson as exc:
        raise BadRequest(str(exc)) from None
    return _query(message, limits)


def _parse_proto_query(raw: bytes, limits: RankLimits) -> RankQuery:
    message = ranking_pb2.RankRequest()
    try:
        message.ParseFromString(raw)
    except DecodeError as exc:
        raise BadRequest(f"body is not a RankRequest: {exc}") from None
    return _query(message, limits)


def _query(message: ranking_pb2.RankRequest, limits: RankLimits) -> RankQuery:
    """The checks beyond the message's types, the same for JSON and protobuf bodies."""
    user_id = message.user_id
    if not user_id:
        raise BadRequest("user_id must be a non-empty string")
    problem = id_problem(user_id)  # the event contract's id rule, as at every edge
    if problem is not None:
        raise BadRequest(f"user_id {problem}")
    k = message.k
    if k > limits.max_k:
        raise BadRequest(
            f"k must be between 1 and {limits.max_k} (0 or absent: {limits.default_k})"
        )
    candidates: list[str] | None = None
    if message.candidates:
        if len(message.candidates) > limits.max_candidates:
            raise BadRequest(f"at most {limits.max_candidates} candidates per request")
        unique = dict.fromkeys(message.candidates)  # dedupe, keeping the caller's order
        if "" in unique:
            raise BadRequest("candidates must be non-empty strings")
        candidates = list(unique)
        problem = ids_problem(candidates)
        if problem is not None:
            raise BadRequest(f"candidates{problem}")
    return RankQuery(
        user_id=user_id,
        k=k or limits.default_k,
        candidates=candidates,
        context=dict(message.context),
    )


def _response(ranking: Ranking) -> ranking_pb2.RankResponse:
    response = ranking_pb2.RankResponse(
        model_version=ranking.model_version, fallback=ranking.fallback
    )
    add = response.items.add
    for item, score in zip(ranking.item_ids, ranking.scores, strict=True):
        add(item_id=item, score=score)
    return response


async def openapi_handler(request: web.Request) -> web.Response:
    return web.json_response(openapi(request.app[LIMITS_KEY]))


def openapi(limits: RankLimits) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the ranking API, generated from ranking.proto."""
    rules = limits.rules()
    schemas = {
        **protojson.request_schemas([ranking_pb2.RankRequest], rules),
        **protojson.response_schemas([ranking_pb2.RankResponse], rules),
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Freshrank ranking API",
            "version": "v1",
            "description": "Rank items for a user with the latest READY model on Triton; "
            "a popularity fallback (flagged) when the model cannot answer. Bodies are JSON "
            "(the proto3 JSON mapping: int64 fields are decimal strings) or protobuf "
            f"(freshrank.v1.RankRequest / RankResponse, {PROTOBUF}).",
        },
        "paths": {
            routes.RANK: {
                "post": {
                    "operationId": "rank",
                    "requestBody": {"required": True, "content": message_content("RankRequest")},
                    "responses": {
                        "200": {
                            "description": "ranked items, best first",
                            "content": message_content("RankResponse"),
                        },
                        "400": {
                            "description": "malformed request; the reason is in `error`",
                            "content": {JSON: {"schema": schema_ref("Error")}},
                        },
                    },
                }
            }
        },
        "components": {"schemas": schemas},
    }
