"""SQL for users. Every function takes the Database, returns domain objects and raises domain errors."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from server.db.database import Database
from server.domain.common import CreateRequest, PageCursor
from server.domain.users import Created, Credentials, DeletedUser, User, UserChanges, email_key
from server.errors import AlreadyExists, Conflict, NotFound, RequestIdReused
from server.store import content as content_store
from server.store import sessions as sessions_store

_COLUMNS = "id, email, display_name, preferences, created_at, updated_at, version"
_EMAIL_TAKEN = "a user with this email already exists"


def _user(row: asyncpg.Record) -> User:
    return User(
        id=row["id"],
        email=row["email"],
        display_name=row["display_name"],
        preferences=row["preferences"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


async def create_user(
    db: Database,
    *,
    email: str,
    display_name: str,
    preferences: dict[str, Any],
    password_hash: str,
    request: CreateRequest | None,
) -> Created:
    """Inserts a user. With a request id already used by the same request, returns what that request created
    (AIP-155); used by a different request, raises InvalidArgument naming ``request_id``."""
    request_id = request.id if request else None
    try:
        row = await db.fetchrow(
            f"""
            INSERT INTO users (email, email_key, display_name, preferences, password_hash,
                               create_request_id, create_request_fingerprint)
            VALUES ($1, $6, $2, $3, $4, $5, $7)
            ON CONFLICT (create_request_id) DO NOTHING
            RETURNING {_COLUMNS}
            """,
            email,
            display_name,
            preferences,
            password_hash,
            request_id,
            email_key(email),
            request.fingerprint if request else None,
        )
    except asyncpg.UniqueViolationError:
        # A concurrent retry of the same request may have won the race on the email index instead of on
        # create_request_id; then the caller gets that request's user, as for any other retry.
        if request is None:
            raise AlreadyExists("User", email, _EMAIL_TAKEN) from None
        row = await _created_by(db, request.id)
        if row is None:
            raise AlreadyExists("User", email, _EMAIL_TAKEN) from None
        return _replayed(row, request, email)
    if row is not None:
        return Created(_user(row), replayed=False)
    assert request is not None, "only create_request_id can conflict without raising"
    row = await _created_by(db, request.id)
    assert row is not None, "ON CONFLICT on create_request_id implies the row exists"
    return _replayed(row, request, email)


async def _created_by(db: Database, request_id: UUID) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {_COLUMNS}, email_key, password_hash, create_request_fingerprint FROM users WHERE create_request_id = $1",
        request_id,
        idempotent=True,
    )


def _replayed(row: asyncpg.Record, request: CreateRequest, email: str) -> Created:
    """The earlier result for a retried request; InvalidArgument when the request id came with other fields."""
    fingerprint = row["create_request_fingerprint"]
    if fingerprint is None:  # created before fingerprints were recorded: the email is all there is to compare
        same = row["email_key"] == email_key(email)
    else:
        same = bytes(fingerprint) == request.fingerprint
    if not same:
        raise RequestIdReused()
    return Created(_user(row), replayed=True, password_hash=row["password_hash"])


async def get_user(db: Database, user_id: UUID) -> User:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE id = $1", user_id, idempotent=True)
    if row is None:
        raise NotFound("User", str(user_id))
    return _user(row)


async def get_user_by_email(db: Database, email: str) -> User:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE email_key = $1", email_key(email), idempotent=True)
    if row is None:
        raise NotFound("User", email)
    return _user(row)


async def get_credentials_by_email(db: Database, email: str) -> Credentials | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS}, password_hash FROM users WHERE email_key = $1", email_key(email), idempotent=True
    )
    return Credentials(_user(row), row["password_hash"]) if row else None


async def get_credentials(db: Database, user_id: UUID) -> Credentials:
    row = await db.fetchrow(f"SELECT {_COLUMNS}, password_hash FROM users WHERE id = $1", user_id, idempotent=True)
    if row is None:
        raise NotFound("User", str(user_id))
    return Credentials(_user(row), row["password_hash"])


async def list_users(db: Database, *, after: PageCursor | None, limit: int) -> list[User]:
    """Users in creation order, strictly after ``after``; keyset paging stays stable under inserts."""
    if after is None:
        rows = await db.fetch(f"SELECT {_COLUMNS} FROM users ORDER BY created_at, id LIMIT $1", limit, idempotent=True)
    else:
        rows = await db.fetch(
            f"SELECT {_COLUMNS} FROM users WHERE (created_at, id) > ($1, $2) ORDER BY created_at, id LIMIT $3",
            after.created_at,
            after.id,
            limit,
            idempotent=True,
        )
    return [_user(row) for row in rows]


async def update_user(db: Database, user_id: UUID, changes: UserChanges, *, expected_version: int | None) -> User:
    """Sets the given fields in one statement; with ``expected_version``, only if nobody wrote in between."""
    try:
        row = await db.fetchrow(
            f"""
            UPDATE users SET
                email        = coalesce($2, email),
                email_key    = coalesce($6, email_key),
                display_name = coalesce($3, display_name),
                preferences  = coalesce($4, preferences)
            WHERE id = $1 AND ($5::bigint IS NULL OR version = $5)
            RETURNING {_COLUMNS}
            """,
            user_id,
            changes.email,
            changes.display_name,
            changes.preferences,
            expected_version,
            email_key(changes.email) if changes.email is not None else None,
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists("User", changes.email or "", _EMAIL_TAKEN) from None
    if row is None:
        await _raise_missing_or_stale(db, user_id)
    return _user(row)


async def set_password_hash(db: Database, user_id: UUID, *, new_hash: str, old_hash: str) -> User:
    """Replaces the hash only if it is still ``old_hash``: of two concurrent changes, one wins, one is ABORTED.
    Returns the user as it is after the change (a new etag)."""
    row = await db.fetchrow(
        f"UPDATE users SET password_hash = $2 WHERE id = $1 AND password_hash = $3 RETURNING {_COLUMNS}",
        user_id,
        new_hash,
        old_hash,
    )
    if row is None:
        exists = await db.fetchval("SELECT true FROM users WHERE id = $1", user_id, idempotent=True)
        if not exists:
            raise NotFound("User", str(user_id))
        raise Conflict("the password was changed concurrently; check the current password and retry")
    return _user(row)


async def delete_user(db: Database, user_id: UUID, *, expected_version: int | None) -> DeletedUser:
    """Deletes the user; the foreign keys of dependent tables cascade (sessions, content, ...). Says which of
    those rows went, so that their cache entries can be invalidated.

    The user's row is locked first: from then on no session or content can be added for the user (the
    foreign-key check of an insert waits for the lock, then fails), so the list read next is complete.
    """
    async with db.transaction() as conn:
        version = await conn.fetchval("SELECT version FROM users WHERE id = $1 FOR UPDATE", user_id)
        if version is None:
            raise NotFound("User", str(user_id))
        if expected_version is not None and version != expected_version:
            raise _stale()
        deleted = DeletedUser(
            session_token_hashes=await sessions_store.token_hashes_of_user(conn, user_id),
            content_ids=await content_store.content_ids_of_author(conn, user_id),
        )
        await conn.execute("DELETE FROM users WHERE id = $1", user_id)
    return deleted


async def _raise_missing_or_stale(db: Database, user_id: UUID) -> None:
    """Called after a conditional write touched no row: tells a missing user from a stale etag."""
    exists = await db.fetchval("SELECT true FROM users WHERE id = $1", user_id, idempotent=True)
    if not exists:
        raise NotFound("User", str(user_id))
    raise _stale()


def _stale() -> Conflict:
    return Conflict("the user was modified since the etag was read; read it again and retry")
