"""Conversion of the Content dataclass into its protobuf message, for the API layer and the cache.

There is no conversion back: requests are validated field by field into NewContent or ContentChanges, and the
cache hands out the serialized message it stores.
"""

from __future__ import annotations

from dataservice.v1 import common_pb2
from dataservice.v1 import content_service_pb2 as content_pb

from server.domain.content import Content, ContentStatus
from server.messages.common import set_timestamp

STATUS_TO_MESSAGE: dict[ContentStatus, int] = {
    ContentStatus.DRAFT: common_pb2.CONTENT_STATUS_DRAFT,
    ContentStatus.PUBLISHED: common_pb2.CONTENT_STATUS_PUBLISHED,
    ContentStatus.ARCHIVED: common_pb2.CONTENT_STATUS_ARCHIVED,
}
STATUS_FROM_MESSAGE: dict[int, ContentStatus] = {number: status for status, number in STATUS_TO_MESSAGE.items()}


def fill_content(message: content_pb.Content, content: Content) -> content_pb.Content:
    """Writes ``content`` into ``message`` (a new, empty one) and returns it.

    It writes in place so that responses are filled where they stand, as in
    ``fill_content(response.contents.add(), content)``: building a message and then appending or assigning it
    would copy it once more. BatchGetContents runs this once per item, so it does only what the message needs.
    """
    message.id = str(content.id)
    message.author_id = str(content.author_id)
    message.title = content.title
    message.body = content.body
    message.tags.extend(content.tags)
    if content.metadata:  # an empty object is the unset Struct: filling one would cost a conversion per item
        message.metadata.update(content.metadata)
    message.status = STATUS_TO_MESSAGE[content.status]
    set_timestamp(message.create_time, content.created_at)
    set_timestamp(message.update_time, content.updated_at)
    if content.published_at is not None:
        set_timestamp(message.publish_time, content.published_at)
    message.etag = str(content.version)
    return message
