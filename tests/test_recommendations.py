"""RecommendationService over the wire, each test on a database of its own (popularity is global): cold start
from popularity, taste-based similar content, exclusions, feedback, precomputed lists, paging, invalidation of
the cached feed, and every error status."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import grpc
import pytest
from dataservice.v1 import common_pb2
from dataservice.v1 import content_service_pb2 as content_pb
from dataservice.v1 import content_service_pb2_grpc
from dataservice.v1 import embedding_service_pb2 as embedding_pb
from dataservice.v1 import embedding_service_pb2_grpc
from dataservice.v1 import recommendation_service_pb2 as pb
from dataservice.v1 import recommendation_service_pb2_grpc
from dataservice.v1 import user_service_pb2_grpc
from google.protobuf import duration_pb2, field_mask_pb2

from server.app import App
from tests.grpc_errors import bad_request_fields, fails
from tests.harness import new_user, settings_for

COLLECTION = "content"
POPULAR = pb.RECOMMENDATION_REASON_POPULAR
SIMILAR = pb.RECOMMENDATION_REASON_SIMILAR
PRECOMPUTED = pb.RECOMMENDATION_REASON_PRECOMPUTED


@dataclass
class Service:
    app: App
    users: user_service_pb2_grpc.UserServiceStub
    contents: content_service_pb2_grpc.ContentServiceStub
    embeddings: embedding_service_pb2_grpc.EmbeddingServiceStub
    recommendations: recommendation_service_pb2_grpc.RecommendationServiceStub

    async def content(self, title: str = "t", status: int = common_pb2.CONTENT_STATUS_PUBLISHED) -> str:
        author = await new_user(self.users)
        request = content_pb.CreateContentRequest(content=content_pb.Content(author_id=author, title=title, status=status))
        return (await self.contents.CreateContent(request)).content.id

    async def interact(self, user: str, content: str, kind: int = pb.INTERACTION_TYPE_LIKE) -> pb.Interaction:
        request = pb.RecordInteractionRequest(user_id=user, content_id=content, type=kind)
        return (await self.recommendations.RecordInteraction(request)).interaction

    async def feed(self, user: str, page_size: int = 0) -> list[tuple[str, int]]:
        response = await self.recommendations.GetRecommendations(
            pb.GetRecommendationsRequest(user_id=user, page_size=page_size))
        return [(item.content_id, item.reason) for item in response.recommendations]

    async def refresh_popularity(self) -> None:
        assert self.app.popularity_refresh is not None
        await self.app.popularity_refresh.run_once()


@pytest.fixture
async def service(new_database, start_app, redis_url) -> AsyncIterator[Service]:
    app = await start_app(settings_for(await new_database(), REDIS_URL=redis_url))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield Service(
            app,
            user_service_pb2_grpc.UserServiceStub(channel),
            content_service_pb2_grpc.ContentServiceStub(channel),
            embedding_service_pb2_grpc.EmbeddingServiceStub(channel),
            recommendation_service_pb2_grpc.RecommendationServiceStub(channel),
        )


async def test_a_user_without_history_gets_published_content_by_popularity(service):
    a, b, c = [await service.content(title) for title in "abc"]
    draft = await service.content("draft", status=common_pb2.CONTENT_STATUS_DRAFT)
    for _ in range(3):
        await service.interact(await new_user(service.users), a, pb.INTERACTION_TYPE_LIKE)
    await service.interact(await new_user(service.users), b, pb.INTERACTION_TYPE_VIEW)
    await service.interact(await new_user(service.users), draft, pb.INTERACTION_TYPE_SHARE)
    await service.refresh_popularity()
    newcomer = await new_user(service.users)
    assert await service.feed(newcomer) == [(a, POPULAR), (b, POPULAR), (c, POPULAR)]
    response = await service.recommendations.GetRecommendations(pb.GetRecommendationsRequest(user_id=newcomer))
    assert [item.score for item in response.recommendations] == [9.0, 1.0, 0.0]  # likes weigh 3, views 1


async def test_seen_dismissed_and_rejected_content_never_comes_back(service):
    a, b, c, d = [await service.content(title) for title in "abcd"]
    user = await new_user(service.users)
    assert {content for content, _ in await service.feed(user)} == {a, b, c, d}
    await service.interact(user, a, pb.INTERACTION_TYPE_VIEW)
    await service.interact(user, b, pb.INTERACTION_TYPE_DISMISS)
    await service.recommendations.RecordFeedback(pb.RecordFeedbackRequest(
        user_id=user, content_id=c, feedback=pb.RECOMMENDATION_FEEDBACK_REJECTED))
    assert [content for content, _ in await service.feed(user)] == [d]  # at once: the cached feed was replaced
    await service.recommendations.RecordFeedback(pb.RecordFeedbackRequest(
        user_id=user, content_id=d, feedback=pb.RECOMMENDATION_FEEDBACK_ACCEPTED))
    assert [content for content, _ in await service.feed(user)] == [d]


async def test_unpublished_content_leaves_a_cached_feed_at_once(service):
    a, b = await service.content("a"), await service.content("b")
    user = await new_user(service.users)
    assert {content for content, _ in await service.feed(user)} == {a, b}
    await service.contents.UpdateContent(content_pb.UpdateContentRequest(
        content=content_pb.Content(id=a, status=common_pb2.CONTENT_STATUS_ARCHIVED),
        update_mask=field_mask_pb2.FieldMask(paths=["status"])))
    await service.contents.DeleteContent(content_pb.DeleteContentRequest(id=b))
    assert await service.feed(user) == []


async def test_a_precomputed_list_leads_the_feed_until_replaced_and_unknown_ids_are_reported(service):
    a, b, c = [await service.content(title) for title in "abc"]
    user = await new_user(service.users)
    unknown = str(uuid.uuid4())
    put = await service.recommendations.PutRecommendations(pb.PutRecommendationsRequest(
        user_id=user, items=[pb.RankedContent(content_id=c, score=0.9), pb.RankedContent(content_id=unknown, score=0.5),
                             pb.RankedContent(content_id=a, score=0.1)],
        ttl=duration_pb2.Duration(seconds=3600)))
    assert (put.stored_count, list(put.unknown_content_ids)) == (2, [unknown])
    response = await service.recommendations.GetRecommendations(pb.GetRecommendationsRequest(user_id=user))
    assert [(i.content_id, i.reason, i.score) for i in response.recommendations] == [
        (c, PRECOMPUTED, 0.9), (a, PRECOMPUTED, 0.1), (b, POPULAR, 0.0)]
    await service.recommendations.PutRecommendations(pb.PutRecommendationsRequest(user_id=user))  # clears it
    assert all(reason == POPULAR for _, reason in await service.feed(user))


async def test_an_expired_precomputed_list_is_no_longer_served(service):
    await service.content("a")
    b = await service.content("b")
    user = await new_user(service.users)
    await service.recommendations.PutRecommendations(pb.PutRecommendationsRequest(
        user_id=user, items=[pb.RankedContent(content_id=b, score=1)], ttl=duration_pb2.Duration(seconds=60)))
    assert (await service.feed(user))[0] == (b, PRECOMPUTED)
    conn = await asyncpg.connect(service.app.dsn)
    try:  # time passes: the list's expiry is now behind it (the outbox invalidates the cached feed)
        await conn.execute("UPDATE precomputed_recommendations SET expire_at = now() - interval '1 second'")
    finally:
        await conn.close()
    for _ in range(100):
        if all(reason == POPULAR for _, reason in await service.feed(user)):
            break
        await asyncio.sleep(0.1)
    assert all(reason == POPULAR for _, reason in await service.feed(user))


async def test_pages_walk_the_feed_once_and_a_put_ends_them(service):
    contents = {await service.content(f"c{n}") for n in range(7)}
    user = await new_user(service.users)
    seen: list[str] = []
    token = ""
    while True:
        page = await service.recommendations.GetRecommendations(
            pb.GetRecommendationsRequest(user_id=user, page_size=3, page_token=token))
        seen += [item.content_id for item in page.recommendations]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(contents) and len(seen) == 7
    first = await service.recommendations.GetRecommendations(pb.GetRecommendationsRequest(user_id=user, page_size=3))
    await service.recommendations.PutRecommendations(pb.PutRecommendationsRequest(
        user_id=user, items=[pb.RankedContent(content_id=seen[-1], score=1)]))
    error = await fails(service.recommendations.GetRecommendations(
        pb.GetRecommendationsRequest(user_id=user, page_size=3, page_token=first.next_page_token)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and bad_request_fields(error) == {"page_token"}


async def test_a_feed_is_the_same_from_any_replica_for_the_same_state(service, start_app):
    for n in range(5):
        await service.content(f"c{n}")
    user = await new_user(service.users)
    other = await start_app(settings_for(service.app.dsn, CACHE_BACKEND="memory"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{other.port}") as channel:
        replica = recommendation_service_pb2_grpc.RecommendationServiceStub(channel)
        theirs = await replica.GetRecommendations(pb.GetRecommendationsRequest(user_id=user))
    ours = await service.recommendations.GetRecommendations(pb.GetRecommendationsRequest(user_id=user))
    assert ours == theirs and len(ours.recommendations) == 5


async def test_record_interaction_is_idempotent_per_request_id(service):
    content, user = await service.content(), await new_user(service.users)
    request = pb.RecordInteractionRequest(user_id=user, content_id=content, type=pb.INTERACTION_TYPE_SHARE,
                                          request_id=str(uuid.uuid4()))
    first, retry = await asyncio.gather(service.recommendations.RecordInteraction(request),
                                        service.recommendations.RecordInteraction(request))
    assert first.interaction == retry.interaction and first.interaction.type == pb.INTERACTION_TYPE_SHARE
    request.type = pb.INTERACTION_TYPE_VIEW
    error = await fails(service.recommendations.RecordInteraction(request))
    assert bad_request_fields(error) == {"request_id"}


async def test_unknown_users_and_content_are_not_found(service):
    content, user = await service.content(), await new_user(service.users)
    nobody, nothing = str(uuid.uuid4()), str(uuid.uuid4())
    rpc = service.recommendations
    calls = {
        "User": [
            rpc.RecordInteraction(pb.RecordInteractionRequest(user_id=nobody, content_id=content, type=1)),
            rpc.GetRecommendations(pb.GetRecommendationsRequest(user_id=nobody)),
            rpc.PutRecommendations(pb.PutRecommendationsRequest(user_id=nobody)),
            rpc.RecordFeedback(pb.RecordFeedbackRequest(user_id=nobody, content_id=content, feedback=1)),
        ],
        "Content": [
            rpc.RecordInteraction(pb.RecordInteractionRequest(user_id=user, content_id=nothing, type=1)),
            rpc.RecordFeedback(pb.RecordFeedbackRequest(user_id=user, content_id=nothing, feedback=1)),
        ],
    }
    for resource, pending in calls.items():
        for call in pending:
            error = await fails(call)
            assert error.code() is grpc.StatusCode.NOT_FOUND and resource in error.details()


@pytest.mark.parametrize(
    ("method", "request_message", "fields"),
    [
        ("RecordInteraction", pb.RecordInteractionRequest(user_id="x", content_id=str(uuid.uuid4())),
         {"user_id", "type"}),
        ("RecordFeedback", pb.RecordFeedbackRequest(user_id=str(uuid.uuid4()), content_id="y"),
         {"content_id", "feedback"}),
        ("GetRecommendations", pb.GetRecommendationsRequest(user_id=""), {"user_id"}),
        ("PutRecommendations", pb.PutRecommendationsRequest(
            user_id=str(uuid.uuid4()), ttl=duration_pb2.Duration(seconds=30),
            items=[pb.RankedContent(content_id=str(uuid.UUID(int=1)), score=math.nan),
                   pb.RankedContent(content_id=str(uuid.UUID(int=1)), score=1)]),
         {"ttl", "items[0].score", "items[1].content_id"}),
    ],
)
async def test_each_bad_field_is_named(service, method, request_message, fields):
    error = await fails(getattr(service.recommendations, method)(request_message))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT and bad_request_fields(error) == fields


@pytest.mark.pgvector
async def test_a_user_with_history_gets_content_like_what_they_liked_then_popular_content(service):
    await service.embeddings.CreateCollection(embedding_pb.CreateCollectionRequest(collection=embedding_pb.Collection(
        name=COLLECTION, dimension=2, distance_metric=embedding_pb.DISTANCE_METRIC_COSINE)))
    # Two topics: content along (1, y) and along (-1, y); y spreads each topic a little.
    topic_a = [await service.content(f"a{n}") for n in range(14)]
    topic_b = [await service.content(f"b{n}") for n in range(4)]
    items = [embedding_pb.Embedding(id=str(uuid.uuid4()), content_id=content, vector=[1.0, n / 20])
             for n, content in enumerate(topic_a)]
    items += [embedding_pb.Embedding(id=str(uuid.uuid4()), content_id=content, vector=[-1.0, n / 20])
              for n, content in enumerate(topic_b)]
    await service.embeddings.UpsertEmbeddings(embedding_pb.UpsertEmbeddingsRequest(collection=COLLECTION,
                                                                                   embeddings=items))
    user = await new_user(service.users)
    for content in topic_a[:10]:  # warm: 10 interactions make a feed of similar content first
        await service.interact(user, content, pb.INTERACTION_TYPE_LIKE)
    feed = await service.feed(user)
    assert [reason for _, reason in feed[:4]] == [SIMILAR] * 4
    assert {content for content, _ in feed[:4]} == set(topic_a[10:])
    assert {content for content, _ in feed[4:]} == set(topic_b)  # the other topic only as popular content
    assert not {content for content, _ in feed} & set(topic_a[:10])

    newcomer = await new_user(service.users)
    await service.interact(newcomer, topic_b[0], pb.INTERACTION_TYPE_LIKE)  # 1 of 10: mostly popular
    reasons = [reason for _, reason in await service.feed(newcomer)]
    assert reasons[0] == SIMILAR and reasons.count(POPULAR) > reasons.count(SIMILAR)
