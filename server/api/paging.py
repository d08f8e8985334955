"""Page sizes and opaque page tokens (AIP-158).

A token encodes where the previous page ended, so the next page starts strictly after it: rows inserted
or deleted between calls never shift a page. Tokens are base64url JSON with a kind tag and a version, so a
token from another List method, an older format or a mangled string is INVALID_ARGUMENT, never INTERNAL.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from uuid import UUID

from server.domain import PageCursor
from server.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_TOKEN_VERSION = 1
_MAX_TOKEN_LENGTH = 512  # tokens this service issues are ~150 characters; anything far longer is not one


def page_size(requested: int) -> int:
    """0 means the default; sizes above the maximum are lowered to it, as AIP-158 asks."""
    if requested < 0:
        raise InvalidArgument.of("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(kind: str, cursor: PageCursor) -> str:
    payload = {"v": _TOKEN_VERSION, "k": kind, "t": cursor.created_at.isoformat(), "i": str(cursor.id)}
    return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_token(kind: str, token: str) -> PageCursor | None:
    """The cursor in ``token``; None for the first page (empty token)."""
    if not token:
        return None
    invalid = InvalidArgument.of("page_token", "is not a page token this method issued")
    if len(token) > _MAX_TOKEN_LENGTH:
        raise invalid
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(payload, dict) or payload.get("v") != _TOKEN_VERSION or payload.get("k") != kind:
            raise ValueError("token of another kind or version")
        created, row_id = payload.get("t"), payload.get("i")
        if not isinstance(created, str) or not isinstance(row_id, str):
            raise ValueError("malformed position")
        created_at = datetime.fromisoformat(created)
        if created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        # Normalized to UTC here, so that an offset pushing the year out of range fails now, not in the driver.
        return PageCursor(created_at=created_at.astimezone(UTC), id=UUID(row_id))
    except (binascii.Error, ValueError, OverflowError, UnicodeDecodeError):
        raise invalid from None
