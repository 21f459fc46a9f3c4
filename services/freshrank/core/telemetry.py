"""OpenTelemetry setup and W3C trace-context propagation through Kafka headers and HTTP.

Export goes to OTLP/HTTP when an endpoint is configured; tests pass their own exporter
(``InMemorySpanExporter``) and read finished spans back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

__all__ = [
    "KafkaHeaders",
    "context_from_headers",
    "headers_with_trace",
    "setup_tracing",
]

KafkaHeaders = Sequence[tuple[str, bytes | str | None]]


def setup_tracing(
    service: str,
    *,
    otlp_endpoint: str = "",
    sample_ratio: float = 1.0,
    exporter: SpanExporter | None = None,
) -> TracerProvider:
    """Install a global tracer provider for ``service`` and return it (for shutdown)."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        sampler=ParentBasedTraceIdRatio(sample_ratio),
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    return provider


def headers_with_trace(
    headers: Iterable[tuple[str, bytes]] = (),
    ctx: otel_context.Context | None = None,
) -> list[tuple[str, str | bytes | None]]:
    """Kafka headers plus ``traceparent``/``tracestate`` of ``ctx`` (default: the current one)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=ctx)
    out: list[tuple[str, str | bytes | None]] = list(headers)
    out.extend((key, value.encode()) for key, value in carrier.items())
    return out


def context_from_headers(
    headers: KafkaHeaders | Mapping[str, str] | None,
) -> otel_context.Context:
    """The trace context a producer put in Kafka headers (or HTTP headers)."""
    if headers is None:
        return otel_context.Context()
    if isinstance(headers, Mapping):
        return propagate.extract(headers)
    carrier = {
        key.lower(): value.decode() if isinstance(value, bytes) else value
        for key, value in headers
        if value is not None
    }
    return propagate.extract(carrier)
