"""Request checks shared by the servicers; ``Violations`` gathers every bad field before failing once."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any
from uuid import UUID

from google.protobuf import struct_pb2

from collections.abc import Sequence

from dataservice.v1 import common_pb2

from server.domain.content import ContentStatus
from server.errors import FieldViolation, InvalidArgument
from server.messages.common import json_text, struct_to_dict
from server.messages.content import STATUS_FROM_MESSAGE

# The textual UUID form of RFC 9562 (hex digits in either case, hyphens in place), nothing else: ``UUID()``
# would also take braces, a urn: prefix, no hyphens, surrounding spaces and non-ASCII digits, so that many
# spellings would name one id — and a request_id reused under another spelling would look like a new one.
_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_MAX_VERSION = 2**63 - 1  # versions are PostgreSQL bigints
MAX_TAGS = 32
MAX_TAG_CHARS = 64
_STATUS_NAMES = "CONTENT_STATUS_DRAFT, CONTENT_STATUS_PUBLISHED or CONTENT_STATUS_ARCHIVED"


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

    def text(self, field: str, value: str, *, min_length: int, max_length: int, single_line: bool = False) -> str:
        """Checks a free-text field: length in characters, and no NUL or other control characters. Tab, CR and
        LF are allowed, unless ``single_line`` (titles and labels, which are shown on one line)."""
        allowed = "" if single_line else "\t\n\r"
        if len(value) < min_length:
            self.add(field, "required" if not value else f"must be at least {min_length} characters")
        elif len(value) > max_length:
            self.add(field, f"must be at most {max_length} characters")
        elif any(ord(ch) < 32 and ch not in allowed for ch in value):
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

    def tags(self, field: str, tags: Sequence[str]) -> list[str]:
        """At most MAX_TAGS labels of 1 to MAX_TAG_CHARS characters, duplicates dropped (first kept)."""
        if len(tags) > MAX_TAGS:
            self.add(field, f"must hold at most {MAX_TAGS} tags, not {len(tags)}")
            return []
        for index, tag in enumerate(tags):
            self.text(f"{field}[{index}]", tag, min_length=1, max_length=MAX_TAG_CHARS, single_line=True)
        return list(dict.fromkeys(tags))

    def content_status(self, field: str, number: int, *, unset: ContentStatus | None) -> ContentStatus | None:
        """The status ``number`` names; CONTENT_STATUS_UNSPECIFIED means ``unset``, refused where that is None."""
        if number == common_pb2.CONTENT_STATUS_UNSPECIFIED:
            if unset is None:
                self.add(field, f"must be {_STATUS_NAMES}")
            return unset
        status = STATUS_FROM_MESSAGE.get(number)
        if status is None:
            self.add(field, f"{number} is not a ContentStatus; use {_STATUS_NAMES}")
        return status

    def ip_address(self, field: str, text: str) -> IPv4Address | IPv6Address | None:
        """An optional IP address in text form; None when empty or invalid."""
        if not text:
            return None
        try:
            address = ip_address(text)
        except ValueError:
            self.add(field, "must be an IPv4 or IPv6 address in text form, like 192.0.2.1 or 2001:db8::1")
            return None
        if isinstance(address, IPv6Address) and address.scope_id is not None:
            self.add(field, "must not name an IPv6 zone (the %… suffix), which the database cannot store")
            return None
        return address

    def conditional_etag(self, resource_field: str, on_resource: str, on_request: str) -> int | None:
        """The version a write is conditional on: the resource's own etag (AIP-154), or the request-level one
        that earlier clients send; both may be set only when they agree."""
        resource_version = self.etag(resource_field, on_resource)
        request_version = self.etag("etag", on_request)
        if resource_version is not None and request_version is not None and resource_version != request_version:
            self.add("etag", f"differs from {resource_field}; send the etag in {resource_field} only")
        return resource_version if resource_version is not None else request_version

    def json_object(self, field: str, value: struct_pb2.Struct | None, *, max_bytes: int) -> dict[str, Any] | None:
        """A Struct field as a dict that PostgreSQL's jsonb can store, at most ``max_bytes`` as compact JSON;
        None when unset or invalid."""
        if value is None:
            return None
        try:
            result = struct_to_dict(value)
        except ValueError:  # NaN or infinite numbers have no JSON form
            self.add(field, "must not contain NaN or infinite numbers")
            return None
        if len(json_text(result).encode()) > max_bytes:
            self.add(field, f"must be at most {max_bytes} bytes as JSON")
        elif _contains_nul(result):
            self.add(field, "must not contain NUL characters")  # PostgreSQL's jsonb cannot store them
        return result


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _contains_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    return False
