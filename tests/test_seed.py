"""The demo data set, loaded through the API into a running server: every service has something to answer,
and loading again changes nothing."""

from __future__ import annotations

import pytest
from dataservice.v1 import content_service_pb2 as content_pb
from dataservice.v1 import content_service_pb2_grpc
from dataservice.v1 import embedding_service_pb2 as embedding_pb
from dataservice.v1 import embedding_service_pb2_grpc
from dataservice.v1 import recommendation_service_pb2 as recommendation_pb
from dataservice.v1 import recommendation_service_pb2_grpc
from dataservice.v1 import session_service_pb2 as session_pb
from dataservice.v1 import session_service_pb2_grpc

from server import seed


@pytest.mark.pgvector
async def test_the_demo_loads_twice_to_the_same_state_and_answers_every_service(channel):
    first = await seed.load_demo(channel)
    again = await seed.load_demo(channel)
    assert (first.users, first.contents) == (again.users, again.contents)
    assert first.embeddings == len(first.contents) == 15 and first.pgvector

    session = await session_service_pb2_grpc.SessionServiceStub(channel).GetSession(
        session_pb.GetSessionRequest(token=again.session_token))
    assert session.session.user_id == first.users["alice"]
    search = await content_service_pb2_grpc.ContentServiceStub(channel).SearchContents(
        content_pb.SearchContentsRequest(query="postgres"))
    assert search.results
    near = await embedding_service_pb2_grpc.EmbeddingServiceStub(channel).SearchEmbeddings(
        embedding_pb.SearchEmbeddingsRequest(
            collection=seed.COLLECTION, item_id=seed.demo_id("embedding", "Vector search with pgvector"), top_k=2))
    topics = {title: topic for topic, entries in seed.TOPICS.items() for title, _ in entries}
    by_content = {content_id: title for title, content_id in first.contents.items()}
    assert {topics[by_content[hit.content_id]] for hit in near.results} == {"databases"}  # shared words point alike

    feeds = recommendation_service_pb2_grpc.RecommendationServiceStub(channel)
    alice = await feeds.GetRecommendations(recommendation_pb.GetRecommendationsRequest(user_id=first.users["alice"]))
    assert recommendation_pb.RECOMMENDATION_REASON_SIMILAR in {item.reason for item in alice.recommendations}
    carol = await feeds.GetRecommendations(recommendation_pb.GetRecommendationsRequest(user_id=first.users["carol"]))
    assert carol.recommendations[0].reason == recommendation_pb.RECOMMENDATION_REASON_PRECOMPUTED


def test_embeddings_are_deterministic_unit_vectors():
    vector = seed.embed("postgres indexes")
    assert vector == seed.embed("postgres indexes") and abs(sum(v * v for v in vector) - 1) < 1e-9
