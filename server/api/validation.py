"""Request checks shared by the servicers; ``Violations`` gathers every bad field before failing once."""

from __future__ import annotations

import re
from uuid import UUID

from server.errors import FieldViolation, InvalidArgument

# The textual UUID form of RFC 9562 (hex digits in either case, hyphens in place), nothing else: ``UUID()``
# would also take braces, a urn: prefix, no hyphens, surrounding spaces and non-ASCII digits, so that many
# spellings would name one id — and a request_id reused under another spelling would look like a new one.
_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_MAX_VERSION = 2**63 - 1  # versions are PostgreSQL bigints


class Violations:
    """Collects field violations; ``raise_if_any()`` turns them into one INVALID_ARGUMENT naming each field."""

    def __init__(self) -> None:
        self._items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self._items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self._items:
            raise InvalidArgument(self._items)

    def uuid(self, field: str, value: str, *, required: bool = True) -> UUID | None:
        if not value:
            if required:
                self.add(field, "required")
            return None
        if _UUID_TEXT.fullmatch(value) is None:
            self.add(field, "must be a UUID in its 8-4-4-4-12 hexadecimal form")
            return None
        return UUID(value)

    def text(self, field: str, value: str, *, min_length: int, max_length: int) -> str:
        """Checks a free-text field: length in characters, and no NUL or other control characters."""
        if len(value) < min_length:
            self.add(field, "required" if not value else f"must be at least {min_length} characters")
        elif len(value) > max_length:
            self.add(field, f"must be at most {max_length} characters")
        elif any(ord(ch) < 32 and ch not in "\t\n\r" for ch in value):
            self.add(field, "must not contain control characters")
        return value

    def email(self, field: str, value: str) -> str:
        if not value:
            self.add(field, "required")
        elif len(value) > 254:
            self.add(field, "must be at most 254 characters")
        elif value.count("@") != 1 or value.startswith("@") or value.endswith("@"):
            self.add(field, "must be an email address like name@example.com")
        elif any(ch.isspace() or ord(ch) < 32 for ch in value):
            self.add(field, "must not contain spaces or control characters")
        return value

    def etag(self, field: str, value: str) -> int | None:
        """Etags are the resource version the server sent; anything else cannot match."""
        if not value:
            return None
        if not value.isascii() or not value.isdigit() or len(value) > 19 or int(value) > _MAX_VERSION:
            self.add(field, "is not an etag this service issued")
            return None
        return int(value)
