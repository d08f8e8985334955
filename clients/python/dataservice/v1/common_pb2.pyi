from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ContentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTENT_STATUS_UNSPECIFIED: _ClassVar[ContentStatus]
    CONTENT_STATUS_DRAFT: _ClassVar[ContentStatus]
    CONTENT_STATUS_PUBLISHED: _ClassVar[ContentStatus]
    CONTENT_STATUS_ARCHIVED: _ClassVar[ContentStatus]
CONTENT_STATUS_UNSPECIFIED: ContentStatus
CONTENT_STATUS_DRAFT: ContentStatus
CONTENT_STATUS_PUBLISHED: ContentStatus
CONTENT_STATUS_ARCHIVED: ContentStatus
