"""Read-through over a Cache: one database read per key at a time in this process, negative entries, and
invalidation that no read in flight can undo.

A read first asks the process (a near cache or the in-process cache answers without I/O), then joins the read
of the same key already in flight here, if any, else leads one: the shared cache, and on a miss the database,
whose answer is filled under the lease taken before it (server/cache/base.py). So 100 concurrent cold reads of
one key make one database read in this process; across processes the lease holder fills while the others read
through. A row that does not exist is cached too (``MISSING``, for ``negative_ttl_seconds``): the write that
creates it invalidates its key.

``invalidate`` detaches the key's read in flight before it invalidates: a read that begins after a write has
returned never joins a read that began before it, so a caller always reads its own writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from server.cache.base import MISSING, Cache, Fill, jittered
from server.cache.metrics import CacheMetrics
from server.deadline import DeadlineExpired


@dataclass(frozen=True)
class Loaded:
    """What a database read found: the serialized message, or None when there is no such row; and how long it
    may be cached at most (None: the entity's TTL; 0: not at all, e.g. a session about to be written)."""

    value: bytes | None
    max_ttl_seconds: float | None = None


class _Abandoned(Exception):
    """The read that others joined stopped for a reason of its own caller's (cancelled, out of time)."""


class ReadThrough:
    """Cached reads of one kind of entry (one TTL), shared by every caller in the process."""

    def __init__(
        self, cache: Cache, metrics: CacheMetrics, *, ttl_seconds: float, negative_ttl_seconds: float
    ) -> None:
        self._cache = cache
        self._metrics = metrics
        self._ttl = ttl_seconds
        self._negative_ttl = negative_ttl_seconds
        self._flights: dict[str, asyncio.Future[bytes | None]] = {}
        self._invalidations = metrics.invalidations.labels("write")

    async def read(self, key: str, load: Callable[[], Awaitable[Loaded]]) -> bytes | None:
        """The entry of ``key`` (None for a row that does not exist), read with ``load`` on a miss."""
        value = self._cache.cached(key)
        if value is not None:
            self._metrics.hit(key, in_process=True)
            return None if value == MISSING else value
        while (flight := self._flights.get(key)) is not None:
            self._metrics.coalesced(key)
            try:
                return await asyncio.shield(flight)
            except _Abandoned:
                continue  # its caller gave up, not this one: read again, leading if nobody else does
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            value = await self._read_through(key, load)
        except (asyncio.CancelledError, DeadlineExpired, TimeoutError) as exc:
            if not flight.done():
                flight.set_exception(_Abandoned())
                flight.exception()  # retrieved: nobody may have joined
            raise exc
        except BaseException as exc:
            if not flight.done():
                flight.set_exception(exc)
                flight.exception()
            raise
        else:
            if not flight.done():
                flight.set_result(value)
            return value
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]

    async def _read_through(self, key: str, load: Callable[[], Awaitable[Loaded]]) -> bytes | None:
        cached = await self._cache.get_or_lease(key)
        if cached.value is not None:
            self._metrics.hit(key, in_process=False)
            return None if cached.value == MISSING else cached.value
        self._metrics.miss(key)
        loaded = await load()
        if cached.lease is not None:
            fill = self._fill_of(key, cached.lease, loaded)
            if fill is not None:
                stored = await self._cache.fill(fill.key, fill.lease, fill.value, fill.ttl_seconds)
                self._metrics.filled(key, stored)
        return loaded.value

    def _fill_of(self, key: str, lease: str, loaded: Loaded) -> Fill | None:
        ttl = jittered(self._ttl) if loaded.value is not None else self._negative_ttl
        if loaded.max_ttl_seconds is not None:
            ttl = min(ttl, loaded.max_ttl_seconds)
        if ttl <= 0:
            return None
        return Fill(key, lease, loaded.value if loaded.value is not None else MISSING, ttl)

    async def read_many(
        self, keys: Sequence[str], load: Callable[[list[int]], Awaitable[list[Loaded]]]
    ) -> list[bytes | None]:
        """The entries of ``keys``, in order: one shared-cache round trip for those the process does not hold,
        one ``load`` (given the positions of the misses) for the rest, and one round trip for the fills. Reads in
        flight are not joined: a batch is already one read."""
        values: list[bytes | None] = [self._cache.cached(key) for key in keys]
        asked = [index for index, value in enumerate(values) if value is None]
        for index, value in enumerate(values):
            if value is not None:
                self._metrics.hit(keys[index], in_process=True)
        if asked:
            lookups = await self._cache.get_many_or_lease([keys[index] for index in asked])
            missed: list[int] = []
            leases: list[str | None] = []
            for index, lookup in zip(asked, lookups, strict=True):
                if lookup.value is not None:
                    self._metrics.hit(keys[index], in_process=False)
                    values[index] = lookup.value
                else:
                    self._metrics.miss(keys[index])
                    missed.append(index)
                    leases.append(lookup.lease)
            if missed:
                loaded = await load(missed)
                fills = []
                for index, lease, found in zip(missed, leases, loaded, strict=True):
                    values[index] = found.value if found.value is not None else MISSING
                    fill = self._fill_of(keys[index], lease, found) if lease is not None else None
                    if fill is not None:
                        fills.append(fill)
                await self._cache.fill_many(fills)
        return [None if value == MISSING else value for value in values]

    async def read_linked(self, key: str, target_prefix: str) -> tuple[bytes | None, bytes | None]:
        """An alternate key's cached value and the cached entry it names (``Cache.get_linked``): one round trip
        at most, no lease, no database. The caller checks that the entry still answers to the alternate key."""
        link, target = self._cache.cached(key), None
        in_process = link is not None
        if link is not None and link != MISSING:
            target = self._cache.cached(target_prefix + link.decode())
            in_process = target is not None
        if not in_process:
            link, target = await self._cache.get_linked(key, target_prefix)
        if link == MISSING or target is not None:
            self._metrics.hit(key, in_process=in_process)
        return link, target

    async def invalidate(self, *keys: str) -> bool:
        """Invalidates ``keys`` after a write; see the module docstring. True once the shared cache has it."""
        for key in keys:
            self._flights.pop(key, None)
        self._invalidations.inc(len(keys))
        return await self._cache.invalidate(*keys)
