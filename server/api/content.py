"""ContentService: content by id, in batches, by filters and by full-text search."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import grpc
from dataservice.v1 import common_pb2
from dataservice.v1 import content_service_pb2 as pb
from dataservice.v1 import content_service_pb2_grpc as pb_grpc
from google.protobuf import timestamp_pb2

from server.api import paging
from server.api.validation import Violations
from server.cache.content import Contents
from server.domain.common import CreateRequest, PageCursor, request_fingerprint
from server.domain.content import ContentChanges, ContentFilter, ContentOrder, ContentStatus, NewContent, RankCursor
from server.errors import Unimplemented, clip
from server.messages.content import STATUS_FROM_MESSAGE, content_message, fill_content_message

MAX_TITLE_CHARS = 300
MAX_BODY_BYTES = 1024 * 1024
MAX_TAGS = 32
MAX_TAG_CHARS = 64
MAX_METADATA_BYTES = 16 * 1024
MAX_BATCH_IDS = 100
MAX_QUERY_CHARS = 1000
MAX_SEARCH_PAGE_SIZE = 100
UPDATABLE_FIELDS = frozenset({"title", "body", "tags", "metadata", "status"})
_LIST_CONTENTS = "dataservice.v1.ContentService.ListContents"
_SEARCH_CONTENTS = "dataservice.v1.ContentService.SearchContents"
_ORDERS = {
    pb.CONTENT_ORDER_UNSPECIFIED: ContentOrder.CREATE_TIME_DESC,
    pb.CONTENT_ORDER_CREATE_TIME_DESC: ContentOrder.CREATE_TIME_DESC,
    pb.CONTENT_ORDER_CREATE_TIME_ASC: ContentOrder.CREATE_TIME_ASC,
    pb.CONTENT_ORDER_UPDATE_TIME_DESC: ContentOrder.UPDATE_TIME_DESC,
    pb.CONTENT_ORDER_UPDATE_TIME_ASC: ContentOrder.UPDATE_TIME_ASC,
}


class ContentServicer(pb_grpc.ContentServiceServicer):
    """Serves dataservice.v1.ContentService; reads and writes go through ``Contents`` (cache + store)."""

    def __init__(self, contents: Contents, page_tokens: paging.PageTokens) -> None:
        self._contents = contents
        self._page_tokens = page_tokens

    async def CreateContent(
        self, request: pb.CreateContentRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateContentResponse:
        check = Violations()
        given = request.content
        author_id = check.uuid("content.author_id", given.author_id)
        status = _status(check, "content.status", given.status, unset=ContentStatus.DRAFT)
        new = NewContent(
            author_id=author_id,
            title=check.text("content.title", given.title, min_length=1, max_length=MAX_TITLE_CHARS),
            body=_body(check, "content.body", given.body),
            tags=_tags(check, "content.tags", list(given.tags)),
            metadata=_metadata(check, given),
            status=status or ContentStatus.DRAFT,
        )
        request_id = check.uuid("request_id", request.request_id, required=False)
        check.raise_if_any()
        identity = CreateRequest(request_id, _fingerprint(new)) if request_id else None
        return pb.CreateContentResponse(content=content_message(await self._contents.create(new, identity)))

    async def GetContent(
        self, request: pb.GetContentRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetContentResponse:
        check = Violations()
        content_id = check.uuid("id", request.id)
        check.raise_if_any()
        return pb.GetContentResponse(content=await self._contents.get(content_id))

    async def BatchGetContents(
        self, request: pb.BatchGetContentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchGetContentsResponse:
        check = Violations()
        if len(request.ids) > MAX_BATCH_IDS:
            check.add("ids", f"must name at most {MAX_BATCH_IDS} ids, not {len(request.ids)}")
            check.raise_if_any()
        ids = [check.uuid(f"ids[{index}]", text) for index, text in enumerate(request.ids)]
        check.raise_if_any()
        found = await self._contents.get_many(list(set(ids)))
        response = pb.BatchGetContentsResponse()
        written: dict[UUID, pb.Content] = {}
        for content_id, text in zip(ids, request.ids):
            content = found.get(content_id)
            if content is None:
                response.missing_ids.append(text)
            elif content_id in written:
                response.contents.add().CopyFrom(written[content_id])
            else:
                written[content_id] = message = response.contents.add()
                fill_content_message(message, content)
        return response

    async def ListContents(
        self, request: pb.ListContentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListContentsResponse:
        check = Violations()
        where = _filter(check, request.filter)
        order = _ORDERS.get(request.order)
        if order is None:
            check.add("order", f"{request.order} is not a ContentOrder")
        check.raise_if_any()
        assert order is not None
        size = paging.page_size(request.page_size)
        parameters = _parameters(request.filter, request.order.to_bytes(4, "big", signed=True))
        after = self._page_tokens.decode(_LIST_CONTENTS, parameters, request.page_token)
        # One row more than the page tells whether another page follows, without a count query.
        contents = await self._contents.list(where, order, after=after, limit=size + 1)
        next_token = ""
        if len(contents) > size:
            contents = contents[:size]
            last = contents[-1]
            # The cursor holds the time of the column the order walks: updated_at for the update-time orders.
            position = last.created_at if order.column == "created_at" else last.updated_at
            next_token = self._page_tokens.encode(_LIST_CONTENTS, parameters, PageCursor(position, last.id))
        return pb.ListContentsResponse(contents=[content_message(c) for c in contents], next_page_token=next_token)

    async def UpdateContent(
        self, request: pb.UpdateContentRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateContentResponse:
        check = Violations()
        given = request.content
        content_id = check.uuid("content.id", given.id)
        paths = set(request.update_mask.paths)
        if not paths:
            check.add("update_mask", f"required; name the fields to change: {', '.join(sorted(UPDATABLE_FIELDS))}")
        for path in sorted(paths - UPDATABLE_FIELDS):
            check.add(
                "update_mask", f"{clip(path)!r} is not an updatable field; use {', '.join(sorted(UPDATABLE_FIELDS))}"
            )
        changes = ContentChanges(
            title=(
                check.text("content.title", given.title, min_length=1, max_length=MAX_TITLE_CHARS)
                if "title" in paths
                else None
            ),
            body=_body(check, "content.body", given.body) if "body" in paths else None,
            tags=_tags(check, "content.tags", list(given.tags)) if "tags" in paths else None,
            metadata=_metadata(check, given) if "metadata" in paths else None,
            status=_status(check, "content.status", given.status, unset=None) if "status" in paths else None,
        )
        expected_version = check.conditional_etag("content.etag", given.etag, request.etag)
        check.raise_if_any()
        content = await self._contents.update(content_id, changes, expected_version=expected_version)
        return pb.UpdateContentResponse(content=content_message(content))

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
        if request.hybrid:
            raise Unimplemented("hybrid search is not served; search with hybrid unset for full-text ranking")
        size = min(paging.page_size(request.page_size), MAX_SEARCH_PAGE_SIZE)
        # Binding the token to hybrid too is implicit: only hybrid=false searches are served and issue tokens.
        parameters = _parameters(request.filter, query.encode())
        after = self._page_tokens.decode_ranked(_SEARCH_CONTENTS, parameters, request.page_token)
        hits = await self._contents.search(query, where, after=after, limit=size + 1)
        next_token = ""
        if len(hits) > size:
            hits = hits[:size]
            last = hits[-1]
            cursor = RankCursor(last.rank, last.content.id)
            next_token = self._page_tokens.encode_ranked(_SEARCH_CONTENTS, parameters, cursor)
        return pb.SearchContentsResponse(
            results=[
                pb.ContentSearchResult(content=content_message(hit.content), rank=hit.rank, snippet=hit.snippet)
                for hit in hits
            ],
            next_page_token=next_token,
        )


def _parameters(where: pb.ContentFilter, rest: bytes) -> bytes:
    """What a page token is bound to besides its method: the filter as sent, and the order or the query."""
    encoded = where.SerializeToString(deterministic=True)
    return len(encoded).to_bytes(4, "big") + encoded + rest


def _status(check: Violations, field: str, number: int, *, unset: ContentStatus | None) -> ContentStatus | None:
    if number == common_pb2.CONTENT_STATUS_UNSPECIFIED:
        if unset is None:
            check.add(field, "must be CONTENT_STATUS_DRAFT, CONTENT_STATUS_PUBLISHED or CONTENT_STATUS_ARCHIVED")
        return unset
    status = STATUS_FROM_MESSAGE.get(number)
    if status is None:
        check.add(field, f"{number} is not a ContentStatus")
    return status


def _body(check: Violations, field: str, body: str) -> str:
    if len(body) > MAX_BODY_BYTES or len(body.encode()) > MAX_BODY_BYTES:
        check.add(field, f"must be at most {MAX_BODY_BYTES} bytes of UTF-8")
    elif "\x00" in body:
        check.add(field, "must not contain NUL characters")
    return body


def _tags(check: Violations, field: str, tags: list[str]) -> list[str]:
    """The tags with duplicates dropped, first occurrence kept."""
    if len(tags) > MAX_TAGS:
        check.add(field, f"must hold at most {MAX_TAGS} tags, not {len(tags)}")
        return tags
    for index, tag in enumerate(tags):
        check.text(f"{field}[{index}]", tag, min_length=1, max_length=MAX_TAG_CHARS)
    return list(dict.fromkeys(tags))


def _metadata(check: Violations, content: pb.Content) -> dict[str, Any]:
    """The metadata as a dict, {} when unset; bad metadata is recorded in ``check``."""
    value = content.metadata if content.HasField("metadata") else None
    return check.json_object("content.metadata", value, max_bytes=MAX_METADATA_BYTES) or {}


def _time(check: Violations, field: str, holder: pb.ContentFilter, name: str) -> datetime | None:
    if not holder.HasField(name):
        return None
    value: timestamp_pb2.Timestamp = getattr(holder, name)
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        check.add(field, "is not a valid timestamp")
        return None


def _filter(check: Violations, where: pb.ContentFilter) -> ContentFilter:
    statuses = []
    for index, number in enumerate(where.statuses):
        status = _status(check, f"filter.statuses[{index}]", number, unset=None)
        if status is not None:
            statuses.append(status)
    return ContentFilter(
        author_id=check.uuid("filter.author_id", where.author_id, required=False),
        tags=_tags(check, "filter.tags", list(where.tags)) or None,
        statuses=statuses or None,
        created_after=_time(check, "filter.create_time_after", where, "create_time_after"),
        created_before=_time(check, "filter.create_time_before", where, "create_time_before"),
    )


def _fingerprint(new: NewContent) -> bytes:
    return request_fingerprint(
        str(new.author_id), new.title, new.body, new.tags, new.metadata, new.status.value
    )
