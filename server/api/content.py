"""ContentService: content by id, in batches, by filters and by full-text search."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import grpc
from dataservice.v1 import content_service_pb2 as pb
from dataservice.v1 import content_service_pb2_grpc as pb_grpc

from server.api import paging
from server.api.validation import Violations
from server.api.embeddings import check_vector, collection_name
from server.cache.content import Contents
from server.cache.embeddings import Embeddings
from server.domain.embeddings import Collection, SearchParams
from server.domain.common import CreateRequest, PageCursor, request_fingerprint
from server.domain.content import ContentChanges, ContentFilter, ContentOrder, ContentStatus, NewContent, RankCursor, SearchHit
from server.errors import clip
from server.messages.common import embedded
from server.messages.content import fill_content

MAX_TITLE_CHARS = 300
MAX_BODY_BYTES = 1024 * 1024
MAX_METADATA_BYTES = 16 * 1024
MAX_BATCH_IDS = 100
MAX_QUERY_CHARS = 1000
MAX_SEARCH_PAGE_SIZE = 100
UPDATABLE_FIELDS = frozenset({"title", "body", "tags", "metadata", "status"})
_UPDATABLE_NAMES = ", ".join(sorted(UPDATABLE_FIELDS))
_LIST_CONTENTS = "dataservice.v1.ContentService.ListContents"
_SEARCH_CONTENTS = "dataservice.v1.ContentService.SearchContents"
_ORDERS = {
    pb.CONTENT_ORDER_UNSPECIFIED: ContentOrder.CREATE_TIME_DESC,
    pb.CONTENT_ORDER_CREATE_TIME_DESC: ContentOrder.CREATE_TIME_DESC,
    pb.CONTENT_ORDER_CREATE_TIME_ASC: ContentOrder.CREATE_TIME_ASC,
    pb.CONTENT_ORDER_UPDATE_TIME_DESC: ContentOrder.UPDATE_TIME_DESC,
    pb.CONTENT_ORDER_UPDATE_TIME_ASC: ContentOrder.UPDATE_TIME_ASC,
}
_LAST_MOMENT = datetime.max.replace(tzinfo=UTC)  # the latest Timestamp there is; nothing is created after it

_CONTENT_FIELD = pb.GetContentResponse.DESCRIPTOR.fields_by_name["content"].number
_CONTENTS_FIELD = pb.BatchGetContentsResponse.DESCRIPTOR.fields_by_name["contents"].number
_MISSING_IDS_FIELD = pb.BatchGetContentsResponse.DESCRIPTOR.fields_by_name["missing_ids"].number


class ContentServicer(pb_grpc.ContentServiceServicer):
    """Serves dataservice.v1.ContentService; reads and writes go through ``Contents`` (cache + store)."""

    def __init__(
        self,
        contents: Contents,
        page_tokens: paging.PageTokens,
        embeddings: Embeddings,
        vector_search: SearchParams,
    ) -> None:
        self._contents = contents
        self._page_tokens = page_tokens
        # Hybrid searches resolve their collection through the embeddings' catalogue, and walk its index with
        # the server's default search settings.
        self._embeddings = embeddings
        self._vector_search = vector_search

    async def CreateContent(
        self, request: pb.CreateContentRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateContentResponse:
        check = Violations()
        given = request.content
        author_id = check.uuid("content.author_id", given.author_id)
        title = check.text("content.title", given.title, min_length=1, max_length=MAX_TITLE_CHARS, single_line=True)
        body = _body(check, given.body)
        tags = check.tags("content.tags", given.tags)
        metadata = _metadata(check, given)
        status = check.content_status("content.status", given.status, unset=ContentStatus.DRAFT)
        request_id = check.uuid("request_id", request.request_id, required=False)
        check.raise_if_any()
        new = NewContent(author_id=author_id, title=title, body=body, tags=tags, metadata=metadata, status=status)
        created = await self._contents.create(new, CreateRequest(request_id, _fingerprint(new)) if request_id else None)
        response = pb.CreateContentResponse()
        fill_content(response.content, created)
        return response

    async def GetContent(
        self, request: pb.GetContentRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Answers the serialized GetContentResponse (server/interceptors.py sends bytes as they are)."""
        check = Violations()
        content_id = check.uuid("id", request.id)
        check.raise_if_any()
        # The serialized Content as the response's field: a cache hit is neither parsed nor serialized again.
        return embedded(_CONTENT_FIELD, [await self._contents.get(content_id)])

    async def BatchGetContents(
        self, request: pb.BatchGetContentsRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Answers the serialized BatchGetContentsResponse."""
        check = Violations()
        ids = _ids(check, request.ids)
        check.raise_if_any()
        found = await self._contents.get_many(ids)
        # The response is assembled serialized from the serialized contents as they are (cached or just read):
        # building each Content field by field, or even parsing them, would cost more than the cached read.
        contents: list[bytes] = []
        missing: list[bytes] = []
        for content_id, text in zip(ids, request.ids):
            value = found.get(content_id)
            if value is None:
                missing.append(text.encode())
            else:
                contents.append(value)
        return embedded(_CONTENTS_FIELD, contents) + embedded(_MISSING_IDS_FIELD, missing)

    async def ListContents(
        self, request: pb.ListContentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListContentsResponse:
        check = Violations()
        where = _filter(check, request.filter)
        order = _ORDERS.get(request.order)
        if order is None:
            check.add("order", f"{request.order} is not a ContentOrder")
        check.raise_if_any()
        size = paging.page_size(request.page_size)
        parameters = _parameters(request)
        after = self._page_tokens.decode(_LIST_CONTENTS, parameters, request.page_token)
        # One row more than the page tells whether another page follows, without a count query.
        contents = await self._contents.list(where, order, after=after, limit=size + 1)
        response = pb.ListContentsResponse()
        if len(contents) > size:
            contents = contents[:size]
            last = contents[-1]
            # PageCursor's time is the order's column: updated_at for the update-time orders.
            time = last.updated_at if order.column == "updated_at" else last.created_at
            response.next_page_token = self._page_tokens.encode(_LIST_CONTENTS, parameters, PageCursor(time, last.id))
        add_content = response.contents.add
        for content in contents:
            fill_content(add_content(), content)
        return response

    async def UpdateContent(
        self, request: pb.UpdateContentRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateContentResponse:
        check = Violations()
        given = request.content
        content_id = check.uuid("content.id", given.id)
        paths = set(request.update_mask.paths)
        if not paths:
            check.add("update_mask", f"required; name the fields to change: {_UPDATABLE_NAMES}")
        for path in sorted(paths - UPDATABLE_FIELDS):
            check.add("update_mask", f"{clip(path)!r} is not an updatable field; use {_UPDATABLE_NAMES}")
        changes = ContentChanges(
            title=(
                check.text("content.title", given.title, min_length=1, max_length=MAX_TITLE_CHARS, single_line=True)
                if "title" in paths
                else None
            ),
            body=_body(check, given.body) if "body" in paths else None,
            tags=check.tags("content.tags", given.tags) if "tags" in paths else None,
            metadata=_metadata(check, given) if "metadata" in paths else None,
            status=check.content_status("content.status", given.status, unset=None) if "status" in paths else None,
        )
        expected_version = check.conditional_etag("content.etag", given.etag, request.etag)
        check.raise_if_any()
        updated = await self._contents.update(content_id, changes, expected_version=expected_version)
        response = pb.UpdateContentResponse()
        fill_content(response.content, updated)
        return response

    async def DeleteContent(
        self, request: pb.DeleteContentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteContentResponse:
        check = Violations()
        content_id = check.uuid("id", request.id)
        expected_version = check.etag("etag", request.etag)
        check.raise_if_any()
        await self._contents.delete(content_id, expected_version=expected_version)
        return pb.DeleteContentResponse()

    async def SearchContents(
        self, request: pb.SearchContentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchContentsResponse:
        check = Violations()
        query = check.text("query", request.query, min_length=1, max_length=MAX_QUERY_CHARS)
        where = _filter(check, request.filter)
        check.raise_if_any()
        hybrid = request.HasField("vector_query")
        collection = collection_name(check, "vector_query.collection", request.vector_query.collection) if hybrid else ""
        check.raise_if_any()
        size = min(paging.page_size(request.page_size), MAX_SEARCH_PAGE_SIZE)
        parameters = _parameters(request)
        after = self._page_tokens.decode_ranked(_SEARCH_CONTENTS, parameters, request.page_token)
        if hybrid:

            async def fused(found: Collection) -> list[SearchHit]:
                check = Violations()
                vector = check_vector(check, found, "vector_query.vector", request.vector_query.vector)
                check.raise_if_any()
                return await self._contents.hybrid_search(
                    found, query, vector, where, self._vector_search, after=after, limit=size + 1
                )

            hits = await self._embeddings.with_collection(collection, fused)
        else:
            hits = await self._contents.search(query, where, after=after, limit=size + 1)
        response = pb.SearchContentsResponse()
        if len(hits) > size:
            hits = hits[:size]
            last = RankCursor(hits[-1].rank, hits[-1].content.id)
            response.next_page_token = self._page_tokens.encode_ranked(_SEARCH_CONTENTS, parameters, last)
        add_result = response.results.add
        for hit in hits:
            fill_content(add_result(rank=hit.rank, snippet=hit.snippet).content, hit.content)
        return response


def _parameters(request: pb.ListContentsRequest | pb.SearchContentsRequest) -> bytes:
    """What a page token is bound to besides its method: the request without page_size and page_token (the
    filter, and the order or the query and vector query), serialized deterministically."""
    bound = type(request)()
    bound.CopyFrom(request)
    bound.ClearField("page_size")
    bound.ClearField("page_token")
    return bound.SerializeToString(deterministic=True)


def _ids(check: Violations, texts: Sequence[str]) -> list[UUID]:
    """The ids of a batch, each checked; the request is refused whole when one is not a UUID."""
    if len(texts) > MAX_BATCH_IDS:
        check.add("ids", f"must name at most {MAX_BATCH_IDS} ids, not {len(texts)}")
        return []
    ids = []
    for index, text in enumerate(texts):
        content_id = check.uuid(f"ids[{index}]", text)
        if content_id is not None:
            ids.append(content_id)
    return ids


def _body(check: Violations, body: str) -> str:
    # Counting characters first spares encoding a body that is too long in any encoding.
    if len(body) > MAX_BODY_BYTES or len(body.encode()) > MAX_BODY_BYTES:
        check.add("content.body", f"must be at most {MAX_BODY_BYTES} bytes of UTF-8")
    elif "\x00" in body:
        check.add("content.body", "must not contain NUL characters")  # PostgreSQL's text cannot store them
    return body


def _metadata(check: Violations, content: pb.Content) -> dict[str, Any]:
    """The content's metadata as a dict, {} when unset; bad metadata is recorded in ``check``."""
    value = content.metadata if content.HasField("metadata") else None
    return check.json_object("content.metadata", value, max_bytes=MAX_METADATA_BYTES) or {}


def _time(check: Violations, where: pb.ContentFilter, name: str, *, round_up: bool) -> datetime | None:
    """A bound of the creation-time filter. PostgreSQL keeps microseconds: a bound with finer nanoseconds is
    rounded down for "after" and up for "before", so that the strict comparison keeps the same rows."""
    if not where.HasField(name):
        return None
    value = getattr(where, name)
    try:
        moment: datetime = value.ToDatetime(tzinfo=UTC)
    except ValueError:
        check.add(f"filter.{name}", "is not a valid timestamp")
        return None
    if round_up and value.nanos % 1000 and moment != _LAST_MOMENT:
        moment += timedelta(microseconds=1)
    return moment


def _filter(check: Violations, where: pb.ContentFilter) -> ContentFilter:
    statuses = [
        check.content_status(f"filter.statuses[{index}]", number, unset=None) for index, number in enumerate(where.statuses)
    ]
    return ContentFilter(
        author_id=check.uuid("filter.author_id", where.author_id, required=False),
        tags=check.tags("filter.tags", where.tags) or None,
        statuses=[status for status in statuses if status is not None] or None,
        created_after=_time(check, where, "create_time_after", round_up=False),
        created_before=_time(check, where, "create_time_before", round_up=True),
    )


def _fingerprint(new: NewContent) -> bytes:
    """What a CreateContent request asks for, as a digest that a retry reproduces exactly (AIP-155)."""
    return request_fingerprint(str(new.author_id), new.title, new.body, new.tags, new.metadata, new.status.value)
