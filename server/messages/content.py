"""Conversions between the Content dataclass and its protobuf message, for the API layer and the cache.

Content travels in batches of up to a hundred, so the conversion fills a message in place (the one a
response's repeated field hands out) rather than building one and copying it in: with upb, every
message-valued argument or ``append`` is a copy, and copying dominated a batch's conversion.
"""

from __future__ import annotations

from datetime import UTC, datetime

from dataservice.v1 import common_pb2
from dataservice.v1 import content_service_pb2 as content_pb
from google.protobuf import timestamp_pb2

from server.domain.content import Content, ContentStatus

STATUS_TO_MESSAGE: dict[ContentStatus, int] = {
    ContentStatus.DRAFT: common_pb2.CONTENT_STATUS_DRAFT,
    ContentStatus.PUBLISHED: common_pb2.CONTENT_STATUS_PUBLISHED,
    ContentStatus.ARCHIVED: common_pb2.CONTENT_STATUS_ARCHIVED,
}
STATUS_FROM_MESSAGE: dict[int, ContentStatus] = {number: status for status, number in STATUS_TO_MESSAGE.items()}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def content_message(content: Content) -> content_pb.Content:
    message = content_pb.Content()
    fill_content_message(message, content)
    return message


def fill_content_message(message: content_pb.Content, content: Content) -> None:
    """Writes ``content`` into the empty ``message``."""
    message.id = str(content.id)
    message.author_id = str(content.author_id)
    message.title = content.title
    message.body = content.body
    message.tags.extend(content.tags)
    message.status = STATUS_TO_MESSAGE[content.status]
    _set_time(message.create_time, content.created_at)
    _set_time(message.update_time, content.updated_at)
    message.etag = str(content.version)
    if content.metadata:  # an empty object stays an unset field: nothing to convert
        message.metadata.update(content.metadata)
    if content.published_at is not None:
        _set_time(message.publish_time, content.published_at)


def _set_time(field: timestamp_pb2.Timestamp, value: datetime) -> None:
    delta = value - _EPOCH
    field.seconds = delta.days * 86400 + delta.seconds
    field.nanos = delta.microseconds * 1000
