"""EmbeddingService: collections of vectors, their items, and nearest-neighbour searches."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from uuid import UUID

import grpc
from dataservice.v1 import embedding_service_pb2 as pb
from dataservice.v1 import embedding_service_pb2_grpc as pb_grpc

from server.api import paging
from server.api.validation import Violations
from server.cache.embeddings import Embeddings
from server.domain.common import CreateRequest, request_fingerprint
from server.domain.embeddings import (
    MAX_DIMENSION,
    MAX_HALF_DIMENSION,
    MAX_HALF_VALUE,
    Collection,
    DistanceMetric,
    EmbeddingFilter,
    NewCollection,
    NewEmbedding,
    Query,
    SearchParams,
    SearchResult,
)
from server.errors import InvalidArgument, NotFound
from server.messages.embeddings import METRIC_FROM_MESSAGE, fill_collection, fill_embedding, fill_hit

_NAME = re.compile(r"[a-z][a-z0-9_]{0,47}")
DEFAULT_HNSW_M = 16
DEFAULT_HNSW_EF_CONSTRUCTION = 64
MAX_BATCH = 1000
MAX_EXAMPLES = 64
DEFAULT_TOP_K = 10
MAX_TOP_K = 1000
MAX_EF_SEARCH = 1000
MAX_SCAN_BUDGET = 1_000_000
MAX_METADATA_BYTES = 16 * 1024
_LIST_COLLECTIONS = "dataservice.v1.EmbeddingService.ListCollections"


class EmbeddingServicer(pb_grpc.EmbeddingServiceServicer):
    """Serves dataservice.v1.EmbeddingService over ``Embeddings`` (collection catalogue + store)."""

    def __init__(
        self,
        embeddings: Embeddings,
        page_tokens: paging.PageTokens,
        *,
        ef_search: int,
        scan_budget: int,
        index_build_memory: str,
    ) -> None:
        self._embeddings = embeddings
        self._page_tokens = page_tokens
        self._ef_search = ef_search
        self._scan_budget = scan_budget
        self._index_build_memory = index_build_memory

    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateCollectionResponse:
        check = Violations()
        new = _new_collection(check, request.collection)
        request_id = check.uuid("request_id", request.request_id, required=False)
        check.raise_if_any()
        assert new is not None
        fingerprint = request_fingerprint(
            new.name, new.dimension, new.metric.stored, new.half_precision, new.hnsw_m, new.hnsw_ef_construction
        )
        created = await self._embeddings.create_collection(
            new, CreateRequest(request_id, fingerprint) if request_id else None
        )
        response = pb.CreateCollectionResponse()
        fill_collection(response.collection, created)
        return response

    async def GetCollection(
        self, request: pb.GetCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCollectionResponse:
        check = Violations()
        name = collection_name(check, "name", request.name)
        check.raise_if_any()
        response = pb.GetCollectionResponse()
        fill_collection(response.collection, await self._embeddings.get_collection(name))
        return response

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCollectionsResponse:
        size = paging.page_size(request.page_size)
        after = self._page_tokens.decode_named(_LIST_COLLECTIONS, b"", request.page_token)
        collections = await self._embeddings.list_collections(after=after, limit=size + 1)
        response = pb.ListCollectionsResponse()
        if len(collections) > size:
            collections = collections[:size]
            response.next_page_token = self._page_tokens.encode_named(_LIST_COLLECTIONS, b"", collections[-1].name)
        for collection in collections:
            fill_collection(response.collections.add(), collection)
        return response

    async def DeleteCollection(
        self, request: pb.DeleteCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteCollectionResponse:
        check = Violations()
        name = collection_name(check, "name", request.name)
        expected_id = check.etag("etag", request.etag)
        check.raise_if_any()
        await self._embeddings.delete_collection(name, expected_id=expected_id)
        return pb.DeleteCollectionResponse()

    async def UpsertEmbeddings(
        self, request: pb.UpsertEmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpsertEmbeddingsResponse:
        check = Violations()
        name = collection_name(check, "collection", request.collection)
        if not 1 <= len(request.embeddings) <= MAX_BATCH:
            check.add("embeddings", f"must hold 1 to {MAX_BATCH} embeddings, not {len(request.embeddings)}")
        check.raise_if_any()
        now = datetime.now(UTC)

        def prepare(collection: Collection) -> list[NewEmbedding]:
            check = Violations()
            items = [_new_embedding(check, collection, index, given, now) for index, given in enumerate(request.embeddings)]
            _distinct(check, "embeddings", [item.id for item in items])
            check.raise_if_any()
            return items

        return pb.UpsertEmbeddingsResponse(upserted_count=await self._embeddings.upsert(name, prepare))

    async def ImportEmbeddings(
        self, requests: AsyncIterator[pb.ImportEmbeddingsRequest], context: grpc.aio.ServicerContext
    ) -> pb.ImportEmbeddingsResponse:
        first = await anext(requests, None)
        check = Violations()
        if first is None:
            check.add("collection", "required: the stream held no request")
            check.raise_if_any()
        assert first is not None
        name = collection_name(check, "collection", first.collection)
        check.raise_if_any()
        now = datetime.now(UTC)

        async def batches(collection: Collection) -> AsyncIterator[list[NewEmbedding]]:
            seen: set[UUID] = set()
            offset = 0
            request: pb.ImportEmbeddingsRequest | None = first
            while request is not None:
                check = Violations()
                if request.collection not in ("", name):
                    check.add("collection", f"must be empty or {name!r}, as in the first request")
                if not 1 <= len(request.embeddings) <= MAX_BATCH:
                    check.add("embeddings", f"must hold 1 to {MAX_BATCH} embeddings per request")
                items = [
                    _new_embedding(check, collection, offset + index, given, now)
                    for index, given in enumerate(request.embeddings)
                ]
                for index, item in enumerate(items):
                    if item.id in seen:
                        check.add(f"embeddings[{offset + index}].id", "repeats an id given earlier in the stream")
                    seen.add(item.id)
                check.raise_if_any()
                yield items
                offset += len(items)
                request = await anext(requests, None)

        imported = await self._embeddings.import_embeddings(name, batches, index_memory=self._index_build_memory)
        return pb.ImportEmbeddingsResponse(upserted_count=imported.count, index_rebuilt=imported.index_rebuilt)

    async def GetEmbedding(
        self, request: pb.GetEmbeddingRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetEmbeddingResponse:
        check = Violations()
        name = collection_name(check, "collection", request.collection)
        embedding_id = check.uuid("id", request.id)
        check.raise_if_any()
        assert embedding_id is not None
        found = await self._embeddings.get_many(name, [embedding_id])
        if embedding_id not in found:
            raise NotFound("Embedding", request.id)
        response = pb.GetEmbeddingResponse()
        fill_embedding(response.embedding, found[embedding_id])
        return response

    async def BatchGetEmbeddings(
        self, request: pb.BatchGetEmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchGetEmbeddingsResponse:
        check = Violations()
        name = collection_name(check, "collection", request.collection)
        ids = _ids(check, "ids", request.ids)
        check.raise_if_any()
        found = await self._embeddings.get_many(name, ids)
        response = pb.BatchGetEmbeddingsResponse()
        for embedding_id in dict.fromkeys(ids):
            if embedding_id in found:
                fill_embedding(response.embeddings.add(), found[embedding_id])
            else:
                response.missing_ids.append(str(embedding_id))
        return response

    async def DeleteEmbeddings(
        self, request: pb.DeleteEmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteEmbeddingsResponse:
        check = Violations()
        name = collection_name(check, "collection", request.collection)
        ids = _ids(check, "ids", request.ids)
        check.raise_if_any()
        return pb.DeleteEmbeddingsResponse(deleted_count=await self._embeddings.delete(name, ids))

    async def SearchEmbeddings(
        self, request: pb.SearchEmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchEmbeddingsResponse:
        check = Violations()
        name = collection_name(check, "collection", request.collection)
        which = request.WhichOneof("query")
        if which is None:
            check.add("query", "required: set vector or item_id")
        item_id = check.uuid("item_id", request.item_id) if which == "item_id" else None
        top_k, where, params = self._search_terms(check, request.top_k, request.filter, request.params)
        check.raise_if_any()

        async def prepare(collection: Collection) -> Query:
            if item_id is None:
                check = Violations()
                vector = check_vector(check, collection, "vector.values", request.vector.values)
                check.raise_if_any()
                return Query(vector, top_k, where, params)
            found = await self._embeddings.vectors(collection, [item_id])
            if item_id not in found:
                raise NotFound("Embedding", request.item_id)
            return Query(found[item_id], top_k, where, params, excluded=[item_id])

        return _respond(pb.SearchEmbeddingsResponse(), await self._embeddings.search(name, prepare))

    async def RecommendEmbeddings(
        self, request: pb.RecommendEmbeddingsRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecommendEmbeddingsResponse:
        check = Violations()
        name = collection_name(check, "collection", request.collection)
        positive_ids = _ids(check, "positive_ids", request.positive_ids, required=False)
        negative_ids = _ids(check, "negative_ids", request.negative_ids, required=False)
        examples = len(request.positive_ids) + len(request.negative_ids)
        examples += len(request.positive_vectors) + len(request.negative_vectors)
        if not request.positive_ids and not request.positive_vectors:
            check.add("positive_ids", "required: give at least one positive example, by id or as a vector")
        elif examples > MAX_EXAMPLES:
            check.add("positive_ids", f"at most {MAX_EXAMPLES} examples in all, not {examples}")
        top_k, where, params = self._search_terms(check, request.top_k, request.filter, request.params)
        check.raise_if_any()

        async def prepare(collection: Collection) -> Query:
            check = Violations()
            positive = [
                check_vector(check, collection, f"positive_vectors[{index}].values", given.values)
                for index, given in enumerate(request.positive_vectors)
            ]
            negative = [
                check_vector(check, collection, f"negative_vectors[{index}].values", given.values)
                for index, given in enumerate(request.negative_vectors)
            ]
            check.raise_if_any()
            stored = await self._embeddings.vectors(collection, positive_ids + negative_ids)
            missing = [str(i) for i in dict.fromkeys(positive_ids + negative_ids) if i not in stored]
            if missing:
                raise NotFound("Embedding", ", ".join(missing))
            positive += [stored[i] for i in positive_ids]
            negative += [stored[i] for i in negative_ids]
            combined = _combine(positive, negative)
            if collection.metric is DistanceMetric.COSINE and not any(combined):
                raise InvalidArgument.of(
                    "negative_ids", "the examples cancel out: their combination is the zero vector"
                )
            return Query(combined, top_k, where, params, excluded=list(dict.fromkeys(positive_ids + negative_ids)))

        return _respond(pb.RecommendEmbeddingsResponse(), await self._embeddings.search(name, prepare))

    def _search_terms(
        self, check: Violations, top_k: int, given_filter: pb.EmbeddingFilter, given: pb.SearchParams
    ) -> tuple[int, EmbeddingFilter, SearchParams]:
        """top_k, the filter and the search parameters shared by the searches, with defaults filled in."""
        if not 0 <= top_k <= MAX_TOP_K:
            check.add("top_k", f"must be from 0 (the default, {DEFAULT_TOP_K}) to {MAX_TOP_K}")
        if not 0 <= given.ef_search <= MAX_EF_SEARCH:
            check.add("params.ef_search", f"must be from 0 (the server's default) to {MAX_EF_SEARCH}")
        if not 0 <= given.scan_budget <= MAX_SCAN_BUDGET:
            check.add("params.scan_budget", f"must be from 0 (the server's default) to {MAX_SCAN_BUDGET}")
        statuses = [
            check.content_status(f"filter.content_statuses[{index}]", number, unset=None)
            for index, number in enumerate(given_filter.content_statuses)
        ]
        where = EmbeddingFilter(
            metadata=check.json_object(
                "filter.metadata",
                given_filter.metadata if given_filter.HasField("metadata") else None,
                max_bytes=MAX_METADATA_BYTES,
            )
            or {},
            all_tags=check.tags("filter.all_tags", given_filter.all_tags),
            any_tags=check.tags("filter.any_tags", given_filter.any_tags),
            content_statuses=[status for status in statuses if status is not None],
        )
        params = SearchParams(
            exact=given.exact,
            ef_search=given.ef_search or self._ef_search,
            scan_budget=given.scan_budget or self._scan_budget,
        )
        return top_k or DEFAULT_TOP_K, where, params


def _respond(
    response: pb.SearchEmbeddingsResponse | pb.RecommendEmbeddingsResponse, result: SearchResult
) -> pb.SearchEmbeddingsResponse | pb.RecommendEmbeddingsResponse:
    for hit in result.hits:
        fill_hit(response.results.add(), hit)
    response.truncated = result.truncated
    response.scanned_count = result.scanned
    return response


def _combine(positive: list[list[float]], negative: list[list[float]]) -> list[float]:
    """Qdrant's average-vector strategy: avg(positive), pushed away from avg(negative) when there is one."""
    mean = [sum(values) / len(positive) for values in zip(*positive)]
    if not negative:
        return mean
    away = [sum(values) / len(negative) for values in zip(*negative)]
    return [2 * p - n for p, n in zip(mean, away)]


def collection_name(check: Violations, field: str, name: str) -> str:
    if not name:
        check.add(field, "required")
    elif _NAME.fullmatch(name) is None:
        check.add(field, "must be 1 to 48 lowercase letters, digits and underscores, starting with a letter")
    return name


def _new_collection(check: Violations, given: pb.Collection) -> NewCollection | None:
    name = collection_name(check, "collection.name", given.name)
    limit = MAX_HALF_DIMENSION if given.half_precision else MAX_DIMENSION
    if not 1 <= given.dimension <= limit:
        kind = "with" if given.half_precision else "without"
        check.add("collection.dimension", f"must be from 1 to {limit} {kind} half_precision")
    metric = METRIC_FROM_MESSAGE.get(given.distance_metric)
    if metric is None:
        check.add("collection.distance_metric", "must be DISTANCE_METRIC_COSINE, _L2 or _INNER_PRODUCT")
    m = given.hnsw_m or DEFAULT_HNSW_M
    ef_construction = given.hnsw_ef_construction or DEFAULT_HNSW_EF_CONSTRUCTION
    m_valid = 2 <= m <= 100
    if not m_valid:
        check.add("collection.hnsw_m", f"must be from 2 to 100 (0 means {DEFAULT_HNSW_M})")
    if not 4 <= ef_construction <= 1000 or (m_valid and ef_construction < 2 * m):
        check.add(
            "collection.hnsw_ef_construction",
            f"must be from 4 to 1000 and at least twice hnsw_m (0 means {DEFAULT_HNSW_EF_CONSTRUCTION})",
        )
    if metric is None:
        return None
    return NewCollection(name, given.dimension, metric, given.half_precision, m, ef_construction)


def _ids(check: Violations, field: str, texts: Sequence[str], *, required: bool = True) -> list[UUID]:
    if required and not texts:
        check.add(field, f"must name 1 to {MAX_BATCH} ids")
        return []
    if len(texts) > MAX_BATCH:
        check.add(field, f"must name at most {MAX_BATCH} ids, not {len(texts)}")
        return []
    ids = [check.uuid(f"{field}[{index}]", text) for index, text in enumerate(texts)]
    return [embedding_id for embedding_id in ids if embedding_id is not None]


def _distinct(check: Violations, field: str, ids: list[UUID]) -> None:
    seen: set[UUID] = set()
    for index, embedding_id in enumerate(ids):
        if embedding_id in seen:
            check.add(f"{field}[{index}].id", "repeats an id given earlier in the batch")
        seen.add(embedding_id)


def check_vector(check: Violations, collection: Collection, field: str, values: Sequence[float]) -> list[float]:
    """The values as a list, checked against the collection: its dimension, finite numbers, within the 16-bit
    range of a half-precision collection, and not all zeros under cosine (which has no direction)."""
    vector = list(values)
    if len(vector) != collection.dimension:
        check.add(field, f"must have the collection's dimension, {collection.dimension}, not {len(vector)}")
        return vector
    # One sum finds any NaN or infinity (they make it non-finite; float32 values cannot overflow a float64
    # sum), so the costly search for which component it is runs only for a bad vector.
    if not math.isfinite(sum(vector)):
        bad = next(index for index, value in enumerate(vector) if not math.isfinite(value))
        check.add(field, f"must hold finite numbers; component {bad} is {vector[bad]}")
    elif collection.half_precision and (max(vector) > MAX_HALF_VALUE or min(vector) < -MAX_HALF_VALUE):
        check.add(field, f"must lie within ±{MAX_HALF_VALUE:g} in a half-precision collection")
    elif collection.metric is DistanceMetric.COSINE and not any(vector):
        check.add(field, "must not be all zeros under cosine distance, which gives it no direction")
    return vector


def _new_embedding(
    check: Violations, collection: Collection, index: int, given: pb.Embedding, now: datetime
) -> NewEmbedding:
    field = f"embeddings[{index}]"
    embedding_id = check.uuid(f"{field}.id", given.id)
    vector = check_vector(check, collection, f"{field}.vector", given.vector)
    content_id = check.uuid(f"{field}.content_id", given.content_id, required=False)
    metadata = check.json_object(
        f"{field}.metadata", given.metadata if given.HasField("metadata") else None, max_bytes=MAX_METADATA_BYTES
    )
    tags = check.tags(f"{field}.tags", given.tags)
    expire_at = None
    if given.HasField("expire_time"):
        try:
            expire_at = given.expire_time.ToDatetime(tzinfo=UTC)
        except ValueError:
            check.add(f"{field}.expire_time", "is not a valid timestamp")
        else:
            if expire_at <= now:
                check.add(f"{field}.expire_time", "must be in the future")
    return NewEmbedding(
        id=embedding_id or UUID(int=0),
        vector=vector,
        content_id=content_id,
        metadata=metadata or {},
        tags=tags,
        expire_at=expire_at,
    )
