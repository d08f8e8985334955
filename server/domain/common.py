"""Shapes shared by every entity: create-request identity (AIP-155) and keyset page positions (AIP-158)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


@dataclass(frozen=True)
class CreateRequest:
    """The identity of a create call for idempotent retries (AIP-155): the caller's request id, and a digest
    of what the request asked for, so that the id reused with other fields is told apart from a retry."""

    id: UUID
    fingerprint: bytes


@dataclass(frozen=True)
class PageCursor:
    """Where a keyset page ends: the (created_at, id) of its last row."""

    created_at: datetime
    id: UUID
