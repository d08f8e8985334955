import datetime

from dataservice.v1 import common_pb2 as _common_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ContentOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTENT_ORDER_UNSPECIFIED: _ClassVar[ContentOrder]
    CONTENT_ORDER_CREATE_TIME_DESC: _ClassVar[ContentOrder]
    CONTENT_ORDER_CREATE_TIME_ASC: _ClassVar[ContentOrder]
    CONTENT_ORDER_UPDATE_TIME_DESC: _ClassVar[ContentOrder]
    CONTENT_ORDER_UPDATE_TIME_ASC: _ClassVar[ContentOrder]
CONTENT_ORDER_UNSPECIFIED: ContentOrder
CONTENT_ORDER_CREATE_TIME_DESC: ContentOrder
CONTENT_ORDER_CREATE_TIME_ASC: ContentOrder
CONTENT_ORDER_UPDATE_TIME_DESC: ContentOrder
CONTENT_ORDER_UPDATE_TIME_ASC: ContentOrder

class Content(_message.Message):
    __slots__ = ("id", "author_id", "title", "body", "tags", "metadata", "status", "create_time", "update_time", "publish_time", "etag")
    ID_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    id: str
    author_id: str
    title: str
    body: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    metadata: _struct_pb2.Struct
    status: _common_pb2.ContentStatus
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    publish_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, id: _Optional[str] = ..., author_id: _Optional[str] = ..., title: _Optional[str] = ..., body: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., status: _Optional[_Union[_common_pb2.ContentStatus, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class ContentFilter(_message.Message):
    __slots__ = ("author_id", "tags", "statuses", "create_time_after", "create_time_before")
    AUTHOR_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_BEFORE_FIELD_NUMBER: _ClassVar[int]
    author_id: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    statuses: _containers.RepeatedScalarFieldContainer[_common_pb2.ContentStatus]
    create_time_after: _timestamp_pb2.Timestamp
    create_time_before: _timestamp_pb2.Timestamp
    def __init__(self, author_id: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., statuses: _Optional[_Iterable[_Union[_common_pb2.ContentStatus, str]]] = ..., create_time_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., create_time_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ContentSearchResult(_message.Message):
    __slots__ = ("content", "rank", "snippet")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    content: Content
    rank: float
    snippet: str
    def __init__(self, content: _Optional[_Union[Content, _Mapping]] = ..., rank: _Optional[float] = ..., snippet: _Optional[str] = ...) -> None: ...

class CreateContentRequest(_message.Message):
    __slots__ = ("content", "request_id")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    content: Content
    request_id: str
    def __init__(self, content: _Optional[_Union[Content, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateContentResponse(_message.Message):
    __slots__ = ("content",)
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    content: Content
    def __init__(self, content: _Optional[_Union[Content, _Mapping]] = ...) -> None: ...

class GetContentRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetContentResponse(_message.Message):
    __slots__ = ("content",)
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    content: Content
    def __init__(self, content: _Optional[_Union[Content, _Mapping]] = ...) -> None: ...

class BatchGetContentsRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchGetContentsResponse(_message.Message):
    __slots__ = ("contents", "missing_ids")
    CONTENTS_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    contents: _containers.RepeatedCompositeFieldContainer[Content]
    missing_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, contents: _Optional[_Iterable[_Union[Content, _Mapping]]] = ..., missing_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ListContentsRequest(_message.Message):
    __slots__ = ("filter", "order", "page_size", "page_token")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    filter: ContentFilter
    order: ContentOrder
    page_size: int
    page_token: str
    def __init__(self, filter: _Optional[_Union[ContentFilter, _Mapping]] = ..., order: _Optional[_Union[ContentOrder, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListContentsResponse(_message.Message):
    __slots__ = ("contents", "next_page_token")
    CONTENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    contents: _containers.RepeatedCompositeFieldContainer[Content]
    next_page_token: str
    def __init__(self, contents: _Optional[_Iterable[_Union[Content, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateContentRequest(_message.Message):
    __slots__ = ("content", "update_mask", "etag")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    content: Content
    update_mask: _field_mask_pb2.FieldMask
    etag: str
    def __init__(self, content: _Optional[_Union[Content, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class UpdateContentResponse(_message.Message):
    __slots__ = ("content",)
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    content: Content
    def __init__(self, content: _Optional[_Union[Content, _Mapping]] = ...) -> None: ...

class DeleteContentRequest(_message.Message):
    __slots__ = ("id", "etag")
    ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    id: str
    etag: str
    def __init__(self, id: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteContentResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SearchContentsRequest(_message.Message):
    __slots__ = ("query", "filter", "page_size", "page_token", "vector_query")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    VECTOR_QUERY_FIELD_NUMBER: _ClassVar[int]
    query: str
    filter: ContentFilter
    page_size: int
    page_token: str
    vector_query: VectorQuery
    def __init__(self, query: _Optional[str] = ..., filter: _Optional[_Union[ContentFilter, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., vector_query: _Optional[_Union[VectorQuery, _Mapping]] = ...) -> None: ...

class VectorQuery(_message.Message):
    __slots__ = ("collection", "vector")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    collection: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, collection: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ...) -> None: ...

class SearchContentsResponse(_message.Message):
    __slots__ = ("results", "next_page_token")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ContentSearchResult]
    next_page_token: str
    def __init__(self, results: _Optional[_Iterable[_Union[ContentSearchResult, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
