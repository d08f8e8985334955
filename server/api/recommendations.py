"""RecommendationService: interactions, feedback, precomputed lists, and each user's feed."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from uuid import UUID

import grpc
from dataservice.v1 import recommendation_service_pb2 as pb
from dataservice.v1 import recommendation_service_pb2_grpc as pb_grpc

from server.api import paging
from server.api.validation import Violations
from server.cache.recommendations import Recommendations
from server.domain.common import CreateRequest, request_fingerprint
from server.domain.recommendations import Ranked
from server.messages.common import timestamp
from server.messages.recommendations import FEEDBACK_FROM_MESSAGE, INTERACTION_FROM_MESSAGE, fill_interaction

MAX_RANKED = 1000
DEFAULT_LIST_TTL = timedelta(days=7)
MIN_LIST_TTL = timedelta(minutes=1)
MAX_LIST_TTL = timedelta(days=30)
_GET_RECOMMENDATIONS = "dataservice.v1.RecommendationService.GetRecommendations"


class RecommendationServicer(pb_grpc.RecommendationServiceServicer):
    """Serves dataservice.v1.RecommendationService over ``Recommendations`` (cached feeds + store)."""

    def __init__(self, recommendations: Recommendations, page_tokens: paging.PageTokens) -> None:
        self._recommendations = recommendations
        self._page_tokens = page_tokens

    async def RecordInteraction(
        self, request: pb.RecordInteractionRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordInteractionResponse:
        check = Violations()
        user_id = check.uuid("user_id", request.user_id)
        content_id = check.uuid("content_id", request.content_id)
        kind = INTERACTION_FROM_MESSAGE.get(request.type)
        if kind is None:
            check.add("type", "must be INTERACTION_TYPE_VIEW, _LIKE, _SHARE, _BOOKMARK or _DISMISS")
        request_id = check.uuid("request_id", request.request_id, required=False)
        check.raise_if_any()
        assert user_id is not None and content_id is not None and kind is not None
        create = None
        if request_id is not None:
            create = CreateRequest(request_id, request_fingerprint(str(user_id), str(content_id), kind.value))
        recorded = await self._recommendations.record_interaction(user_id, content_id, kind, create)
        response = pb.RecordInteractionResponse()
        fill_interaction(response.interaction, recorded)
        return response

    async def GetRecommendations(
        self, request: pb.GetRecommendationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRecommendationsResponse:
        check = Violations()
        user_id = check.uuid("user_id", request.user_id)
        check.raise_if_any()
        assert user_id is not None
        size = paging.page_size(request.page_size)
        feed = await self._recommendations.feed(user_id)
        # A token holds the position in the feed and is bound to the user and to the precomputed list the feed
        # started with: a PutRecommendations since makes it INVALID_ARGUMENT.
        bound = user_id.bytes + feed.list_id.bytes
        position = self._page_tokens.decode_named(_GET_RECOMMENDATIONS, bound, request.page_token)
        start = int(position) if position is not None else 0
        items = pb.GetRecommendationsResponse.FromString(feed.serialized).recommendations
        page = items[start : start + size]
        live = await self._recommendations.published([UUID(item.content_id) for item in page]) if page else set()
        response = pb.GetRecommendationsResponse()
        response.recommendations.extend(item for item in page if UUID(item.content_id) in live)
        if start + size < len(items):
            response.next_page_token = self._page_tokens.encode_named(_GET_RECOMMENDATIONS, bound, str(start + size))
        return response

    async def PutRecommendations(
        self, request: pb.PutRecommendationsRequest, context: grpc.aio.ServicerContext
    ) -> pb.PutRecommendationsResponse:
        check = Violations()
        user_id = check.uuid("user_id", request.user_id)
        if len(request.items) > MAX_RANKED:
            check.add("items", f"must hold at most {MAX_RANKED} entries, not {len(request.items)}")
        items: list[Ranked] = []
        seen: set[UUID] = set()
        for index, given in enumerate(request.items[:MAX_RANKED]):
            content_id = check.uuid(f"items[{index}].content_id", given.content_id)
            if not math.isfinite(given.score):
                check.add(f"items[{index}].score", "must be a finite number")
            if content_id is not None:
                if content_id in seen:
                    check.add(f"items[{index}].content_id", "repeats a content_id given earlier in the list")
                seen.add(content_id)
                items.append(Ranked(content_id, given.score))
        now = datetime.now(UTC)
        expire_at = _expiry(check, request, now)
        check.raise_if_any()
        assert user_id is not None
        stored, unknown = await self._recommendations.put(user_id, items, expire_at)
        return pb.PutRecommendationsResponse(
            stored_count=stored, unknown_content_ids=[str(content_id) for content_id in unknown],
            expire_time=timestamp(expire_at),
        )

    async def RecordFeedback(
        self, request: pb.RecordFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordFeedbackResponse:
        check = Violations()
        user_id = check.uuid("user_id", request.user_id)
        content_id = check.uuid("content_id", request.content_id)
        feedback = FEEDBACK_FROM_MESSAGE.get(request.feedback)
        if feedback is None:
            check.add("feedback", "must be RECOMMENDATION_FEEDBACK_ACCEPTED or RECOMMENDATION_FEEDBACK_REJECTED")
        check.raise_if_any()
        assert user_id is not None and content_id is not None and feedback is not None
        await self._recommendations.record_feedback(user_id, content_id, feedback)
        return pb.RecordFeedbackResponse()


def _expiry(check: Violations, request: pb.PutRecommendationsRequest, now: datetime) -> datetime:
    """When the list expires: expire_time, now + ttl, or now + 7 days; within 1 minute to 30 days from now."""
    which = request.WhichOneof("expiration")
    if which is None:
        return now + DEFAULT_LIST_TTL
    try:
        if which == "ttl":
            ttl = request.ttl.ToTimedelta()
            if not MIN_LIST_TTL <= ttl <= MAX_LIST_TTL:
                check.add("ttl", "must be from 1 minute to 30 days")
            return now + ttl
        expire_at = request.expire_time.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        check.add(which, "is not a valid duration or timestamp")
        return now
    if not now < expire_at <= now + MAX_LIST_TTL:
        check.add("expire_time", "must be in the future and at most 30 days from now")
    return expire_at

