"""Without pgvector (the machine's PostgreSQL 15): the schema migrates, every other service serves, and
EmbeddingService says what is missing — FAILED_PRECONDITION on every method, NOT_SERVING in health."""

from __future__ import annotations

import uuid

import asyncpg
import grpc
import pytest
from dataservice.v1 import content_service_pb2 as content_pb
from dataservice.v1 import content_service_pb2_grpc
from dataservice.v1 import embedding_service_pb2 as pb
from dataservice.v1 import embedding_service_pb2_grpc as pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.app import SERVICE_NAMES, VECTOR_SERVICE_NAMES
from server.db import migrate
from tests.grpc_errors import error_info
from tests.harness import MIGRATIONS, settings_for

pytestmark = pytest.mark.without_pgvector

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
async def server_without_pgvector(new_database, start_app):
    url = await new_database()
    conn = await asyncpg.connect(url)
    try:
        offered = await conn.fetchval("SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'vector')")
    finally:
        await conn.close()
    assert not offered, "this test needs a PostgreSQL without pgvector (the PostgreSQL 15 run)"
    return url, await start_app(settings_for(url))


async def test_the_schema_migrates_and_only_the_embedding_service_is_not_serving(server_without_pgvector):
    url, app = server_without_pgvector
    conn = await asyncpg.connect(url)
    try:
        assert await migrate.current_version(conn) == migrate.latest_version(migrate.load_migrations(MIGRATIONS))
    finally:
        await conn.close()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ["", *SERVICE_NAMES]:
            response = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert response.status == (NOT_SERVING if name in VECTOR_SERVICE_NAMES else SERVING), name


async def test_every_embedding_method_is_failed_precondition_saying_pgvector_is_missing(server_without_pgvector):
    _, app = server_without_pgvector
    some_id = str(uuid.uuid4())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.EmbeddingServiceStub(channel)
        calls = [
            stub.CreateCollection(pb.CreateCollectionRequest(
                collection=pb.Collection(name="c", dimension=3, distance_metric=pb.DISTANCE_METRIC_COSINE))),
            stub.GetCollection(pb.GetCollectionRequest(name="c")),
            stub.ListCollections(pb.ListCollectionsRequest()),
            stub.DeleteCollection(pb.DeleteCollectionRequest(name="c")),
            stub.UpsertEmbeddings(pb.UpsertEmbeddingsRequest(
                collection="c", embeddings=[pb.Embedding(id=some_id, vector=[1, 2, 3])])),
            stub.GetEmbedding(pb.GetEmbeddingRequest(collection="c", id=some_id)),
            stub.BatchGetEmbeddings(pb.BatchGetEmbeddingsRequest(collection="c", ids=[some_id])),
            stub.DeleteEmbeddings(pb.DeleteEmbeddingsRequest(collection="c", ids=[some_id])),
            stub.SearchEmbeddings(pb.SearchEmbeddingsRequest(collection="c", vector=pb.Vector(values=[1, 2, 3]))),
            stub.RecommendEmbeddings(pb.RecommendEmbeddingsRequest(collection="c", positive_ids=[some_id])),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "pgvector" in raised.value.details()
            assert error_info(raised.value).reason == "PGVECTOR_MISSING"


async def test_hybrid_search_is_failed_precondition_and_full_text_search_still_serves(server_without_pgvector):
    _, app = server_without_pgvector
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        contents = content_service_pb2_grpc.ContentServiceStub(channel)
        await contents.SearchContents(content_pb.SearchContentsRequest(query="anything"))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await contents.SearchContents(content_pb.SearchContentsRequest(
                query="anything", vector_query=content_pb.VectorQuery(collection="c", vector=[1.0])))
        assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
