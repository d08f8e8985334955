"""SQL of the cache outbox (migrations/0005): the invalidations that writes recorded in their transactions."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

_TAKE_RECORDED = """
DELETE FROM cache_outbox
WHERE id IN (
    SELECT id FROM cache_outbox
    WHERE recorded_at < clock_timestamp() - $1::interval
    ORDER BY id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
RETURNING entity, ident
"""


async def take_recorded(conn: asyncpg.Connection, *, older_than: timedelta, limit: int) -> list[tuple[str, str]]:
    """Deletes and returns at most ``limit`` recorded invalidations older than ``older_than``, oldest first,
    skipping rows another replica's sweep holds. Inside the caller's transaction: its rollback puts them back."""
    rows = await conn.fetch(_TAKE_RECORDED, older_than, limit)
    return [(row["entity"], row["ident"]) for row in rows]
