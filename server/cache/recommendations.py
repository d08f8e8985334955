"""Recommendations as RecommendationService sees them: feeds computed once and read through the cache, and the
writes that replace a user's feed.

A feed is the user's unexpired precomputed list, then content similar to their taste, then popular content;
seen, dismissed and rejected content never appears, and an item appears once. The taste vector is the
weighted mean of the embeddings (in RECOMMENDATION_COLLECTION) of the user's latest interactions; "similar"
is the published content nearest to it. Popular content is blended in for users with few interactions: a
user with n interactions gets min(1, n / RECOMMENDATION_WARM_INTERACTIONS) of the slots after the precomputed
list filled with similar content, the rest popular, interleaved in that proportion. Without pgvector, or
without the collection, feeds are precomputed and popular content only.

The computed feed is cached per user. The user's interactions, feedback and precomputed list invalidate it
(right after the write, and through the outbox should that fail); popularity and new embeddings reach it
within CACHE_RECOMMENDATION_TTL_SECONDS. Whether content is still published is checked on every page served,
so an unpublished or deleted piece of content is never recommended, cached feed or not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from dataservice.v1 import recommendation_service_pb2 as pb

from server.cache import keys
from server.cache.embeddings import Embeddings
from server.cache.readthrough import Loaded, ReadThrough
from server.db.database import Database
from server.db.pgvector import VectorSupport
from server.domain.common import CreateRequest
from server.domain.content import ContentStatus
from server.domain.embeddings import Collection, EmbeddingFilter, Query, SearchParams
from server.domain.recommendations import (
    Feedback,
    FeedInputs,
    Interaction,
    InteractionType,
    Ranked,
    Reason,
    Recommendation,
)
from server.errors import NotFound
from server.messages.recommendations import REASON_TO_MESSAGE
from server.store import embeddings as embeddings_store
from server.store import recommendations as store

_NO_LIST = UUID(int=0)


@dataclass(frozen=True)
class FeedSettings:
    collection: str
    weights: Mapping[InteractionType, float]
    size: int
    recent_interactions: int
    warm_interactions: int
    ef_search: int
    scan_budget: int


@dataclass(frozen=True)
class Feed:
    """A user's feed as cached: the precomputed list it starts with (its pages end when that changes) and the
    serialized GetRecommendationsResponse holding every item."""

    list_id: UUID
    serialized: bytes


class _NoTaste(Exception):
    """None of the user's recent content has an embedding: there is nothing to be similar to."""


class Recommendations:
    """The one object RecommendationService calls."""

    def __init__(
        self,
        db: Database,
        reads: ReadThrough,
        embeddings: Embeddings,
        vectors: VectorSupport,
        settings: FeedSettings,
    ) -> None:
        self._db = db
        self._reads = reads
        self._embeddings = embeddings
        self._vectors = vectors
        self._settings = settings

    async def record_interaction(
        self, user_id: UUID, content_id: UUID, kind: InteractionType, request: CreateRequest | None
    ) -> Interaction:
        async with self._invalidating(user_id):
            return await store.record_interaction(self._db, user_id, content_id, kind, request)

    async def record_feedback(self, user_id: UUID, content_id: UUID, feedback: Feedback) -> None:
        async with self._invalidating(user_id):
            await store.record_feedback(self._db, user_id, content_id, feedback)

    async def put(self, user_id: UUID, items: list[Ranked], expire_at: datetime) -> tuple[int, list[UUID]]:
        async with self._invalidating(user_id):
            return await store.put_recommendations(self._db, user_id, items, expire_at)

    async def feed(self, user_id: UUID) -> Feed:
        """The user's whole feed, cached or computed now. NOT_FOUND when the user does not exist."""
        value = await self._reads.read(keys.recommendations(user_id), lambda: self._compute(user_id))
        if value is None:
            raise NotFound("User", str(user_id))
        return Feed(UUID(bytes=value[:16]), value[16:])

    async def published(self, content_ids: list[UUID]) -> set[UUID]:
        return await store.published(self._db, content_ids)

    async def _compute(self, user_id: UUID) -> Loaded:
        inputs = await store.feed_inputs(self._db, user_id, recent_limit=self._settings.recent_interactions)
        if inputs is None:
            return Loaded(None)
        size = self._settings.size
        excluded = set(inputs.excluded)
        precomputed = [
            item for item in (inputs.precomputed.items if inputs.precomputed else []) if item.content_id not in excluded
        ]
        similar = await self._similar(inputs, size)
        popular = await store.popular(self._db, self._settings.weights, excluded=inputs.excluded, limit=size)
        share = min(1.0, inputs.interaction_count / self._settings.warm_interactions)
        response = pb.GetRecommendationsResponse()
        for item in blend(precomputed, similar, popular, similar_share=share, size=size):
            response.recommendations.add(
                content_id=str(item.content_id), score=item.score, reason=REASON_TO_MESSAGE[item.reason]
            )
        list_id = inputs.precomputed.list_id if inputs.precomputed else _NO_LIST
        return Loaded(list_id.bytes + response.SerializeToString())

    async def _similar(self, inputs: FeedInputs, limit: int) -> list[Ranked]:
        """Published content nearest to the user's taste vector, unseen, best first; none when it cannot be
        made (no interactions, no pgvector, no collection, no embeddings of the content interacted with)."""
        if not inputs.recent or self._vectors.known_missing:
            return []
        settings = self._settings

        async def query(collection: Collection) -> Query:
            vectors = await embeddings_store.content_vectors(
                self._db, collection, list(dict.fromkeys(content_id for content_id, _ in inputs.recent))
            )
            taste = taste_vector(inputs.recent, vectors, settings.weights)
            if taste is None:
                raise _NoTaste()
            return Query(
                taste,
                limit,
                EmbeddingFilter(content_statuses=[ContentStatus.PUBLISHED]),
                SearchParams(exact=False, ef_search=max(settings.ef_search, limit), scan_budget=settings.scan_budget),
                excluded_contents=inputs.excluded,
            )

        try:
            result = await self._embeddings.search(settings.collection, query)
        except (_NoTaste, NotFound):
            return []
        found: dict[UUID, float] = {}
        for hit in result.hits:
            if hit.content_id is not None and hit.content_id not in found:
                found[hit.content_id] = hit.score
        return [Ranked(content_id, score) for content_id, score in found.items()]

    @asynccontextmanager
    async def _invalidating(self, user_id: UUID) -> AsyncIterator[None]:
        """Invalidates the user's feed after the write, also when it failed (it may have committed anyway)."""
        try:
            yield
        finally:
            await asyncio.shield(self._reads.invalidate(keys.recommendations(user_id)))


def taste_vector(
    recent: list[tuple[UUID, InteractionType]],
    vectors: Mapping[UUID, list[float]],
    weights: Mapping[InteractionType, float],
) -> list[float] | None:
    """The weighted mean of the vectors of the recently interacted content; None when none has a vector, or
    the weights leave nothing (all zero) or the vectors cancel out."""
    total: list[float] | None = None
    weight_sum = 0.0
    for content_id, kind in recent:
        vector = vectors.get(content_id)
        weight = weights.get(kind, 0.0)
        if vector is None or weight == 0:
            continue
        if total is None:
            total = [0.0] * len(vector)
        for index, value in enumerate(vector):
            total[index] += weight * value
        weight_sum += weight
    if total is None or not any(total):
        return None
    return [value / weight_sum for value in total]


def blend(
    precomputed: list[Ranked], similar: list[Ranked], popular: list[Ranked], *, similar_share: float, size: int
) -> list[Recommendation]:
    """The feed: the precomputed list, then similar and popular content interleaved so that similar content
    takes ``similar_share`` of the slots while both last; each content once, at most ``size`` items."""
    feed: list[Recommendation] = []
    seen: set[UUID] = set()

    def add(item: Ranked, reason: Reason) -> None:
        if item.content_id not in seen and len(feed) < size:
            seen.add(item.content_id)
            feed.append(Recommendation(item.content_id, item.score, reason))

    for item in precomputed:
        add(item, Reason.PRECOMPUTED)
    similar_left, popular_left = list(reversed(similar)), list(reversed(popular))
    taken = taken_similar = 0
    while len(feed) < size and (similar_left or popular_left):
        take_similar = bool(similar_left) and (not popular_left or taken_similar < similar_share * (taken + 1))
        if take_similar:
            add(similar_left.pop(), Reason.SIMILAR)
            taken_similar += 1
        else:
            add(popular_left.pop(), Reason.POPULAR)
        taken += 1
    return feed
