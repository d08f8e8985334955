"""The stores' door to PostgreSQL: pooled queries whose waits and runs are bounded by the caller's deadline."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from server import deadline


class Database:
    """Runs statements on pooled connections, each bounded by the current call's remaining deadline.

    ``asyncpg.Pool.fetchrow`` waits for a free connection without a timeout; here the wait for a connection
    and the statement itself share one budget, so an exhausted pool or a stuck query never hangs a call.
    One ``asyncio.timeout`` costs less than asyncpg's own per-step timeouts (acquire, query and release each
    arm a timer), and when it fires asyncpg cancels the running query on the server. The three methods are
    written out rather than shared through a context-manager helper: on this path a generator-based
    context manager costs a measurable share of a point read.
    """

    def __init__(self, pool: asyncpg.Pool, default_timeout_seconds: float) -> None:
        self._pool = pool
        self._default_timeout = default_timeout_seconds

    def budget(self) -> float:
        return deadline.budget(self._default_timeout)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        budget = asyncio.timeout(self.budget())
        try:
            async with budget, self._pool.acquire() as conn:
                return await conn.fetchrow(query, *args)
        except TimeoutError:
            raise _timeout_error(budget) from None

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        budget = asyncio.timeout(self.budget())
        try:
            async with budget, self._pool.acquire() as conn:
                return await conn.fetch(query, *args)
        except TimeoutError:
            raise _timeout_error(budget) from None

    async def fetchval(self, query: str, *args: Any) -> Any:
        budget = asyncio.timeout(self.budget())
        try:
            async with budget, self._pool.acquire() as conn:
                return await conn.fetchval(query, *args)
        except TimeoutError:
            raise _timeout_error(budget) from None


def _timeout_error(budget: asyncio.Timeout) -> Exception:
    """The caller's budget ran out (DEADLINE_EXCEEDED), or asyncpg timed out connecting (UNAVAILABLE)."""
    return deadline.DeadlineExpired() if budget.expired() else TimeoutError("timed out connecting to PostgreSQL")
