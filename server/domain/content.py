"""Content as plain dataclasses, shared by the store, the cache and the API layer."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


class ContentStatus(enum.Enum):
    """Lifecycle state; the values are what the ``contents.status`` column stores."""

    DRAFT = "draft"
    PUBLISHED = "published"
    ARCHIVED = "archived"


class ContentOrder(enum.Enum):
    """Orders of ListContents: the time column walked, and the direction (ties by id, same direction)."""

    CREATE_TIME_DESC = ("created_at", True)
    CREATE_TIME_ASC = ("created_at", False)
    UPDATE_TIME_DESC = ("updated_at", True)
    UPDATE_TIME_ASC = ("updated_at", False)

    @property
    def column(self) -> str:
        return self.value[0]

    @property
    def descending(self) -> bool:
        return self.value[1]


@dataclass(slots=True)
class Content:
    """A piece of content written by a user; read-only by convention.

    Not frozen, unlike the other entities: a frozen dataclass sets each field through ``object.__setattr__``,
    which makes it about four times as costly to build, and BatchGetContents builds up to 100 per call.
    """

    id: UUID
    author_id: UUID
    title: str
    body: str
    tags: list[str]
    metadata: dict[str, Any]
    status: ContentStatus
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None
    version: int
    """Bumped by every update; the API shows it as the etag."""


@dataclass(frozen=True)
class NewContent:
    """What CreateContent stores; the server sets the rest."""

    author_id: UUID
    title: str
    body: str
    tags: list[str]
    metadata: dict[str, Any]
    status: ContentStatus


@dataclass(frozen=True)
class ContentChanges:
    """The fields an UpdateContent call sets; None leaves a field as it is."""

    title: str | None = None
    body: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None
    status: ContentStatus | None = None


@dataclass(frozen=True)
class ContentFilter:
    """Conditions shared by ListContents and SearchContents; None or empty means no condition."""

    author_id: UUID | None = None
    tags: list[str] | None = None
    statuses: list[ContentStatus] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True)
class SearchHit:
    """One result of a full-text search: the content, its rank (float4, exact) and a highlighted snippet."""

    content: Content
    rank: float
    snippet: str


@dataclass(frozen=True)
class RankCursor:
    """Where a page of search results ends: the (rank, id) of its last hit."""

    rank: float
    id: UUID
