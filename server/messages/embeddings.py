"""Conversion of collections, embeddings and search hits into their protobuf messages."""

from __future__ import annotations

from dataservice.v1 import embedding_service_pb2 as pb

from server.domain.embeddings import Collection, DistanceMetric, Embedding, Hit
from server.messages.common import set_timestamp

METRIC_TO_MESSAGE: dict[DistanceMetric, int] = {
    DistanceMetric.COSINE: pb.DISTANCE_METRIC_COSINE,
    DistanceMetric.L2: pb.DISTANCE_METRIC_L2,
    DistanceMetric.INNER_PRODUCT: pb.DISTANCE_METRIC_INNER_PRODUCT,
}
METRIC_FROM_MESSAGE: dict[int, DistanceMetric] = {number: metric for metric, number in METRIC_TO_MESSAGE.items()}


def fill_collection(message: pb.Collection, collection: Collection) -> pb.Collection:
    message.name = collection.name
    message.dimension = collection.dimension
    message.distance_metric = METRIC_TO_MESSAGE[collection.metric]
    message.half_precision = collection.half_precision
    message.hnsw_m = collection.hnsw_m
    message.hnsw_ef_construction = collection.hnsw_ef_construction
    set_timestamp(message.create_time, collection.created_at)
    message.etag = str(collection.id)
    return message


def fill_embedding(message: pb.Embedding, embedding: Embedding) -> pb.Embedding:
    message.id = str(embedding.id)
    message.vector.extend(embedding.vector)
    if embedding.content_id is not None:
        message.content_id = str(embedding.content_id)
    if embedding.metadata:
        message.metadata.update(embedding.metadata)
    message.tags.extend(embedding.tags)
    set_timestamp(message.create_time, embedding.created_at)
    set_timestamp(message.update_time, embedding.updated_at)
    if embedding.expire_at is not None:
        set_timestamp(message.expire_time, embedding.expire_at)
    return message


def fill_hit(message: pb.EmbeddingSearchResult, hit: Hit) -> None:
    message.id = str(hit.id)
    message.score = hit.score
    if hit.content_id is not None:
        message.content_id = str(hit.content_id)
    if hit.metadata:
        message.metadata.update(hit.metadata)
