"""OpenTelemetry tracing: a span per RPC (its context taken from the caller's ``traceparent`` metadata), per
database statement and per Redis command, through the maintained instrumentations for grpc, asyncpg and
redis-py, exported over OTLP/gRPC to OTEL_EXPORTER_OTLP_ENDPOINT.

Off unless an endpoint is configured (or a test hands in an exporter): then nothing is installed, no
interceptor wraps the RPCs and no driver is patched, so tracing costs nothing at all. The asyncpg and redis
instrumentations patch their libraries for the whole process; ``Tracing.close`` undoes it.
"""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from server.config import Settings


class Tracing:
    """The tracer provider of one App, and the server interceptor that starts each RPC's span."""

    def __init__(self, exporter: SpanExporter, service_name: str) -> None:
        self.provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
        # Batched: spans leave on a background thread, never on the RPC's path.
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.interceptor = aio_server_interceptor(tracer_provider=self.provider)
        AsyncPGInstrumentor().instrument(tracer_provider=self.provider)
        RedisInstrumentor().instrument(tracer_provider=self.provider)

    def close(self) -> None:
        """Exports what is left and removes the driver patches."""
        AsyncPGInstrumentor().uninstrument()
        RedisInstrumentor().uninstrument()
        self.provider.shutdown()


def start_tracing(settings: Settings, exporter: SpanExporter | None = None) -> Tracing | None:
    """Tracing to ``exporter``, else to the configured OTLP endpoint; None when neither is given."""
    if exporter is None:
        if settings.otel_exporter_otlp_endpoint is None:
            return None
        # An http:// endpoint is plaintext, https:// TLS (the exporter reads the scheme).
        exporter = OTLPSpanExporter(endpoint=settings.otel_exporter_otlp_endpoint)
    return Tracing(exporter, settings.otel_service_name)
