"""SQL for sessions. Every function takes the Database (or a Connection inside a caller's transaction), returns
domain objects and raises domain errors.

A session is found by the SHA-256 of its token (``token_hash``); the token itself never reaches the database.
A session is live while ``revoked_at IS NULL AND expires_at > now()``: every read and write of a live session
says so in its WHERE clause, so an ended session is never returned, refreshed or revoked twice.

The functions that revoke or replace tokens return the token hashes they made stale, so that the caller can
invalidate the cached sessions under them once the write has committed.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from uuid import UUID

import asyncpg

from server.db.database import Database
from server.domain.common import CreateRequest, PageCursor
from server.domain.sessions import MAX_LIFETIME, NewSession, Reissued, Session
from server.errors import Conflict, NotFound, RequestIdReused

_COLUMNS = "id, user_id, created_at, expires_at, last_seen_at, user_agent, ip_address"
_LIVE = "revoked_at IS NULL AND expires_at > now()"
_BY_TOKEN = "with the given token"  # the name of a session found by its token: the token is never echoed
_ENDED = (
    "the session created with this request_id has ended (revoked or expired); log in again with a new request_id"
)

PURGE_LOCK_KEY = int.from_bytes(hashlib.sha256(b"dataservice:session_purge").digest()[:8], "big", signed=True)
"""The transaction-level advisory lock a purge batch takes first (``pg_try_advisory_xact_lock``), so that one
replica at a time purges: -862473205640005156, the first 8 bytes of SHA-256("dataservice:session_purge") as a
signed big-endian bigint."""


def _session(row: asyncpg.Record) -> Session:
    return Session(
        id=row["id"],
        user_id=row["user_id"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_seen_at=row["last_seen_at"],
        user_agent=row["user_agent"],
        ip_address=row["ip_address"],
    )


async def create_session(
    db: Database, new: NewSession, token_hash: bytes, request: CreateRequest | None
) -> Session | None:
    """Inserts a live session under ``token_hash``; None when ``request``'s id already made one (a retry: see
    ``reissue_token``). NotFound when the user does not exist."""
    try:
        row = await db.fetchrow(
            f"""
            INSERT INTO sessions (user_id, token_hash, ttl, user_agent, ip_address, expires_at,
                                  create_request_id, create_request_fingerprint)
            VALUES ($1, $2, $3, $4, $5, least(now() + $3, now() + $6), $7, $8)
            ON CONFLICT (create_request_id) DO NOTHING
            RETURNING {_COLUMNS}
            """,
            new.user_id,
            token_hash,
            new.ttl,
            new.user_agent,
            new.ip_address,
            MAX_LIFETIME,
            request.id if request else None,
            request.fingerprint if request else None,
        )
    except asyncpg.ForeignKeyViolationError:
        raise NotFound("User", str(new.user_id)) from None
    return _session(row) if row is not None else None


async def token_hash_of_request(db: Database, request_id: UUID) -> bytes | None:
    """The current token hash of the session that ``request_id`` created, if it is still stored."""
    return await db.fetchval(
        "SELECT token_hash FROM sessions WHERE create_request_id = $1", request_id, idempotent=True
    )


async def reissue_token(db: Database, request: CreateRequest, token_hash: bytes) -> Reissued:
    """Moves the live session that ``request`` created to ``token_hash`` (a retry of CreateSession gets a new
    token, and the one issued before stops working). RequestIdReused when the id came with another request;
    Conflict (reason SESSION_ENDED) when that session was revoked or has expired, which a retry must never undo.

    The row is locked first, so that concurrent retries replace the token one after the other and each one
    reports the hash it replaced: the last to commit holds the only token that works.
    """
    async with db.transaction() as conn:
        row = await conn.fetchrow(
            f"""
            SELECT {_COLUMNS}, token_hash, create_request_fingerprint, {_LIVE} AS live
            FROM sessions WHERE create_request_id = $1 FOR UPDATE
            """,
            request.id,
        )
        if row is None:  # deleted (its user deleted, or purged) since the insert found it
            raise Conflict("the session of this request_id was deleted concurrently; retry the request")
        if row["create_request_fingerprint"] != request.fingerprint:
            raise RequestIdReused()
        if not row["live"]:
            raise Conflict(_ENDED, reason="SESSION_ENDED")
        await conn.execute("UPDATE sessions SET token_hash = $2 WHERE id = $1", row["id"], token_hash)
    return Reissued(_session(row), replaced_token_hash=row["token_hash"])


async def get_live_session(db: Database, token_hash: bytes) -> Session | None:
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM sessions WHERE token_hash = $1 AND {_LIVE}", token_hash, idempotent=True
    )
    return _session(row) if row is not None else None


async def record_last_seen(db: Database, token_hash: bytes) -> Session | None:
    """Sets last_seen_at to now if it is over a minute old and the session is live; None when another reader
    did it first or the session ended meanwhile. The condition makes concurrent readers write once."""
    row = await db.fetchrow(
        f"""
        UPDATE sessions SET last_seen_at = now()
        WHERE token_hash = $1 AND last_seen_at < now() - interval '1 minute' AND {_LIVE}
        RETURNING {_COLUMNS}
        """,
        token_hash,
    )
    return _session(row) if row is not None else None


async def refresh_session(db: Database, token_hash: bytes) -> Session | None:
    """Slides a live session's expiry to now + its ttl, never past its absolute lifetime, and records it as
    seen; None when no live session has this token."""
    row = await db.fetchrow(
        f"""
        UPDATE sessions SET expires_at = least(now() + ttl, created_at + $2), last_seen_at = now()
        WHERE token_hash = $1 AND {_LIVE}
        RETURNING {_COLUMNS}
        """,
        token_hash,
        MAX_LIFETIME,
    )
    return _session(row) if row is not None else None


async def revoke_session_by_token(db: Database, token_hash: bytes, *, user_id: UUID | None) -> None:
    """Revokes the live session with this token (of ``user_id``, when given); NotFound when there is none."""
    revoked = await db.fetchval(
        f"""
        UPDATE sessions SET revoked_at = now()
        WHERE token_hash = $1 AND {_LIVE} AND ($2::uuid IS NULL OR user_id = $2)
        RETURNING true
        """,
        token_hash,
        user_id,
    )
    if not revoked:
        raise NotFound("Session", _BY_TOKEN)


async def token_hash_of_session(db: Database, session_id: UUID) -> bytes | None:
    """The current token hash of a session in any state, read before revoking it (see ``Sessions``)."""
    return await db.fetchval("SELECT token_hash FROM sessions WHERE id = $1", session_id, idempotent=True)


async def revoke_session_by_id(db: Database, session_id: UUID, *, user_id: UUID | None) -> bytes:
    """Revokes the live session ``session_id`` (of ``user_id``, when given) and returns its token hash;
    NotFound when there is no such live session, also when it is someone else's."""
    token_hash = await db.fetchval(
        f"""
        UPDATE sessions SET revoked_at = now()
        WHERE id = $1 AND {_LIVE} AND ($2::uuid IS NULL OR user_id = $2)
        RETURNING token_hash
        """,
        session_id,
        user_id,
    )
    if token_hash is None:
        raise NotFound("Session", str(session_id))
    return token_hash


async def live_token_hashes_of_user(db: Database, user_id: UUID, *, except_session_id: UUID | None) -> list[bytes]:
    """The token hashes that ``revoke_user_sessions`` with the same arguments would revoke now."""
    rows = await db.fetch(
        f"SELECT token_hash FROM sessions WHERE user_id = $1 AND {_LIVE} AND ($2::uuid IS NULL OR id <> $2)",
        user_id,
        except_session_id,
        idempotent=True,
    )
    return [row["token_hash"] for row in rows]


async def revoke_user_sessions(db: Database, user_id: UUID, *, except_session_id: UUID | None) -> list[bytes]:
    """Revokes every live session of the user but ``except_session_id``; returns their token hashes."""
    rows = await db.fetch(
        f"""
        UPDATE sessions SET revoked_at = now()
        WHERE user_id = $1 AND {_LIVE} AND ($2::uuid IS NULL OR id <> $2)
        RETURNING token_hash
        """,
        user_id,
        except_session_id,
    )
    return [row["token_hash"] for row in rows]


async def token_hashes_of_user(conn: asyncpg.Connection, user_id: UUID) -> list[bytes]:
    """The token hashes of all of the user's sessions, in any state: for the user store to call inside the
    transaction that deletes the user (the foreign key deletes the sessions with it), so that their cache
    entries can be invalidated once it commits."""
    rows = await conn.fetch("SELECT token_hash FROM sessions WHERE user_id = $1", user_id)
    return [row["token_hash"] for row in rows]


async def list_live_sessions(db: Database, user_id: UUID, *, after: PageCursor | None, limit: int) -> list[Session]:
    """The user's live sessions, newest first, strictly after ``after``; keyset paging stays stable under
    inserts and revocations (the index on (user_id, created_at DESC, id DESC) serves it)."""
    if after is None:
        rows = await db.fetch(
            f"""
            SELECT {_COLUMNS} FROM sessions WHERE user_id = $1 AND {_LIVE}
            ORDER BY created_at DESC, id DESC LIMIT $2
            """,
            user_id,
            limit,
            idempotent=True,
        )
    else:
        rows = await db.fetch(
            f"""
            SELECT {_COLUMNS} FROM sessions WHERE user_id = $1 AND {_LIVE} AND (created_at, id) < ($2, $3)
            ORDER BY created_at DESC, id DESC LIMIT $4
            """,
            user_id,
            after.created_at,
            after.id,
            limit,
            idempotent=True,
        )
    return [_session(row) for row in rows]


async def purge_ended_sessions(db: Database, *, ended_before: timedelta, limit: int) -> int | None:
    """Deletes up to ``limit`` sessions revoked or expired more than ``ended_before`` ago, in one short
    transaction; returns how many, or None when another replica holds the purge lock (it purges this round).

    Rows that a write has locked meanwhile are skipped, not waited for: the next batch or round takes them.
    """
    async with db.transaction() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", PURGE_LOCK_KEY):
            return None
        return await conn.fetchval(
            """
            WITH purged AS (
                DELETE FROM sessions WHERE id IN (
                    SELECT id FROM sessions
                    WHERE revoked_at < now() - $1::interval OR expires_at < now() - $1::interval
                    LIMIT $2
                    FOR UPDATE SKIP LOCKED)
                RETURNING 1)
            SELECT count(*) FROM purged
            """,
            ended_before,
            limit,
        )
