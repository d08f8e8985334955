"""The stores' door to PostgreSQL: pooled queries whose waits and runs are bounded by the caller's deadline.

A call that finds every pooled connection busy waits for one at most DB_POOL_ACQUIRE_TIMEOUT_SECONDS (or until
its deadline, when that is sooner), then fails RESOURCE_EXHAUSTED (DB_POOL_EXHAUSTED): an overloaded replica
says so while the caller still has time to go elsewhere, instead of holding it until its deadline. When some
of the connections it waited for were still being opened, the wait says nothing of load but that PostgreSQL
does not answer (down, or its address dropping packets, each connection attempt waiting
DB_CONNECT_TIMEOUT_SECONDS): the call fails UNAVAILABLE, as one that tried to connect itself would.

A statement whose connection was lost (PostgreSQL stopped, crashed or ended the session) fails UNAVAILABLE,
never INTERNAL; the connection is discarded, and a statement the store marks as an idempotent read runs once
more on a fresh connection, when one is free at once, while the caller's budget lasts.
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
from server.errors import ConnectionLost, PoolExhausted, Unavailable
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
    arm a timer), and when it fires asyncpg cancels the running query on the server. When no connection is
    free, the same timer is moved up to the end of the longest wait for one (``_bound_wait``), and back to
    the budget's end once a connection is had; a free connection, the usual case, costs one look at the
    pool's queue. The three methods are written out rather than shared through a context-manager helper: on
    this path a generator-based context manager costs a measurable share of a point read. What happens after
    a lost connection or a wait too long is shared (``_after_loss``, ``_timeout_error``): only failures pay.

    ``idempotent=True`` says that running the statement twice does no harm (a SELECT): after a lost
    connection it runs once more, inside the same budget. Writes are never run again, because the lost one
    may have committed; they fail UNAVAILABLE and the caller decides (etags and request ids make its retry safe).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        default_timeout_seconds: float,
        metrics: QueryMetrics,
        *,
        acquire_timeout_seconds: float,
    ) -> None:
        """``acquire_timeout_seconds`` bounds the wait for a connection while every one is busy."""
        self._pool = pool
        self._default_timeout = default_timeout_seconds
        self._acquire_timeout = acquire_timeout_seconds
        self._metrics = metrics
        # The pool's queue of free slots: idle connections, and room to open one. Empty means a call would
        # wait. asyncpg has no public test for that which costs less than a walk over every slot
        # (get_idle_size), so the queue itself is read; it is made when the pool is, and never replaced.
        self._free = pool._queue

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
            full_budget = None
            try:
                async with budget:
                    if self._free.empty():
                        full_budget = self._bound_wait(budget)
                    async with self._pool.acquire() as conn:
                        if full_budget is not None:
                            budget.reschedule(full_budget)
                            full_budget = None
                        try:
                            return await conn.fetchrow(query, *args)
                        except Exception as exc:
                            if not _discarded(exc, conn):
                                raise
                            lost = exc
                    return await self._after_loss(lost, budget, idempotent, lambda conn: conn.fetchrow(query, *args))
            except TimeoutError:
                raise self._timeout_error(budget, full_budget) from None
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
            full_budget = None
            try:
                async with budget:
                    if self._free.empty():
                        full_budget = self._bound_wait(budget)
                    async with self._pool.acquire() as conn:
                        if full_budget is not None:
                            budget.reschedule(full_budget)
                            full_budget = None
                        try:
                            return await conn.fetch(query, *args)
                        except Exception as exc:
                            if not _discarded(exc, conn):
                                raise
                            lost = exc
                    return await self._after_loss(lost, budget, idempotent, lambda conn: conn.fetch(query, *args))
            except TimeoutError:
                raise self._timeout_error(budget, full_budget) from None
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
            full_budget = None
            try:
                async with budget:
                    if self._free.empty():
                        full_budget = self._bound_wait(budget)
                    async with self._pool.acquire() as conn:
                        if full_budget is not None:
                            budget.reschedule(full_budget)
                            full_budget = None
                        try:
                            return await conn.fetchval(query, *args)
                        except Exception as exc:
                            if not _discarded(exc, conn):
                                raise
                            lost = exc
                    return await self._after_loss(lost, budget, idempotent, lambda conn: conn.fetchval(query, *args))
            except TimeoutError:
                raise self._timeout_error(budget, full_budget) from None
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
        full_budget = None
        try:
            async with budget:
                if self._free.empty():
                    full_budget = self._bound_wait(budget)
                async with self._pool.acquire() as conn:
                    if full_budget is not None:
                        budget.reschedule(full_budget)
                        full_budget = None
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
            raise self._timeout_error(budget, full_budget) from None
        finally:
            metrics.in_flight -= 1
            metrics.observe(statement, time.perf_counter() - started)

    def _bound_wait(self, budget: asyncio.Timeout) -> float | None:
        """Called when no connection is free: moves ``budget``'s timer up to the end of the longest wait for one,
        when that comes before the budget's own end, and returns that end, to be put back once a connection is
        had. None when the budget ends first: its end is then the caller's deadline, and DEADLINE_EXCEEDED
        the truth."""
        budget_ends = budget.when()
        wait_ends = asyncio.get_running_loop().time() + self._acquire_timeout
        if budget_ends is None or budget_ends <= wait_ends:
            return None
        budget.reschedule(wait_ends)
        return budget_ends

    def _timeout_error(self, budget: asyncio.Timeout, full_budget: float | None) -> Exception:
        """Why ``budget`` ran out: no connection came free in time (``full_budget`` is set only while the wait for
        one is bounded, RESOURCE_EXHAUSTED, or UNAVAILABLE when a connection it waited for was still connecting),
        the caller's budget ran out (DEADLINE_EXCEEDED), or asyncpg timed out connecting (UNAVAILABLE)."""
        if not budget.expired():
            return TimeoutError("timed out connecting to PostgreSQL")
        if full_budget is not None:
            if self._connecting():
                return Unavailable(
                    "PostgreSQL is not answering: this replica's database connections are still connecting; "
                    "retry with backoff"
                )
            self._metrics.pool_exhausted += 1
            return PoolExhausted(self._acquire_timeout)
        return deadline.DeadlineExpired()

    def _connecting(self) -> bool:
        """Whether a slot of the pool is lent out with no connection yet: taken from the queue of free slots by
        an acquire that is still opening (or setting up) its connection. Only a failed wait asks, so the walk
        over every slot costs nothing on the way of a call that gets a connection. asyncpg has no public view
        of this: its slots (PoolConnectionHolder) are read, ``_con`` None until the connection is made."""
        free = self._free._queue  # the slots in the queue: idle, or room to open a connection
        return any(holder._con is None and holder not in free for holder in self._pool._holders)

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
        before the loss is replaced when it is next taken, and the read runs again on a new one, provided one
        is free at once: behind calls waiting for a busy pool the retry would only wait, so it answers
        UNAVAILABLE at once instead.
        """
        await self._pool.expire_connections()
        if idempotent and not self._free.empty() and budget.when() > asyncio.get_running_loop().time():
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
