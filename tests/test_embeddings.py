"""EmbeddingService over the wire on PostgreSQL with pgvector: collections, items, searches (approximate,
exact, filtered, by id, by examples), expiry, validation, and per-request settings that stay in their
transaction."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from dataservice.v1 import common_pb2
from dataservice.v1 import content_service_pb2 as content_pb
from dataservice.v1 import embedding_service_pb2 as pb
from dataservice.v1 import embedding_service_pb2_grpc as pb_grpc
from google.protobuf import struct_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.db.migrate import Migrator, load_migrations
from tests.grpc_errors import bad_request_fields, fails
from tests.harness import MIGRATIONS, new_user, settings_for

pytestmark = pytest.mark.pgvector

COSINE = pb.DISTANCE_METRIC_COSINE
L2 = pb.DISTANCE_METRIC_L2
INNER_PRODUCT = pb.DISTANCE_METRIC_INNER_PRODUCT


@pytest.fixture(scope="module")
def embeddings(channel: grpc.aio.Channel) -> pb_grpc.EmbeddingServiceStub:
    return pb_grpc.EmbeddingServiceStub(channel)


def collection_name() -> str:
    return f"c_{uuid.uuid4().hex[:16]}"


async def new_collection(embeddings, dimension: int = 8, metric: int = COSINE, **fields: Any) -> pb.Collection:
    collection = pb.Collection(name=collection_name(), dimension=dimension, distance_metric=metric, **fields)
    return (await embeddings.CreateCollection(pb.CreateCollectionRequest(collection=collection))).collection


def item(vector: list[float], *, item_id: str = "", metadata: dict[str, Any] | None = None, **fields: Any) -> pb.Embedding:
    message = pb.Embedding(id=item_id or str(uuid.uuid4()), vector=vector, **fields)
    if metadata is not None:
        message.metadata.update(metadata)
    return message


async def upsert(embeddings, collection: str, items: list[pb.Embedding]) -> int:
    request = pb.UpsertEmbeddingsRequest(collection=collection, embeddings=items)
    return (await embeddings.UpsertEmbeddings(request)).upserted_count


def unit(dimension: int, axis: int) -> list[float]:
    return [1.0 if index == axis else 0.0 for index in range(dimension)]


def random_vectors(count: int, dimension: int, seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.gauss(0, 1) for _ in range(dimension)] for _ in range(count)]


async def search(
    embeddings, collection: str, vector: list[float], *, timeout: float | None = None, **fields: Any
) -> pb.SearchEmbeddingsResponse:
    request = pb.SearchEmbeddingsRequest(collection=collection, vector=pb.Vector(values=vector), **fields)
    return await embeddings.SearchEmbeddings(request, timeout=timeout)


def exact_order(query: list[float], stored: dict[str, list[float]], score) -> list[str]:
    return sorted(stored, key=lambda key: (-score(query, stored[key]), key))


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def negative_l2(a: list[float], b: list[float]) -> float:
    return -math.dist(a, b)


# Collections


async def test_a_collection_is_created_with_defaults_read_listed_and_deleted(embeddings):
    created = await new_collection(embeddings, dimension=3)
    assert (created.dimension, created.distance_metric, created.hnsw_m, created.hnsw_ef_construction) == (3, COSINE, 16, 64)
    assert created.etag and created.create_time.seconds > 0
    got = (await embeddings.GetCollection(pb.GetCollectionRequest(name=created.name))).collection
    assert got == created
    listed = await list_all(embeddings)
    assert created.name in listed and listed == sorted(listed)
    await embeddings.DeleteCollection(pb.DeleteCollectionRequest(name=created.name, etag=created.etag))
    error = await fails(embeddings.GetCollection(pb.GetCollectionRequest(name=created.name)))
    assert error.code() is grpc.StatusCode.NOT_FOUND


async def list_all(embeddings) -> list[str]:
    names: list[str] = []
    token = ""
    while True:
        page = await embeddings.ListCollections(pb.ListCollectionsRequest(page_size=2, page_token=token))
        names += [collection.name for collection in page.collections]
        token = page.next_page_token
        if not token:
            return names


async def test_a_taken_name_is_already_exists_and_a_request_id_retry_returns_the_first_collection(embeddings):
    request_id = str(uuid.uuid4())
    collection = pb.Collection(name=collection_name(), dimension=4, distance_metric=L2)
    request = pb.CreateCollectionRequest(collection=collection, request_id=request_id)
    first, retry = await asyncio.gather(embeddings.CreateCollection(request), embeddings.CreateCollection(request))
    assert first.collection == retry.collection
    again = await fails(embeddings.CreateCollection(pb.CreateCollectionRequest(collection=collection)))
    assert again.code() is grpc.StatusCode.ALREADY_EXISTS
    other = pb.CreateCollectionRequest(collection=pb.Collection(name=collection_name(), dimension=4, distance_metric=L2),
                                       request_id=request_id)
    assert (await fails(embeddings.CreateCollection(other))).code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_stale_etag_does_not_delete_the_collection_that_replaced_it(embeddings):
    first = await new_collection(embeddings)
    await embeddings.DeleteCollection(pb.DeleteCollectionRequest(name=first.name))
    second = (await embeddings.CreateCollection(pb.CreateCollectionRequest(
        collection=pb.Collection(name=first.name, dimension=8, distance_metric=COSINE)))).collection
    assert second.etag != first.etag
    error = await fails(embeddings.DeleteCollection(pb.DeleteCollectionRequest(name=first.name, etag=first.etag)))
    assert error.code() is grpc.StatusCode.ABORTED
    await embeddings.GetCollection(pb.GetCollectionRequest(name=first.name))


@pytest.mark.parametrize(
    ("collection", "fields"),
    [
        (pb.Collection(name="Bad-Name", dimension=3, distance_metric=COSINE), {"collection.name"}),
        (pb.Collection(name="ok", dimension=0, distance_metric=COSINE), {"collection.dimension"}),
        (pb.Collection(name="ok", dimension=2001, distance_metric=COSINE), {"collection.dimension"}),
        (pb.Collection(name="ok", dimension=4001, distance_metric=COSINE, half_precision=True), {"collection.dimension"}),
        (pb.Collection(name="ok", dimension=3), {"collection.distance_metric"}),
        (pb.Collection(name="ok", dimension=3, distance_metric=L2, hnsw_m=101), {"collection.hnsw_m"}),
        (pb.Collection(name="ok", dimension=3, distance_metric=L2, hnsw_m=40, hnsw_ef_construction=64),
         {"collection.hnsw_ef_construction"}),
    ],
)
async def test_create_collection_names_each_bad_field(embeddings, collection, fields):
    error = await fails(embeddings.CreateCollection(pb.CreateCollectionRequest(collection=collection)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(error) == fields


async def test_a_half_precision_collection_takes_4000_dimensions_and_stores_rounded_values(embeddings):
    collection = await new_collection(embeddings, dimension=4000, metric=L2, half_precision=True)
    assert collection.half_precision
    vector = [0.1] * 3999 + [1000.3]
    stored = item(vector)
    await upsert(embeddings, collection.name, [stored])
    got = (await embeddings.GetEmbedding(pb.GetEmbeddingRequest(collection=collection.name, id=stored.id))).embedding
    assert got.vector[0] == pytest.approx(0.1, rel=1e-3) and got.vector[-1] == pytest.approx(1000.3, rel=1e-3)
    too_big = await fails(upsert(embeddings, collection.name, [item([70000.0] * 4000)]))
    assert bad_request_fields(too_big) == {"embeddings[0].vector"}


# Items


async def test_embeddings_are_upserted_read_replaced_and_deleted(embeddings, contents, users):
    collection = await new_collection(embeddings, dimension=3)
    author = await new_user(users)
    content = (await contents.CreateContent(content_pb.CreateContentRequest(
        content=content_pb.Content(author_id=author, title="t")))).content
    first = item([1, 2, 3], metadata={"lang": "en", "n": 1}, tags=["a", "b"], content_id=content.id)
    second = item([3, 2, 1])
    assert await upsert(embeddings, collection.name, [first, second]) == 2
    got = (await embeddings.GetEmbedding(pb.GetEmbeddingRequest(collection=collection.name, id=first.id))).embedding
    assert (list(got.vector), dict(got.metadata), list(got.tags), got.content_id) == (
        [1, 2, 3], {"lang": "en", "n": 1}, ["a", "b"], content.id)
    assert got.create_time == got.update_time

    replaced = item([0, 0, 1], item_id=first.id)
    assert await upsert(embeddings, collection.name, [replaced]) == 1
    got = (await embeddings.GetEmbedding(pb.GetEmbeddingRequest(collection=collection.name, id=first.id))).embedding
    assert (list(got.vector), dict(got.metadata), list(got.tags), got.content_id) == ([0, 0, 1], {}, [], "")
    assert got.update_time.ToDatetime() > got.create_time.ToDatetime()

    missing = str(uuid.uuid4())
    batch = await embeddings.BatchGetEmbeddings(pb.BatchGetEmbeddingsRequest(
        collection=collection.name, ids=[second.id, missing, first.id, second.id]))
    assert [e.id for e in batch.embeddings] == [second.id, first.id] and list(batch.missing_ids) == [missing]

    deleted = await embeddings.DeleteEmbeddings(pb.DeleteEmbeddingsRequest(
        collection=collection.name, ids=[first.id, missing]))
    assert deleted.deleted_count == 1
    error = await fails(embeddings.GetEmbedding(pb.GetEmbeddingRequest(collection=collection.name, id=first.id)))
    assert error.code() is grpc.StatusCode.NOT_FOUND


async def test_an_unknown_content_id_is_not_found_and_nothing_of_the_batch_is_written(embeddings):
    collection = await new_collection(embeddings, dimension=2)
    good, bad = item([1, 0]), item([0, 1], content_id=str(uuid.uuid4()))
    error = await fails(upsert(embeddings, collection.name, [good, bad]))
    assert error.code() is grpc.StatusCode.NOT_FOUND and bad.content_id in error.details()
    batch = await embeddings.BatchGetEmbeddings(pb.BatchGetEmbeddingsRequest(collection=collection.name, ids=[good.id]))
    assert list(batch.missing_ids) == [good.id]


async def test_deleting_content_deletes_its_embeddings(embeddings, contents, users):
    collection = await new_collection(embeddings, dimension=2)
    author = await new_user(users)
    content = (await contents.CreateContent(content_pb.CreateContentRequest(
        content=content_pb.Content(author_id=author, title="t")))).content
    stored = item([1, 1], content_id=content.id)
    await upsert(embeddings, collection.name, [stored])
    await contents.DeleteContent(content_pb.DeleteContentRequest(id=content.id))
    error = await fails(embeddings.GetEmbedding(pb.GetEmbeddingRequest(collection=collection.name, id=stored.id)))
    assert error.code() is grpc.StatusCode.NOT_FOUND


def in_the(seconds: float) -> timestamp_pb2.Timestamp:
    moment = timestamp_pb2.Timestamp()
    moment.FromDatetime(datetime.now(UTC) + timedelta(seconds=seconds))
    return moment


async def test_an_expired_embedding_is_never_returned_and_the_purge_deletes_it(embeddings, app, db):
    collection = await new_collection(embeddings, dimension=2)
    lasting, expiring = item([1, 0]), item([1, 0.1], expire_time=in_the(1.0))
    await upsert(embeddings, collection.name, [lasting, expiring])
    assert {hit.id for hit in (await search(embeddings, collection.name, [1, 0])).results} == {lasting.id, expiring.id}
    await asyncio.sleep(1.2)
    assert [hit.id for hit in (await search(embeddings, collection.name, [1, 0])).results] == [lasting.id]
    error = await fails(embeddings.GetEmbedding(pb.GetEmbeddingRequest(collection=collection.name, id=expiring.id)))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    by_id = pb.SearchEmbeddingsRequest(collection=collection.name, item_id=expiring.id)
    assert (await fails(embeddings.SearchEmbeddings(by_id))).code() is grpc.StatusCode.NOT_FOUND
    table = f"embeddings.collection_{int(collection.etag)}"
    assert await db.fetchval(f"SELECT count(*) FROM {table}") == 2
    assert await app.embedding_purge.run_once() >= 1
    assert await db.fetchval(f"SELECT count(*) FROM {table}") == 1


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        (lambda r: r.embeddings[1].vector.append(1.0), {"embeddings[1].vector"}),
        (lambda r: r.embeddings[0].vector.__setitem__(2, math.nan), {"embeddings[0].vector"}),
        (lambda r: r.embeddings[1].vector.__setitem__(0, math.inf), {"embeddings[1].vector"}),
        (lambda r: r.embeddings[0].vector.__setitem__(slice(None), [0.0, 0.0, 0.0]), {"embeddings[0].vector"}),
        (lambda r: setattr(r.embeddings[1], "id", r.embeddings[0].id), {"embeddings[1].id"}),
        (lambda r: setattr(r.embeddings[0], "id", "not-a-uuid"), {"embeddings[0].id"}),
        (lambda r: setattr(r.embeddings[1], "content_id", "nope"), {"embeddings[1].content_id"}),
        (lambda r: r.embeddings[0].metadata.update({"big": "x" * 17000}), {"embeddings[0].metadata"}),
        (lambda r: r.embeddings[1].tags.extend(f"t{i}" for i in range(33)), {"embeddings[1].tags"}),
        (lambda r: r.embeddings[0].expire_time.CopyFrom(in_the(-60)), {"embeddings[0].expire_time"}),
        (lambda r: r.embeddings.extend(item([1, 1, 1]) for _ in range(999)), {"embeddings"}),
        (lambda r: setattr(r, "collection", "Not A Name"), {"collection"}),
    ],
)
async def test_upsert_names_the_item_and_field_of_each_bad_input_and_writes_nothing(embeddings, change, fields):
    collection = await new_collection(embeddings, dimension=3)
    request = pb.UpsertEmbeddingsRequest(collection=collection.name, embeddings=[item([1, 2, 3]), item([3, 2, 1])])
    change(request)
    error = await fails(embeddings.UpsertEmbeddings(request))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_fields(error) == fields
    ids = [e.id for e in request.embeddings[:2] if len(e.id) == 36]
    if ids:
        batch = await embeddings.BatchGetEmbeddings(pb.BatchGetEmbeddingsRequest(collection=collection.name, ids=ids))
        assert not batch.embeddings


async def test_an_unknown_collection_is_not_found_for_every_item_method(embeddings):
    name = collection_name()
    calls = [
        embeddings.UpsertEmbeddings(pb.UpsertEmbeddingsRequest(collection=name, embeddings=[item([1])])),
        embeddings.GetEmbedding(pb.GetEmbeddingRequest(collection=name, id=str(uuid.uuid4()))),
        embeddings.BatchGetEmbeddings(pb.BatchGetEmbeddingsRequest(collection=name, ids=[str(uuid.uuid4())])),
        embeddings.DeleteEmbeddings(pb.DeleteEmbeddingsRequest(collection=name, ids=[str(uuid.uuid4())])),
        search(embeddings, name, [1.0]),
        embeddings.RecommendEmbeddings(pb.RecommendEmbeddingsRequest(collection=name, positive_ids=[str(uuid.uuid4())])),
        embeddings.DeleteCollection(pb.DeleteCollectionRequest(name=name)),
    ]
    for call in calls:
        assert (await fails(call)).code() is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"top_k": 1001}, {"top_k"}),
        ({"top_k": -1}, {"top_k"}),
        ({"params": pb.SearchParams(ef_search=1001)}, {"params.ef_search"}),
        ({"params": pb.SearchParams(scan_budget=1_000_001)}, {"params.scan_budget"}),
        ({"filter": pb.EmbeddingFilter(content_statuses=[common_pb2.CONTENT_STATUS_UNSPECIFIED])},
         {"filter.content_statuses[0]"}),
        ({"filter": pb.EmbeddingFilter(any_tags=[""])}, {"filter.any_tags[0]"}),
    ],
)
async def test_search_names_each_bad_parameter(embeddings, fields, bad):
    collection = await new_collection(embeddings, dimension=2)
    error = await fails(search(embeddings, collection.name, [1, 0], **fields))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and bad_request_fields(error) == bad


async def test_a_search_vector_must_fit_the_collection(embeddings):
    collection = await new_collection(embeddings, dimension=2)
    for vector in ([1.0], [math.nan, 1.0], [0.0, 0.0]):
        error = await fails(search(embeddings, collection.name, vector))
        assert bad_request_fields(error) == {"vector.values"}
    no_query = await fails(embeddings.SearchEmbeddings(pb.SearchEmbeddingsRequest(collection=collection.name)))
    assert bad_request_fields(no_query) == {"query"}


# Searches


@pytest.mark.parametrize(("metric", "score"), [(COSINE, cosine), (L2, negative_l2), (INNER_PRODUCT, dot)])
async def test_search_scores_follow_the_metric_higher_is_more_similar_and_match_an_exact_scan(embeddings, metric, score):
    collection = await new_collection(embeddings, dimension=8, metric=metric)
    vectors = random_vectors(200, 8, seed=metric)
    items = [item(vector) for vector in vectors]
    await upsert(embeddings, collection.name, items)
    stored = {i.id: list(i.vector) for i in items}
    query = random_vectors(1, 8, seed=99)[0]
    expected = exact_order(query, stored, score)[:10]
    for params in (pb.SearchParams(exact=True), pb.SearchParams(ef_search=200)):
        response = await search(embeddings, collection.name, query, top_k=10, params=params)
        assert [hit.id for hit in response.results] == expected
        for hit in response.results:
            assert hit.score == pytest.approx(score(query, stored[hit.id]), rel=1e-4, abs=1e-4)
        assert not response.truncated


async def test_a_search_by_item_id_finds_its_neighbours_and_leaves_it_out(embeddings):
    collection = await new_collection(embeddings, dimension=8, metric=L2)
    items = [item(vector) for vector in random_vectors(50, 8, seed=3)]
    await upsert(embeddings, collection.name, items)
    stored = {i.id: list(i.vector) for i in items}
    anchor = items[0]
    response = await embeddings.SearchEmbeddings(pb.SearchEmbeddingsRequest(
        collection=collection.name, item_id=anchor.id, top_k=5, params=pb.SearchParams(exact=True)))
    others = {key: value for key, value in stored.items() if key != anchor.id}
    assert [hit.id for hit in response.results] == exact_order(stored[anchor.id], others, negative_l2)[:5]
    unknown = pb.SearchEmbeddingsRequest(collection=collection.name, item_id=str(uuid.uuid4()))
    assert (await fails(embeddings.SearchEmbeddings(unknown))).code() is grpc.StatusCode.NOT_FOUND


async def test_filters_on_metadata_tags_and_content_status(embeddings, contents, users):
    collection = await new_collection(embeddings, dimension=2)
    author = await new_user(users)

    async def new_content(status: int) -> str:
        request = content_pb.CreateContentRequest(content=content_pb.Content(author_id=author, title="t", status=status))
        return (await contents.CreateContent(request)).content.id

    published, draft = await new_content(common_pb2.CONTENT_STATUS_PUBLISHED), await new_content(common_pb2.CONTENT_STATUS_DRAFT)
    a = item([1, 0], metadata={"lang": "en", "level": 1}, tags=["x", "y"], content_id=published)
    b = item([1, 0.1], metadata={"lang": "fr"}, tags=["y"], content_id=draft)
    c = item([1, 0.2], metadata={"lang": "en", "level": 2}, tags=["z"])
    await upsert(embeddings, collection.name, [a, b, c])

    async def found(**where: Any) -> list[str]:
        response = await search(embeddings, collection.name, [1, 0], filter=pb.EmbeddingFilter(**where))
        return [hit.id for hit in response.results]

    def metadata(value: dict[str, Any]) -> struct_pb2.Struct:
        message = struct_pb2.Struct()
        message.update(value)
        return message

    assert await found(metadata=metadata({"lang": "en"})) == [a.id, c.id]
    assert await found(metadata=metadata({"lang": "en", "level": 2})) == [c.id]
    assert await found(all_tags=["x", "y"]) == [a.id]
    assert await found(any_tags=["x", "z"]) == [a.id, c.id]
    assert await found(content_statuses=[common_pb2.CONTENT_STATUS_PUBLISHED]) == [a.id]
    assert await found(content_statuses=[common_pb2.CONTENT_STATUS_PUBLISHED, common_pb2.CONTENT_STATUS_DRAFT]) == [a.id, b.id]
    assert await found(any_tags=["y"], metadata=metadata({"lang": "fr"})) == [b.id]


async def clustered_collection(embeddings, db) -> tuple[str, list[float], set[str]]:
    """A collection where the filter's matches lie far from the query: 400 items tagged "near" around the query,
    400 tagged "far" around its opposite. The planner, knowing half the rows match (after ANALYZE), walks the
    index, and the iterative scan has to pass every "near" item before it meets a "far" one."""
    collection = await new_collection(embeddings, dimension=8)
    rng = random.Random(11)
    query = unit(8, 0)
    near = [item([1 + rng.gauss(0, 0.3)] + [rng.gauss(0, 0.3) for _ in range(7)], tags=["near"]) for _ in range(400)]
    far = [item([-1 + rng.gauss(0, 0.3)] + [rng.gauss(0, 0.3) for _ in range(7)], tags=["far"]) for _ in range(400)]
    await upsert(embeddings, collection.name, near + far)
    await db.execute(f"ANALYZE embeddings.collection_{int(collection.etag)}")
    return collection.name, query, {i.id for i in far}


async def test_a_filtered_search_returns_k_results_when_k_match_beyond_the_first_candidates(embeddings, db):
    name, query, far = await clustered_collection(embeddings, db)
    response = await search(embeddings, name, query, top_k=10, filter=pb.EmbeddingFilter(all_tags=["far"]),
                            params=pb.SearchParams(ef_search=10))
    assert len(response.results) == 10 and {hit.id for hit in response.results} <= far
    assert not response.truncated and response.scanned_count == 0


async def test_a_filtered_search_out_of_budget_says_it_is_truncated_and_how_many_rows_it_scanned(embeddings, db):
    name, query, far = await clustered_collection(embeddings, db)
    params = pb.SearchParams(ef_search=10, scan_budget=50)
    response = await search(embeddings, name, query, top_k=10, filter=pb.EmbeddingFilter(all_tags=["far"]), params=params)
    assert len(response.results) < 10 and response.truncated
    assert response.scanned_count >= 50
    exact = await search(embeddings, name, query, top_k=10, filter=pb.EmbeddingFilter(all_tags=["far"]),
                         params=pb.SearchParams(exact=True))
    assert len(exact.results) == 10 and not exact.truncated
    none_match = await search(embeddings, name, query, top_k=10, filter=pb.EmbeddingFilter(all_tags=["absent"]),
                              params=params)
    assert not none_match.results and not none_match.truncated


async def test_per_request_search_settings_end_with_the_search_and_never_reach_the_next_caller(start_app, database_url):
    app = await start_app(settings_for(database_url, DB_POOL_MIN_SIZE="1", DB_POOL_MAX_SIZE="1", EMBEDDING_EF_SEARCH="40"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.EmbeddingServiceStub(channel)
        collection = await new_collection(stub, dimension=2)
        await upsert(stub, collection.name, [item([1, 0])])
        await search(stub, collection.name, [1, 0], params=pb.SearchParams(ef_search=900, scan_budget=123456))
        async with app.pool.acquire() as conn:  # the one pooled connection the search ran on
            settings = await conn.fetchrow(
                "SELECT current_setting('hnsw.ef_search') AS ef, current_setting('hnsw.max_scan_tuples') AS budget,"
                " current_setting('hnsw.iterative_scan') AS iterative"
            )
        assert dict(settings) == {"ef": "40", "budget": "20000", "iterative": "off"}  # pgvector's defaults


# Recommend by examples


async def test_recommend_moves_towards_positive_and_away_from_negative_examples(embeddings):
    collection = await new_collection(embeddings, dimension=2, metric=L2)
    grid = {(x, y): item([float(x), float(y)]) for x in range(-5, 6) for y in range(-5, 6)}
    await upsert(embeddings, collection.name, list(grid.values()))
    by_id = {i.id: key for key, i in grid.items()}

    async def recommend(**fields: Any) -> list[tuple[int, int]]:
        request = pb.RecommendEmbeddingsRequest(collection=collection.name, top_k=3,
                                                params=pb.SearchParams(exact=True), **fields)
        return [by_id[hit.id] for hit in (await embeddings.RecommendEmbeddings(request)).results]

    # avg of (2,0) and (4,0) is (3,0), which is itself a stored point; the examples are left out.
    assert (await recommend(positive_ids=[grid[2, 0].id, grid[4, 0].id]))[0] == (3, 0)
    # 2·(3,0) − (0,0) = (6,0), clipped to the grid's edge: (5,0) first.
    assert (await recommend(positive_ids=[grid[2, 0].id, grid[4, 0].id], negative_ids=[grid[0, 0].id]))[0] == (5, 0)
    # Vectors and ids mix: avg((0,4), (0,2)) = (0,3).
    assert (await recommend(positive_vectors=[pb.Vector(values=[0, 4])], positive_ids=[grid[0, 2].id]))[0] == (0, 3)
    missing = str(uuid.uuid4())
    error = await fails(recommend(positive_ids=[grid[0, 0].id], negative_ids=[missing]))
    assert error.code() is grpc.StatusCode.NOT_FOUND and missing in error.details()
    no_positive = await fails(recommend(negative_ids=[grid[0, 0].id]))
    assert bad_request_fields(no_positive) == {"positive_ids"}
    wrong_size = await fails(recommend(positive_vectors=[pb.Vector(values=[1, 2, 3])]))
    assert bad_request_fields(wrong_size) == {"positive_vectors[0].values"}


# Replicas


async def test_a_replica_serves_a_collection_replaced_elsewhere_from_the_new_one(embeddings, start_app, database_url):
    name = collection_name()
    create = pb.CreateCollectionRequest(collection=pb.Collection(name=name, dimension=2, distance_metric=COSINE))
    await embeddings.CreateCollection(create)
    await upsert(embeddings, name, [item([1, 0])])  # this replica now knows the collection as 2-dimensional
    other = await start_app(settings_for(database_url))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{other.port}") as channel:
        replica = pb_grpc.EmbeddingServiceStub(channel)
        await replica.DeleteCollection(pb.DeleteCollectionRequest(name=name))
        create.collection.dimension = 3
        await replica.CreateCollection(create)
    fresh = item([0, 0, 1])
    assert await upsert(embeddings, name, [fresh]) == 1
    assert [hit.id for hit in (await search(embeddings, name, [0, 0, 1])).results] == [fresh.id]


# pgvector arriving


async def embedding_health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = health_pb2.HealthCheckRequest(service="dataservice.v1.EmbeddingService")
        return (await health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)).status


async def test_the_server_creates_pgvector_in_a_database_that_lacks_it(new_database, start_app):
    url = await new_database()
    app = await start_app(settings_for(url))
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
    finally:
        await conn.close()
    assert await embedding_health(app.port) == health_pb2.HealthCheckResponse.SERVING


async def test_without_auto_migration_the_service_waits_for_pgvector_and_serves_once_it_appears(new_database, start_app):
    url = await new_database()
    await Migrator(url, load_migrations(MIGRATIONS), connect_timeout=5, statement_timeout=30).up()
    app = await start_app(settings_for(url, MIGRATE_ON_START="false"))
    assert await embedding_health(app.port) == health_pb2.HealthCheckResponse.NOT_SERVING
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.EmbeddingServiceStub(channel)
        error = await fails(stub.ListCollections(pb.ListCollectionsRequest()))
        assert error.code() is grpc.StatusCode.FAILED_PRECONDITION and "CREATE EXTENSION vector" in error.details()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE EXTENSION vector")
        finally:
            await conn.close()
        for _ in range(100):
            if await embedding_health(app.port) == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.1)
        assert await embedding_health(app.port) == health_pb2.HealthCheckResponse.SERVING
        await new_collection(stub)


# Bulk import


async def import_stream(embeddings, requests: list[pb.ImportEmbeddingsRequest], pause: float = 0.0):
    async def stream():
        for request in requests:
            yield request
            await asyncio.sleep(pause)

    return await embeddings.ImportEmbeddings(stream())


def chunks(collection: str, items: list[pb.Embedding], size: int) -> list[pb.ImportEmbeddingsRequest]:
    return [
        pb.ImportEmbeddingsRequest(collection=collection if start == 0 else "", embeddings=items[start : start + size])
        for start in range(0, len(items), size)
    ]


async def hnsw_indexes(db, collection: pb.Collection) -> list[str]:
    rows = await db.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'embeddings' AND tablename = $1 AND indexdef LIKE '%hnsw%'",
        f"collection_{int(collection.etag)}",
    )
    return [row["indexname"] for row in rows]


async def test_an_import_into_an_empty_collection_builds_the_index_once_and_serves_searches(embeddings, db):
    collection = await new_collection(embeddings, dimension=8, metric=L2)
    items = [item(vector, tags=["bulk"]) for vector in random_vectors(1500, 8, seed=21)]
    response = await import_stream(embeddings, chunks(collection.name, items, 500))
    assert (response.upserted_count, response.index_rebuilt) == (1500, True)
    assert len(await hnsw_indexes(db, collection)) == 1
    stored = {i.id: list(i.vector) for i in items}
    query = random_vectors(1, 8, seed=5)[0]
    found = await search(embeddings, collection.name, query, top_k=10, params=pb.SearchParams(ef_search=200))
    assert [hit.id for hit in found.results] == exact_order(query, stored, negative_l2)[:10]

    again = [item([0.0] * 8, item_id=items[0].id), item([1.0] * 8)]
    response = await import_stream(embeddings, chunks(collection.name, again, 1))
    assert (response.upserted_count, response.index_rebuilt) == (2, False)
    got = await embeddings.GetEmbedding(pb.GetEmbeddingRequest(collection=collection.name, id=items[0].id))
    assert list(got.embedding.vector) == [0.0] * 8


@pytest.mark.parametrize(
    ("second", "fields"),
    [
        (lambda first: [item([1.0] * 8), item([1.0] * 7)], {"embeddings[3].vector"}),
        (lambda first: [item([1.0] * 8, item_id=first[0].id)], {"embeddings[2].id"}),
        (lambda first: [], {"embeddings"}),
    ],
)
async def test_a_bad_message_in_an_import_names_its_item_by_stream_position_and_writes_nothing(embeddings, db, second, fields):
    collection = await new_collection(embeddings, dimension=8)
    first = [item([1.0] * 8), item([2.0] * 8)]
    requests = [pb.ImportEmbeddingsRequest(collection=collection.name, embeddings=first),
                pb.ImportEmbeddingsRequest(embeddings=second(first))]
    error = await fails(import_stream(embeddings, requests))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and bad_request_fields(error) == fields
    batch = await embeddings.BatchGetEmbeddings(pb.BatchGetEmbeddingsRequest(collection=collection.name, ids=[first[0].id]))
    assert not batch.embeddings
    assert len(await hnsw_indexes(db, collection)) == 1  # the dropped index came back with the rollback


async def test_an_import_refuses_another_collection_an_empty_stream_and_unknown_content(embeddings):
    collection = await new_collection(embeddings, dimension=2)
    other = pb.ImportEmbeddingsRequest(collection="elsewhere", embeddings=[item([1, 1])])
    error = await fails(import_stream(embeddings, [pb.ImportEmbeddingsRequest(collection=collection.name,
                                                                              embeddings=[item([1, 0])]), other]))
    assert bad_request_fields(error) == {"collection"}
    assert bad_request_fields(await fails(import_stream(embeddings, []))) == {"collection"}
    unknown = str(uuid.uuid4())
    error = await fails(import_stream(embeddings, [pb.ImportEmbeddingsRequest(
        collection=collection.name, embeddings=[item([1, 0], content_id=unknown)])]))
    assert error.code() is grpc.StatusCode.NOT_FOUND and unknown in error.details()


async def test_an_import_may_run_longer_than_the_budget_of_other_calls(start_app, database_url):
    app = await start_app(settings_for(database_url, DB_COMMAND_TIMEOUT_SECONDS="1"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.EmbeddingServiceStub(channel)
        collection = await new_collection(stub, dimension=2)
        items = [item([1.0, float(n)]) for n in range(3)]
        response = await import_stream(stub, chunks(collection.name, items, 1), pause=0.6)
    assert response.upserted_count == 3


async def test_undecodable_bytes_in_an_import_stream_are_invalid_argument(channel):
    call = channel.stream_unary("/dataservice.v1.EmbeddingService/ImportEmbeddings")

    async def stream():
        yield b"\xff\xff\xff"

    assert (await fails(call(stream()))).code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_oversized_id_lists_and_too_many_examples_are_invalid_argument(embeddings):
    collection = await new_collection(embeddings, dimension=2)
    ids = [str(uuid.uuid4()) for _ in range(1001)]
    batch = await fails(embeddings.BatchGetEmbeddings(pb.BatchGetEmbeddingsRequest(collection=collection.name, ids=ids)))
    assert bad_request_fields(batch) == {"ids"}
    delete = await fails(embeddings.DeleteEmbeddings(pb.DeleteEmbeddingsRequest(collection=collection.name, ids=ids)))
    assert bad_request_fields(delete) == {"ids"}
    none = await fails(embeddings.DeleteEmbeddings(pb.DeleteEmbeddingsRequest(collection=collection.name)))
    assert bad_request_fields(none) == {"ids"}
    examples = await fails(embeddings.RecommendEmbeddings(pb.RecommendEmbeddingsRequest(
        collection=collection.name, positive_ids=ids[:65])))
    assert bad_request_fields(examples) == {"positive_ids"}


async def test_a_search_cut_short_by_its_deadline_is_deadline_exceeded_and_leaves_the_connection_usable(
    start_app, database_url, caplog
):
    """Each search is one statement outside any transaction: cancelled mid-statement, it leaves nothing open on
    its pooled connection for the pool to roll back (which asyncpg reports as an error)."""
    caplog.set_level(logging.WARNING)
    app = await start_app(settings_for(database_url, DB_POOL_MIN_SIZE="1", DB_POOL_MAX_SIZE="1"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.EmbeddingServiceStub(channel)
        collection = await new_collection(stub, dimension=2)
        await upsert(stub, collection.name, [item([1.0, 0.0])])
        holder = await asyncpg.connect(database_url)
        try:  # the search waits for this lock until its deadline cancels it, mid-statement
            async with holder.transaction():
                await holder.execute(f"LOCK TABLE embeddings.collection_{int(collection.etag)} IN ACCESS EXCLUSIVE MODE")
                for params in (pb.SearchParams(), pb.SearchParams(exact=True)):
                    with pytest.raises(grpc.aio.AioRpcError) as raised:
                        await search(stub, collection.name, [1.0, 0.0], params=params, timeout=0.5)
                    assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        finally:
            await holder.close()
        found = await search(stub, collection.name, [1.0, 0.0])  # the pool's one connection serves again
        assert len(found.results) == 1
    answered = {
        code: app.metrics_registry.get_sample_value("grpc_server_handled_total", {
            "grpc_type": "unary", "grpc_service": "dataservice.v1.EmbeddingService",
            "grpc_method": "SearchEmbeddings", "grpc_code": code,
        })
        for code in ("INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED", "CANCELLED")
    }
    # The server ends each call DEADLINE_EXCEEDED, or CANCELLED when the caller's own deadline was first.
    assert (answered["DEADLINE_EXCEEDED"] or 0) + (answered["CANCELLED"] or 0) == 2, answered
    assert not answered["INTERNAL"] and not answered["UNKNOWN"], answered
    assert not [record for record in caplog.records if "active transaction" in record.getMessage()]
