"""Users as plain dataclasses, shared by the store, the cache and the API layer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


def email_key(email: str) -> str:
    """The form in which emails are compared, stored (users.email_key) and cached: one function for all three,
    so that the database's uniqueness and the cache's keys can never disagree about which emails are equal."""
    return email.lower()


@dataclass(frozen=True)
class User:
    """A user account, without its password hash (which never leaves the store)."""

    id: UUID
    email: str
    display_name: str
    preferences: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    version: int
    """Bumped by every update; the API shows it as the etag."""


@dataclass(frozen=True)
class UserChanges:
    """The fields an UpdateUser call sets; None leaves a field as it is."""

    email: str | None = None
    display_name: str | None = None
    preferences: dict[str, Any] | None = None


@dataclass(frozen=True)
class Credentials:
    """A user together with the stored password hash, for the password checks of the user service only."""

    user: User
    password_hash: str


@dataclass(frozen=True)
class Created:
    """The result of a create: the user, and whether an earlier call with the same request id had made it.

    For a replay, ``password_hash`` is the stored hash, so the caller can check that the retry carried the
    same password (which the fingerprint leaves out: it is never stored unsalted).
    """

    user: User
    replayed: bool
    password_hash: str | None = None


@dataclass(frozen=True)
class DeletedUser:
    """What a user's deletion took with it through the foreign keys, for the cache to invalidate."""

    session_token_hashes: list[bytes]
    content_ids: list[UUID]
