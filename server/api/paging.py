"""Page sizes and page tokens (AIP-158).

A token says where the previous page ended, so the next page starts strictly after it: rows inserted or
deleted between calls never shift a page. Tokens are opaque and tamper-evident: the position is encrypted
and authenticated with AES-GCM under a key derived from PAGE_TOKEN_SECRET (the same on every replica and
across restarts, so any replica continues a listing), and the authenticated data binds the token to its List
method and to the request's other parameters (filter, order). A token that was altered, forged, made under
another secret, or used with other parameters fails authentication: INVALID_ARGUMENT, never INTERNAL.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from server.domain.common import PageCursor
from server.domain.content import RankCursor
from server.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_FORMAT = 1
_POSITION = struct.Struct(">Bq16s")  # format, microseconds since the epoch, row id
_RANKED_FORMAT = 2
_RANKED_POSITION = struct.Struct(">Bf16s")  # format, rank (float4, as PostgreSQL ranks: exact), row id
_NAMED_FORMAT = 3  # format byte, then the UTF-8 name of the last row (listings ordered by name)
_NONCE_BYTES = 12
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TOKEN_LENGTH = 256  # tokens this service issues are at most 103 characters; anything far longer is not one


def page_size(requested: int) -> int:
    """0 means the default; sizes above the maximum are lowered to it, as AIP-158 asks."""
    if requested < 0:
        raise InvalidArgument.of("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


class PageTokens:
    """Issues and reads the page tokens of every List method under one secret."""

    def __init__(self, secret: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"dataservice page tokens").derive(secret)
        self._aead = AESGCM(key)

    def encode(self, method: str, parameters: bytes, cursor: PageCursor) -> str:
        """A token for the page after ``cursor`` of ``method`` called with ``parameters`` (filter, order…)."""
        delta = cursor.created_at - _EPOCH
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return self._seal(method, parameters, _POSITION.pack(_FORMAT, micros, cursor.id.bytes))

    def encode_ranked(self, method: str, parameters: bytes, cursor: RankCursor) -> str:
        """A token for the page after ``cursor`` of a ranked listing (a search)."""
        return self._seal(method, parameters, _RANKED_POSITION.pack(_RANKED_FORMAT, cursor.rank, cursor.id.bytes))

    def encode_named(self, method: str, parameters: bytes, name: str) -> str:
        """A token for the page after the row named ``name`` of a listing ordered by name."""
        return self._seal(method, parameters, bytes((_NAMED_FORMAT,)) + name.encode())

    def decode(self, method: str, parameters: bytes, token: str) -> PageCursor | None:
        """The cursor in ``token``; None for the first page (empty token)."""
        if not token:
            return None
        _, micros, row_id = self._open(method, parameters, token, _POSITION, _FORMAT)
        return PageCursor(created_at=_EPOCH + timedelta(microseconds=micros), id=UUID(bytes=row_id))

    def decode_ranked(self, method: str, parameters: bytes, token: str) -> RankCursor | None:
        """The cursor in a token of ``encode_ranked``; None for the first page (empty token)."""
        if not token:
            return None
        _, rank, row_id = self._open(method, parameters, token, _RANKED_POSITION, _RANKED_FORMAT)
        return RankCursor(rank=rank, id=UUID(bytes=row_id))

    def decode_named(self, method: str, parameters: bytes, token: str) -> str | None:
        """The name in a token of ``encode_named``; None for the first page (empty token)."""
        if not token:
            return None
        position = self._open_raw(method, parameters, token)
        if position[:1] != bytes((_NAMED_FORMAT,)):
            raise _invalid()
        try:
            return position[1:].decode()
        except UnicodeDecodeError:
            raise _invalid() from None

    def _seal(self, method: str, parameters: bytes, position: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, position, _bound(method, parameters))
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def _open(self, method: str, parameters: bytes, token: str, layout: struct.Struct, version: int) -> tuple[Any, ...]:
        try:
            position = layout.unpack(self._open_raw(method, parameters, token))
        except struct.error:
            raise _invalid() from None
        if position[0] != version:
            raise _invalid()
        return position

    def _open_raw(self, method: str, parameters: bytes, token: str) -> bytes:
        """The authenticated plaintext of ``token``; INVALID_ARGUMENT when it is not one of ours for these."""
        if len(token) > _MAX_TOKEN_LENGTH or not token.isascii():
            raise _invalid()
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            if base64.urlsafe_b64encode(raw).decode().rstrip("=") != token:
                raise ValueError("not the one spelling of these bytes")  # e.g. changed unused trailing bits
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _bound(method, parameters))
        except (binascii.Error, ValueError, InvalidTag):
            raise _invalid() from None


def _invalid() -> InvalidArgument:
    return InvalidArgument.of("page_token", "is not a page token that this method issued for these request parameters")


def _bound(method: str, parameters: bytes) -> bytes:
    """The authenticated data: what a token is valid for besides its own bytes."""
    return method.encode() + b"\0" + parameters
