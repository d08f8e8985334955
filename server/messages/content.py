"""Conversions between the Content dataclass and its protobuf message, for the API layer and the cache."""

from __future__ import annotations

from dataservice.v1 import common_pb2
from dataservice.v1 import content_service_pb2 as content_pb

from server.domain.content import Content, ContentStatus
from server.messages.common import struct, timestamp

STATUS_TO_MESSAGE: dict[ContentStatus, int] = {
    ContentStatus.DRAFT: common_pb2.CONTENT_STATUS_DRAFT,
    ContentStatus.PUBLISHED: common_pb2.CONTENT_STATUS_PUBLISHED,
    ContentStatus.ARCHIVED: common_pb2.CONTENT_STATUS_ARCHIVED,
}
STATUS_FROM_MESSAGE: dict[int, ContentStatus] = {number: status for status, number in STATUS_TO_MESSAGE.items()}


def content_message(content: Content) -> content_pb.Content:
    message = content_pb.Content(
        id=str(content.id),
        author_id=str(content.author_id),
        title=content.title,
        body=content.body,
        tags=content.tags,
        status=STATUS_TO_MESSAGE[content.status],
        create_time=timestamp(content.created_at),
        update_time=timestamp(content.updated_at),
        etag=str(content.version),
    )
    if content.metadata:  # an empty Struct costs a conversion per item and says nothing
        message.metadata.CopyFrom(struct(content.metadata))
    if content.published_at is not None:
        message.publish_time.CopyFrom(timestamp(content.published_at))
    return message
