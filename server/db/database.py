"""The stores' door to PostgreSQL: pooled queries whose waits and runs are bounded by the caller's deadline.

A statement whose connection was lost (PostgreSQL stopped, crashed or ended the session) fails UNAVAILABLE,
never INTERNAL; the connection is discarded, and a statement the store marks as an idempotent read runs once
more on a fresh connection while the caller's budget lasts.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from server import deadline
from server.errors import ConnectionLost
from server.metrics import QueryMetrics

# Failures of a statement that end its connection's session: PostgreSQL ended it (class 08, or 57P01 shutdown,
# 57P02 crash, 57P04 database dropped, 57P05 idle timeout), the socket broke, or asyncpg's protocol state
# broke. The last is how a FATAL error shows when it reaches a connection idle in the pool before the close
# of the socket does: asyncpg, not expecting a message there, waits for a ReadyForQuery that never comes, so
# the next statement cannot start ("cannot switch to state 12; another operation (2) is in progress").
_SESSION_ENDED = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InternalClientError,
    OSError,
)
# ... except these, after which the session goes on: a cancelled statement (57014), asyncpg's command
# timeout, and a cached statement outdated by a schema change.
_SESSION_GOES_ON = (
    asyncpg.exceptions.QueryCanceledError,
    TimeoutError,
    asyncpg.exceptions.OutdatedSchemaCacheError,
)


class Database:
    """Runs statements on pooled connections, each bounded by the current call's remaining deadline.

    ``asyncpg.Pool.fetchrow`` waits for a free connection without a timeout; here the wait for a connection
    and the statement itself share one budget, so an exhausted pool or a stuck query never hangs a call.
    One ``asyncio.timeout`` costs less than asyncpg's own per-step timeouts (acquire, query and release each
    arm a timer), and when it fires asyncpg cancels the running query on the server. The three methods are
    written out rather than shared through a context-manager helper: on this path a generator-based
    context manager costs a measurable share of a point read. What happens after a lost connection is
    shared (``_after_loss``): only failures pay for it.

    ``idempotent=True`` says that running the statement twice does no harm (a SELECT): after a lost
    connection it runs once more, inside the same budget. Writes are never run again, because the lost one
    may have committed; they fail UNAVAILABLE and the caller decides (etags and request ids make its retry safe).
    """

    def __init__(self, pool: asyncpg.Pool, default_timeout_seconds: float, metrics: QueryMetrics) -> None:
        self._pool = pool
        self._default_timeout = default_timeout_seconds
        self._metrics = metrics

    def budget(self) -> float:
        return deadline.budget(self._default_timeout)

    async def fetchrow(self, query: str, *args: Any, idempotent: bool = False) -> asyncpg.Record | None:
        # The statement's name is the store function that called: one frame up, never the SQL text.
        statement = sys._getframe(1).f_code.co_name
        started = time.perf_counter()
        metrics = self._metrics
        metrics.in_flight += 1
        try:
            budget = asyncio.timeout(self.budget())
            try:
                async with budget:
                    async with self._pool.acquire() as conn:
                        try:
                            return await conn.fetchrow(query, *args)
                        except Exception as exc:
                            if not _discarded(exc, conn):
                                raise
                            lost = exc
                    return await self._after_loss(lost, budget, idempotent, lambda conn: conn.fetchrow(query, *args))
            except TimeoutError:
                raise _timeout_error(budget) from None
        finally:
            metrics.in_flight -= 1
            metrics.observe(statement, time.perf_counter() - started)

    async def fetch(self, query: str, *args: Any, idempotent: bool = False) -> list[asyncpg.Record]:
        # The statement's name is the store function that called: one frame up, never the SQL text.
        statement = sys._getframe(1).f_code.co_name
        started = time.perf_counter()
        metrics = self._metrics
        metrics.in_flight += 1
        try:
            budget = asyncio.timeout(self.budget())
            try:
                async with budget:
                    async with self._pool.acquire() as conn:
                        try:
                            return await conn.fetch(query, *args)
                        except Exception as exc:
                            if not _discarded(exc, conn):
                                raise
                            lost = exc
                    return await self._after_loss(lost, budget, idempotent, lambda conn: conn.fetch(query, *args))
            except TimeoutError:
                raise _timeout_error(budget) from None
        finally:
            metrics.in_flight -= 1
            metrics.observe(statement, time.perf_counter() - started)

    async def fetchval(self, query: str, *args: Any, idempotent: bool = False) -> Any:
        # The statement's name is the store function that called: one frame up, never the SQL text.
        statement = sys._getframe(1).f_code.co_name
        started = time.perf_counter()
        metrics = self._metrics
        metrics.in_flight += 1
        try:
            budget = asyncio.timeout(self.budget())
            try:
                async with budget:
                    async with self._pool.acquire() as conn:
                        try:
                            return await conn.fetchval(query, *args)
                        except Exception as exc:
                            if not _discarded(exc, conn):
                                raise
                            lost = exc
                    return await self._after_loss(lost, budget, idempotent, lambda conn: conn.fetchval(query, *args))
            except TimeoutError:
                raise _timeout_error(budget) from None
        finally:
            metrics.in_flight -= 1
            metrics.observe(statement, time.perf_counter() - started)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside a transaction, for the few writes that need more than one statement (a lock
        taken before a read, an advisory lock): commits when the block ends, rolls back when it raises.

        The wait for the connection, every statement and the commit share the call's budget. A lost
        connection fails UNAVAILABLE and is never retried here: the transaction may have committed.
        Transaction-scoped state only (``SET LOCAL``, ``pg_advisory_xact_lock``): the pool's no-op reset
        would hand session-level state to the next caller.
        """
        # Named by the caller of ``async with``: two frames up, past contextlib's __aenter__.
        statement = sys._getframe(2).f_code.co_name
        started = time.perf_counter()
        metrics = self._metrics
        metrics.in_flight += 1
        budget = asyncio.timeout(self.budget())
        try:
            async with budget:
                async with self._pool.acquire() as conn:
                    try:
                        async with conn.transaction():
                            yield conn
                        return  # committed
                    except Exception as exc:
                        if not _discarded(exc, conn):
                            raise
                        lost = exc
                await self._pool.expire_connections()
                raise ConnectionLost() from lost
        except TimeoutError:
            raise _timeout_error(budget) from None
        finally:
            metrics.in_flight -= 1
            metrics.observe(statement, time.perf_counter() - started)

    async def _after_loss(
        self,
        lost: Exception,
        budget: asyncio.Timeout,
        idempotent: bool,
        run: Callable[[PoolConnectionProxy], Awaitable[Any]],
    ) -> Any:
        """Runs an idempotent read once more on a fresh connection while the budget lasts; else ConnectionLost.

        A lost connection rarely dies alone (a restart or crash ends every session), and asyncpg hands out an
        idle connection whose socket is still open even when its session is over. So every connection opened
        before the loss is replaced when it is next taken, and the read runs again on a new one.
        """
        await self._pool.expire_connections()
        if idempotent and budget.when() > asyncio.get_running_loop().time():
            async with self._pool.acquire() as conn:
                try:
                    return await run(conn)
                except Exception as exc:
                    if not _discarded(exc, conn):
                        raise
                    lost = exc
            await self._pool.expire_connections()
        raise ConnectionLost() from lost


def _discarded(exc: Exception, conn: PoolConnectionProxy) -> bool:
    """Whether ``exc``, raised by a statement on the pooled ``conn``, means its session is over; if so, ``conn``
    is closed at once so that the pool opens a new connection in its place instead of handing it out again.

    Most such failures have already closed the connection inside asyncpg; terminating makes sure of it. When
    asyncpg saw the socket close it has also taken the connection back, and ``conn`` answers InterfaceError.
    """
    if isinstance(exc, _SESSION_GOES_ON):
        return False
    try:
        if isinstance(exc, asyncpg.exceptions.InterfaceError):
            # asyncpg's own refusals (a misuse, a bad argument) mean a lost connection only once it is closed.
            if not conn.is_closed():
                return False
        elif not isinstance(exc, _SESSION_ENDED):
            return False
        conn.terminate()
    except asyncpg.exceptions.InterfaceError:
        pass  # asyncpg saw the socket close: the connection is closed and already back in the pool
    return True


def _timeout_error(budget: asyncio.Timeout) -> Exception:
    """The caller's budget ran out (DEADLINE_EXCEEDED), or asyncpg timed out connecting (UNAVAILABLE)."""
    return deadline.DeadlineExpired() if budget.expired() else TimeoutError("timed out connecting to PostgreSQL")
