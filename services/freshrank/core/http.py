"""The aiohttp plumbing every service shares: health, readiness, Prometheus, traces, errors.

``create_app`` returns an application with ``/healthz``, ``/readyz`` and ``/metrics`` and
middlewares that (1) join the caller's ``traceparent`` and open a server span, (2) record the
request latency histogram with the route label the operator's autoscaler reads, and (3) turn
any escaping exception into a JSON error without a stack trace.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest

from freshrank.core.contracts import routes
from freshrank.core.contracts.metrics import REQUEST_LATENCY
from freshrank.core.telemetry import context_from_headers

__all__ = [
    "LATENCY_BUCKETS",
    "REGISTRY_KEY",
    "ReadinessCheck",
    "create_app",
    "freeze_startup_heap",
    "json_error",
    "request_latency_histogram",
    "route_label",
    "serve",
]

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
_READINESS_KEY = web.AppKey("readiness", list[ReadinessCheck])

# Buckets dense in 1-50 ms, where ranking latency targets live.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
# Every service's request latency; the operator's autoscaler and the rendered HPA/KEDA queries
# read it by this name.


def request_latency_histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        REQUEST_LATENCY,
        "HTTP request latency by route",
        ["route", "method", "status"],
        registry=registry,
        buckets=LATENCY_BUCKETS,
    )


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


def route_label(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return "unmatched"
    return info.route.resource.canonical


def _latency_middleware(histogram: Histogram) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            histogram.labels(
                route=route_label(request), method=request.method, status=str(status)
            ).observe(time.perf_counter() - start)

    return middleware


def _tracing_middleware(service: str) -> Any:
    tracer = trace.get_tracer(f"freshrank.{service}")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = route_label(request)
        if route in routes.OPERATIONAL:
            return await handler(request)
        parent = context_from_headers(dict(request.headers))
        with tracer.start_as_current_span(
            f"{request.method} {route}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "http.route": route},
        ) as span:
            response = await handler(request)
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response

    return middleware


@web.middleware
async def _error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        response = json_error(exc.status, exc.reason)
        # Keep what the error says beyond its body: Allow on a 405, Retry-After...
        for name, value in exc.headers.items():
            if name.lower() not in {"content-type", "content-length"}:
                response.headers.add(name, value)
        return response
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "internal error")


def create_app(
    service: str,
    *,
    registry: CollectorRegistry | None = None,
    readiness: list[ReadinessCheck] | None = None,
) -> web.Application:
    """An application with the shared endpoints; add the service's routes to it."""
    registry = registry or CollectorRegistry()
    histogram = request_latency_histogram(registry)
    app = web.Application(
        middlewares=[
            _latency_middleware(histogram),
            _tracing_middleware(service),
            _error_middleware,
        ]
    )
    app[REGISTRY_KEY] = registry
    app[_READINESS_KEY] = list(readiness or [])
    app.router.add_get(routes.HEALTH, _healthz)
    app.router.add_get(routes.READY, _readyz)
    app.router.add_get(routes.METRICS, _metrics)
    return app


async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    details: dict[str, Any] = {}
    ready = True
    for check in request.app[_READINESS_KEY]:
        ok, info = await check()
        ready = ready and ok
        details.update(info)
    return web.json_response({"ready": ready, **details}, status=200 if ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start serving ``app``; the caller owns ``runner.cleanup()``."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("listening", extra={"host": host, "port": port})
    return runner


def freeze_startup_heap() -> None:
    """Exempt everything alive after a service's startup from garbage collection.

    Modules (torch's above all), SQLAlchemy metadata, protobuf descriptors and the like live
    as long as the process, yet every full collection walks them: 120-140 ms pauses of the
    event loop (a whole batch of requests late) in ``freshrank bench feature`` before this,
    70 ms in a process that imported torch. Frozen, a full collection only walks what was
    allocated since.
    """
    gc.collect()
    gc.freeze()
