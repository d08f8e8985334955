"""Whether the database has pgvector, which EmbeddingService needs and nothing else does.

The health monitor checks at every round and, where it may change the schema, creates the extension as soon
as PostgreSQL offers it; ``VectorSupport`` holds the last answer for the embedding service to consult.
"""

from __future__ import annotations

import asyncpg

from server.errors import FailedPrecondition

_NOT_OFFERED = (
    "this PostgreSQL server does not offer the pgvector extension (the vector extension): install pgvector "
    "on the database server; the service creates the extension once it is offered"
)
_NOT_PERMITTED = (
    "pgvector is offered but not installed in this database, and this role may not create it: run "
    "CREATE EXTENSION vector as a superuser"
)
_NOT_INSTALLED = "pgvector is offered but not installed in this database: run the migrations, or CREATE EXTENSION vector"


class VectorSupport:
    """The last known pgvector state: unknown until the first check, then its version or why it is missing."""

    def __init__(self) -> None:
        self.version: str | None = None
        self.missing_reason: str | None = None

    @property
    def known_missing(self) -> bool:
        return self.missing_reason is not None

    def update(self, version: str | None, missing_reason: str | None) -> None:
        self.version = version
        self.missing_reason = missing_reason

    def require(self) -> None:
        """Raises FAILED_PRECONDITION while pgvector is known to be missing; an unknown state lets the call try
        (a database that cannot be reached answers UNAVAILABLE on its own)."""
        if self.missing_reason is not None:
            raise FailedPrecondition(self.missing_reason, reason="PGVECTOR_MISSING")


async def check(conn: asyncpg.Connection, *, install: bool) -> tuple[str | None, str | None]:
    """(pgvector's installed version, None), or (None, why it is missing). With ``install``, creates the
    extension when the server offers it and the role may."""
    row = await conn.fetchrow(
        "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS installed,"
        " EXISTS (SELECT FROM pg_available_extensions WHERE name = 'vector') AS offered"
    )
    if row["installed"] is not None:
        return row["installed"], None
    if not row["offered"]:
        return None, _NOT_OFFERED
    if not install:
        return None, _NOT_INSTALLED
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except asyncpg.InsufficientPrivilegeError:
        return None, _NOT_PERMITTED
    return await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'vector'"), None
