"""Shapes shared by every entity: create-request identity (AIP-155) and keyset page positions (AIP-158)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


@dataclass(frozen=True)
class CreateRequest:
    """The identity of a create call for idempotent retries (AIP-155): the caller's request id, and a digest
    of what the request asked for, so that the id reused with other fields is told apart from a retry."""

    id: UUID
    fingerprint: bytes


def request_fingerprint(*fields: Any) -> bytes:
    """The digest of what a create request asked for (its JSON-representable ``fields``, in order) that a retry
    reproduces exactly: canonical JSON (sorted keys, no spaces) under SHA-256. Stored beside the row, so its
    form never changes; leave out anything that must not be stored unsalted (passwords, tokens)."""
    canonical = json.dumps(list(fields), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest()


@dataclass(frozen=True)
class PageCursor:
    """Where a keyset page ends: the (created_at, id) of its last row."""

    created_at: datetime
    id: UUID
