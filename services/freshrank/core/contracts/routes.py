"""HTTP paths: the services define their routes with these, and every caller (the operator's
probes and scrapes, the feature client, bench, demo, the local stack) builds URLs from them."""

from __future__ import annotations

from urllib.parse import quote

__all__ = [
    "FEATURE_ITEM",
    "FEATURE_ITEMS_BATCH",
    "FEATURE_POPULAR",
    "FEATURE_USER",
    "FEATURE_USERS_BATCH",
    "HEALTH",
    "METRICS",
    "OPENAPI",
    "OPERATIONAL",
    "RANK",
    "READY",
    "feature_item_path",
    "feature_popular_path",
    "feature_user_path",
]

# Every service (core.http.create_app) and the operator's own server.
HEALTH = "/healthz"  # liveness: the process answers
READY = "/readyz"  # readiness: 503 with the reason while a dependency is missing
METRICS = "/metrics"  # Prometheus text format
OPENAPI = "/openapi.json"  # the HTTP services' OpenAPI 3.1 document
OPERATIONAL = frozenset({HEALTH, READY, METRICS})  # not traced: probes and scrapes

# Ranking API (protos/freshrank/v1/ranking.proto).
RANK = "/v1/rank"

# Feature API (protos/freshrank/v1/features.proto); ``{...}`` are aiohttp path parameters.
FEATURE_USER = "/v1/users/{user_id}"
FEATURE_USERS_BATCH = "/v1/users:batch"
FEATURE_ITEM = "/v1/items/{item_id}"
FEATURE_ITEMS_BATCH = "/v1/items:batch"
FEATURE_POPULAR = "/v1/items:popular"


def feature_user_path(user_id: str) -> str:
    """``FEATURE_USER`` for one user (the id percent-encoded: it may hold ``/`` or ``?``)."""
    return FEATURE_USER.format(user_id=quote(user_id, safe=""))


def feature_item_path(item_id: str) -> str:
    return FEATURE_ITEM.format(item_id=quote(item_id, safe=""))


def feature_popular_path(k: int) -> str:
    return f"{FEATURE_POPULAR}?k={int(k)}"
