"""The stores' door to PostgreSQL: pooled queries whose waits and runs are bounded by the caller's deadline."""

from __future__ import annotations

from typing import Any

import asyncpg

from server import deadline


class Database:
    """Runs statements on pooled connections, each bounded by the current call's remaining deadline.

    ``asyncpg.Pool.fetchrow`` waits for a free connection without a timeout; here the wait for a connection
    and the statement itself share one budget, so an exhausted pool or a stuck query never hangs a call.
    """

    def __init__(self, pool: asyncpg.Pool, default_timeout_seconds: float) -> None:
        self._pool = pool
        self._default_timeout = default_timeout_seconds

    def budget(self) -> float:
        return deadline.budget(self._default_timeout)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self._pool.acquire(timeout=self.budget()) as conn:
            return await conn.fetchrow(query, *args, timeout=self.budget())

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self._pool.acquire(timeout=self.budget()) as conn:
            return await conn.fetch(query, *args, timeout=self.budget())

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self._pool.acquire(timeout=self.budget()) as conn:
            return await conn.fetchval(query, *args, timeout=self.budget())
