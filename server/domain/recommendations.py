"""Interactions, feedback and recommendation feeds, as plain dataclasses shared by the store and the API."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


class InteractionType(enum.Enum):
    """What a user did with content; the values are what ``interactions.type`` stores."""

    VIEW = "view"
    LIKE = "like"
    SHARE = "share"
    BOOKMARK = "bookmark"
    DISMISS = "dismiss"  # never weighed: dismissed content is excluded from the user's feed instead


class Feedback(enum.Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class Reason(enum.Enum):
    SIMILAR = "similar"
    POPULAR = "popular"
    PRECOMPUTED = "precomputed"


@dataclass(frozen=True)
class Interaction:
    id: UUID
    user_id: UUID
    content_id: UUID
    type: InteractionType
    created_at: datetime


@dataclass(frozen=True)
class Ranked:
    """One entry of a ranked list: stored by a pipeline, or found by the service."""

    content_id: UUID
    score: float


@dataclass(frozen=True)
class PrecomputedList:
    list_id: UUID
    items: list[Ranked]


@dataclass(frozen=True)
class FeedInputs:
    """What a user's feed is computed from, read in one transaction."""

    precomputed: PrecomputedList | None
    """The user's unexpired precomputed list, if any."""
    recent: list[tuple[UUID, InteractionType]]
    """The latest interactions, newest first, dismissals left out."""
    interaction_count: int
    """Every interaction of the user but dismissals."""
    excluded: list[UUID]
    """Content never to show them: everything they interacted with, and everything they rejected."""


@dataclass(frozen=True)
class Recommendation:
    content_id: UUID
    score: float
    reason: Reason
