"""Embedding collections, their items and searches, as plain dataclasses shared by the store and the API."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from server.domain.content import ContentStatus


class DistanceMetric(enum.Enum):
    """How a collection compares vectors: the value is what ``collections.distance_metric`` stores.

    ``operator`` is pgvector's distance operator, ``opclass`` the HNSW operator class suffix, and ``score``
    turns the operator's result (``d``) into the service's score, higher meaning more similar.
    """

    COSINE = ("cosine", "<=>", "cosine_ops", "1 - d")
    L2 = ("l2", "<->", "l2_ops", "-d")
    INNER_PRODUCT = ("inner_product", "<#>", "ip_ops", "-d")  # pgvector's <#> is the negated inner product

    def __init__(self, stored: str, operator: str, opclass: str, score: str) -> None:
        self.stored = stored
        self.operator = operator
        self.opclass = opclass
        self.score = score

    @classmethod
    def from_stored(cls, stored: str) -> DistanceMetric:
        return next(metric for metric in cls if metric.stored == stored)


MAX_DIMENSION = 2000  # pgvector indexes vector columns of up to 2,000 dimensions
MAX_HALF_DIMENSION = 4000  # and halfvec columns of up to 4,000
MAX_HALF_VALUE = 65504.0  # the largest finite 16-bit float


@dataclass(frozen=True)
class NewCollection:
    """What CreateCollection stores; the server sets the rest."""

    name: str
    dimension: int
    metric: DistanceMetric
    half_precision: bool
    hnsw_m: int
    hnsw_ef_construction: int


@dataclass(frozen=True)
class Collection(NewCollection):
    """A stored collection. ``id`` names its table and is the etag: a later collection of the same name has
    another one."""

    id: int
    created_at: datetime

    @property
    def vector_type(self) -> str:
        """The column type of its vectors, as SQL: built from stored integers, never from a request."""
        return f"{'halfvec' if self.half_precision else 'vector'}({self.dimension})"


@dataclass(frozen=True)
class NewEmbedding:
    """One item of UpsertEmbeddings."""

    id: UUID
    vector: list[float]
    content_id: UUID | None
    metadata: dict[str, Any]
    tags: list[str]
    expire_at: datetime | None


@dataclass(frozen=True)
class Embedding(NewEmbedding):
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class EmbeddingFilter:
    """Conditions a search result must meet; empty means no condition."""

    metadata: dict[str, Any] = field(default_factory=dict)
    all_tags: list[str] = field(default_factory=list)
    any_tags: list[str] = field(default_factory=list)
    content_statuses: list[ContentStatus] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.metadata or self.all_tags or self.any_tags or self.content_statuses)


@dataclass(frozen=True)
class SearchParams:
    """How to search: exactly, or through the index with these settings (already bounded and defaulted)."""

    exact: bool
    ef_search: int
    scan_budget: int


@dataclass(frozen=True)
class Query:
    """A nearest-neighbour search: the query vector, how many results, which items may be returned, the stored
    items to leave out (the examples a search by id or by examples started from), and content whose items to
    leave out (what a user has seen, for recommendations; items without content are then left out too)."""

    vector: list[float]
    top_k: int
    where: EmbeddingFilter
    params: SearchParams
    excluded: list[UUID] = field(default_factory=list)
    excluded_contents: list[UUID] = field(default_factory=list)


@dataclass(frozen=True)
class Hit:
    id: UUID
    score: float
    content_id: UUID | None
    metadata: dict[str, Any]


@dataclass(frozen=True)
class SearchResult:
    """The hits, best first; ``truncated`` when the index scan used up its budget with fewer than top_k hits
    although more items match, and then ``scanned`` rows it visited."""

    hits: list[Hit]
    truncated: bool = False
    scanned: int = 0
