import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InteractionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTERACTION_TYPE_UNSPECIFIED: _ClassVar[InteractionType]
    INTERACTION_TYPE_VIEW: _ClassVar[InteractionType]
    INTERACTION_TYPE_LIKE: _ClassVar[InteractionType]
    INTERACTION_TYPE_SHARE: _ClassVar[InteractionType]
    INTERACTION_TYPE_BOOKMARK: _ClassVar[InteractionType]
    INTERACTION_TYPE_DISMISS: _ClassVar[InteractionType]

class RecommendationReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECOMMENDATION_REASON_UNSPECIFIED: _ClassVar[RecommendationReason]
    RECOMMENDATION_REASON_SIMILAR: _ClassVar[RecommendationReason]
    RECOMMENDATION_REASON_POPULAR: _ClassVar[RecommendationReason]
    RECOMMENDATION_REASON_PRECOMPUTED: _ClassVar[RecommendationReason]

class RecommendationFeedback(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECOMMENDATION_FEEDBACK_UNSPECIFIED: _ClassVar[RecommendationFeedback]
    RECOMMENDATION_FEEDBACK_ACCEPTED: _ClassVar[RecommendationFeedback]
    RECOMMENDATION_FEEDBACK_REJECTED: _ClassVar[RecommendationFeedback]
INTERACTION_TYPE_UNSPECIFIED: InteractionType
INTERACTION_TYPE_VIEW: InteractionType
INTERACTION_TYPE_LIKE: InteractionType
INTERACTION_TYPE_SHARE: InteractionType
INTERACTION_TYPE_BOOKMARK: InteractionType
INTERACTION_TYPE_DISMISS: InteractionType
RECOMMENDATION_REASON_UNSPECIFIED: RecommendationReason
RECOMMENDATION_REASON_SIMILAR: RecommendationReason
RECOMMENDATION_REASON_POPULAR: RecommendationReason
RECOMMENDATION_REASON_PRECOMPUTED: RecommendationReason
RECOMMENDATION_FEEDBACK_UNSPECIFIED: RecommendationFeedback
RECOMMENDATION_FEEDBACK_ACCEPTED: RecommendationFeedback
RECOMMENDATION_FEEDBACK_REJECTED: RecommendationFeedback

class Interaction(_message.Message):
    __slots__ = ("id", "user_id", "content_id", "type", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    user_id: str
    content_id: str
    type: InteractionType
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., user_id: _Optional[str] = ..., content_id: _Optional[str] = ..., type: _Optional[_Union[InteractionType, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Recommendation(_message.Message):
    __slots__ = ("content_id", "score", "reason")
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    content_id: str
    score: float
    reason: RecommendationReason
    def __init__(self, content_id: _Optional[str] = ..., score: _Optional[float] = ..., reason: _Optional[_Union[RecommendationReason, str]] = ...) -> None: ...

class RankedContent(_message.Message):
    __slots__ = ("content_id", "score")
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    content_id: str
    score: float
    def __init__(self, content_id: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class RecordInteractionRequest(_message.Message):
    __slots__ = ("user_id", "content_id", "type", "request_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    content_id: str
    type: InteractionType
    request_id: str
    def __init__(self, user_id: _Optional[str] = ..., content_id: _Optional[str] = ..., type: _Optional[_Union[InteractionType, str]] = ..., request_id: _Optional[str] = ...) -> None: ...

class RecordInteractionResponse(_message.Message):
    __slots__ = ("interaction",)
    INTERACTION_FIELD_NUMBER: _ClassVar[int]
    interaction: Interaction
    def __init__(self, interaction: _Optional[_Union[Interaction, _Mapping]] = ...) -> None: ...

class GetRecommendationsRequest(_message.Message):
    __slots__ = ("user_id", "page_size", "page_token")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    page_size: int
    page_token: str
    def __init__(self, user_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetRecommendationsResponse(_message.Message):
    __slots__ = ("recommendations", "next_page_token")
    RECOMMENDATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    recommendations: _containers.RepeatedCompositeFieldContainer[Recommendation]
    next_page_token: str
    def __init__(self, recommendations: _Optional[_Iterable[_Union[Recommendation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PutRecommendationsRequest(_message.Message):
    __slots__ = ("user_id", "items", "expire_time", "ttl")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    items: _containers.RepeatedCompositeFieldContainer[RankedContent]
    expire_time: _timestamp_pb2.Timestamp
    ttl: _duration_pb2.Duration
    def __init__(self, user_id: _Optional[str] = ..., items: _Optional[_Iterable[_Union[RankedContent, _Mapping]]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class PutRecommendationsResponse(_message.Message):
    __slots__ = ("stored_count", "unknown_content_ids", "expire_time")
    STORED_COUNT_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_CONTENT_IDS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    stored_count: int
    unknown_content_ids: _containers.RepeatedScalarFieldContainer[str]
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, stored_count: _Optional[int] = ..., unknown_content_ids: _Optional[_Iterable[str]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordFeedbackRequest(_message.Message):
    __slots__ = ("user_id", "content_id", "feedback")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    content_id: str
    feedback: RecommendationFeedback
    def __init__(self, user_id: _Optional[str] = ..., content_id: _Optional[str] = ..., feedback: _Optional[_Union[RecommendationFeedback, str]] = ...) -> None: ...

class RecordFeedbackResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
