"""Tracing over the wire: a call carrying a W3C ``traceparent`` gets a server span in the caller's trace, with
the database statements and Redis commands it made as spans of the same trace; the spans reach an OTLP
collector (here a receiver the test runs) when OTEL_EXPORTER_OTLP_ENDPOINT names one."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from server.app import App
from server.tracing import start_tracing
from tests.conftest import stopped
from tests.harness import settings_for


def traceparent() -> tuple[int, int, tuple[tuple[str, str], ...]]:
    trace_id, span_id = random.getrandbits(128), random.getrandbits(64)
    return trace_id, span_id, (("traceparent", f"00-{trace_id:032x}-{span_id:016x}-01"),)


async def get_user(port: int, metadata: tuple[tuple[str, str], ...]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError):  # NOT_FOUND, after a cache miss and a database read
            await user_service_pb2_grpc.UserServiceStub(channel).GetUser(
                pb.GetUserRequest(id=str(uuid.uuid4())), metadata=metadata
            )


async def test_an_rpc_its_statements_and_its_redis_commands_join_the_callers_trace(database_url, redis_url):
    exporter = InMemorySpanExporter()
    app = App(settings_for(database_url, REDIS_URL=redis_url, CACHE_NEAR="false"), span_exporter=exporter)
    await app.start()
    trace_id, parent_id, metadata = traceparent()
    try:
        await get_user(app.port, metadata)
    finally:
        await stopped(app)  # exports the spans still batched
    spans = [span for span in exporter.get_finished_spans() if span.context.trace_id == trace_id]
    rpc = [span for span in spans if span.name == "/dataservice.v1.UserService/GetUser"]
    assert len(rpc) == 1 and rpc[0].parent is not None and rpc[0].parent.span_id == parent_id
    systems = {span.attributes.get("db.system") for span in spans}
    assert {"postgresql", "redis"} <= systems, [(span.name, dict(span.attributes)) for span in spans]


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def Export(self, request, context):  # noqa: N802 (the generated method name)
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    server = grpc.aio.server()
    servicer = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, port
    await server.stop(0)


async def test_spans_are_exported_over_otlp_to_the_configured_collector(database_url, receiver):
    servicer, port = receiver
    app = App(settings_for(
        database_url, OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}", OTEL_SERVICE_NAME="dataservice-test"
    ))
    await app.start()
    trace_id, _, metadata = traceparent()
    try:
        await get_user(app.port, metadata)
    finally:
        await stopped(app)
    exported = [
        (resource.resource, span)
        for request in servicer.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
        if int.from_bytes(span.trace_id, "big") == trace_id
    ]
    assert any(span.name == "/dataservice.v1.UserService/GetUser" for _, span in exported)
    names = {attribute.value.string_value for resource, _ in exported for attribute in resource.attributes
             if attribute.key == "service.name"}
    assert names == {"dataservice-test"}


def test_without_an_endpoint_nothing_is_traced():
    assert start_tracing(settings_for("postgresql://unused@127.0.0.1/x")) is None
