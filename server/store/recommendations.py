"""SQL for interactions, recommendation feedback, precomputed lists and popularity."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from uuid import UUID

import asyncpg

from server.db.database import Database
from server.domain.common import CreateRequest
from server.domain.recommendations import (
    Feedback,
    FeedInputs,
    Interaction,
    InteractionType,
    PrecomputedList,
    Ranked,
)
from server.errors import NotFound, RequestIdReused

# Transaction-level advisory lock of the popularity refresh: one replica refreshes, the others skip the round.
POPULARITY_LOCK_KEY = 0x706F7075  # "popu"
_TYPES = {kind.value: kind for kind in InteractionType}


def _interaction(row: asyncpg.Record) -> Interaction:
    return Interaction(
        id=row["id"],
        user_id=row["user_id"],
        content_id=row["content_id"],
        type=_TYPES[row["type"]],
        created_at=row["created_at"],
    )


async def record_interaction(
    db: Database, user_id: UUID, content_id: UUID, kind: InteractionType, request: CreateRequest | None
) -> Interaction:
    """Inserts an interaction; a request id already used by the same request returns that request's row."""
    try:
        row = await db.fetchrow(
            """
            INSERT INTO interactions (user_id, content_id, type, request_id, request_fingerprint)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (request_id) DO NOTHING
            RETURNING id, user_id, content_id, type, created_at
            """,
            user_id,
            content_id,
            kind.value,
            request.id if request else None,
            request.fingerprint if request else None,
        )
    except asyncpg.ForeignKeyViolationError:
        raise await _missing_user_or_content(db, user_id, content_id) from None
    if row is not None:
        return _interaction(row)
    assert request is not None, "only request_id can conflict without raising"
    row = await db.fetchrow(
        "SELECT id, user_id, content_id, type, created_at, request_fingerprint FROM interactions WHERE request_id = $1",
        request.id,
        idempotent=True,
    )
    if row is None:  # recorded, then deleted with its user or content: the retry records it again
        return await record_interaction(db, user_id, content_id, kind, request)
    if bytes(row["request_fingerprint"]) != request.fingerprint:
        raise RequestIdReused()
    return _interaction(row)


async def _missing_user_or_content(db: Database, user_id: UUID, content_id: UUID) -> NotFound:
    if not await db.fetchval("SELECT EXISTS (SELECT FROM users WHERE id = $1)", user_id, idempotent=True):
        return NotFound("User", str(user_id))
    return NotFound("Content", str(content_id))


async def record_feedback(db: Database, user_id: UUID, content_id: UUID, feedback: Feedback) -> None:
    """Stores the user's verdict on the content, replacing an earlier one."""
    try:
        await db.fetchval(
            """
            INSERT INTO recommendation_feedback (user_id, content_id, feedback) VALUES ($1, $2, $3)
            ON CONFLICT (user_id, content_id) DO UPDATE SET feedback = excluded.feedback, updated_at = now()
            """,
            user_id,
            content_id,
            feedback.value,
        )
    except asyncpg.ForeignKeyViolationError:
        raise await _missing_user_or_content(db, user_id, content_id) from None


async def put_recommendations(
    db: Database, user_id: UUID, items: list[Ranked], expire_at: datetime
) -> tuple[int, list[UUID]]:
    """Replaces the user's list with the entries whose content exists (in order); an empty list clears it.
    Returns how many were stored and the ids that name no content."""
    async with db.transaction() as conn:
        if not await conn.fetchval("SELECT EXISTS (SELECT FROM users WHERE id = $1 FOR KEY SHARE)", user_id):
            raise NotFound("User", str(user_id))
        requested = [item.content_id for item in items]
        known = {
            row["id"]
            for row in await conn.fetch("SELECT id FROM contents WHERE id = ANY($1::uuid[]) FOR KEY SHARE", requested)
        }
        kept = [item for item in items if item.content_id in known]
        if not kept:
            await conn.execute("DELETE FROM precomputed_recommendations WHERE user_id = $1", user_id)
        else:
            await conn.execute(
                """
                INSERT INTO precomputed_recommendations (user_id, content_ids, scores, expire_at)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (user_id) DO UPDATE SET list_id = gen_random_uuid(), content_ids = excluded.content_ids,
                    scores = excluded.scores, expire_at = excluded.expire_at
                """,
                user_id,
                [item.content_id for item in kept],
                [item.score for item in kept],
                expire_at,
            )
        return len(kept), [content_id for content_id in requested if content_id not in known]


async def feed_inputs(db: Database, user_id: UUID, *, recent_limit: int) -> FeedInputs | None:
    """What the user's feed is computed from, in one round trip; None when there is no such user."""
    row = await db.fetchrow(
        """
        SELECT
            (SELECT true FROM users WHERE id = $1) AS user_exists,
            p.list_id, p.content_ids, p.scores,
            (SELECT coalesce(array_agg(content_id ORDER BY created_at DESC), '{}') FROM (
                SELECT content_id, created_at FROM interactions
                WHERE user_id = $1 AND type <> 'dismiss' ORDER BY created_at DESC LIMIT $2) r) AS recent_ids,
            (SELECT coalesce(array_agg(type ORDER BY created_at DESC), '{}') FROM (
                SELECT type, created_at FROM interactions
                WHERE user_id = $1 AND type <> 'dismiss' ORDER BY created_at DESC LIMIT $2) r) AS recent_types,
            (SELECT count(*) FROM interactions WHERE user_id = $1 AND type <> 'dismiss') AS interaction_count,
            ARRAY(SELECT content_id FROM interactions WHERE user_id = $1
                  UNION SELECT content_id FROM recommendation_feedback WHERE user_id = $1 AND feedback = 'rejected')
                AS excluded
        FROM (SELECT 1) one
        LEFT JOIN precomputed_recommendations p ON p.user_id = $1 AND p.expire_at > now()
        """,
        user_id,
        recent_limit,
        idempotent=True,
    )
    if row is None or not row["user_exists"]:
        return None
    precomputed = None
    if row["list_id"] is not None:
        precomputed = PrecomputedList(
            row["list_id"], [Ranked(c, s) for c, s in zip(row["content_ids"], row["scores"], strict=True)]
        )
    return FeedInputs(
        precomputed=precomputed,
        recent=[(c, _TYPES[t]) for c, t in zip(row["recent_ids"], row["recent_types"], strict=True)],
        interaction_count=row["interaction_count"],
        excluded=row["excluded"],
    )


async def popular(
    db: Database, weights: Mapping[InteractionType, float], *, excluded: list[UUID], limit: int
) -> list[Ranked]:
    """Published content by weighted interactions of the last 7 days (as last refreshed), best first, ties by
    id; content without recent interactions follows, newest published first, so a new service has a feed."""
    rows = await db.fetch(
        """
        SELECT c.id,
               coalesce(p.views * $1 + p.likes * $2 + p.shares * $3 + p.bookmarks * $4, 0)::float8 AS score
        FROM contents c LEFT JOIN content_popularity p ON p.content_id = c.id
        WHERE c.status = 'published' AND c.id <> ALL($5::uuid[])
        ORDER BY score DESC, c.published_at DESC, c.id
        LIMIT $6
        """,
        weights[InteractionType.VIEW],
        weights[InteractionType.LIKE],
        weights[InteractionType.SHARE],
        weights[InteractionType.BOOKMARK],
        excluded,
        limit,
        idempotent=True,
    )
    return [Ranked(row["id"], row["score"]) for row in rows]


async def published(db: Database, content_ids: list[UUID]) -> set[UUID]:
    """Those of ``content_ids`` that exist and are published now."""
    rows = await db.fetch(
        "SELECT id FROM contents WHERE id = ANY($1::uuid[]) AND status = 'published'", content_ids, idempotent=True
    )
    return {row["id"] for row in rows}


async def refresh_popularity(db: Database) -> bool:
    """Refreshes the popularity summary without blocking its readers; False when another replica is at it."""
    async with db.transaction() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", POPULARITY_LOCK_KEY):
            return False
        await conn.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY content_popularity")
        return True
