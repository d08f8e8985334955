"""The near cache: entries of the shared Redis cache kept in the process, so a hot read costs no round trip.

An entry is taken into the process only from a Redis hit, and dropped when Redis reports that its key
changed (server/cache/tracking.py): a write's invalidation, an expiry, an eviction, a fill. So the process
never holds what Redis no longer holds, for longer than the report takes. A read in flight that a report
overtakes is not taken in (each read marks its key as pending; a report or a drop unmarks it). The writer's own
process drops its entries at once, before its invalidation reaches Redis, so a caller always reads its own
writes through the same replica. Whenever reports may be late or lost, everything is dropped and nothing is
served from the process until they are on time again. Entries live at most ``ttl_seconds`` whatever happens,
and the least recently used go first beyond ``max_bytes``.

Across replicas, a read through another replica returns a write's value at most
heartbeat + max lag (CACHE_NEAR_HEARTBEAT_SECONDS + CACHE_NEAR_MAX_LAG_SECONDS) after the write's invalidation
reached Redis; measured delivery is well under a millisecond (``make bench``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from server.cache.base import MISSING, Fill, Lookup
from server.cache.metrics import CacheMetrics
from server.cache.redis import RedisCache
from server.cache.tracking import InvalidationStream


class NearCache:
    """A bounded in-process LRU in front of a RedisCache, kept correct by Redis's reports of changed keys."""

    def __init__(
        self,
        shared: RedisCache,
        url: str,
        metrics: CacheMetrics,
        *,
        max_bytes: int,
        ttl_seconds: float,
        timeout_seconds: float,
        heartbeat_seconds: float,
        max_lag_seconds: float,
    ) -> None:
        self._shared = shared
        self._metrics = metrics
        self._max_bytes = max_bytes
        self._ttl = ttl_seconds
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0
        self._pending: dict[str, object] = {}
        self._stream = InvalidationStream(
            url,
            metrics,
            on_keys=self._reported,
            on_flush=self._drop_all,
            on_lost=shared.suspect,
            timeout_seconds=timeout_seconds,
            heartbeat_seconds=heartbeat_seconds,
            max_lag_seconds=max_lag_seconds,
        )
        metrics.watch_near_size(lambda: self._bytes)

    def start(self) -> None:
        """Starts following Redis's reports; the process serves nothing of its own until they are on time."""
        self._stream.start()

    def cached(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None or not self._stream.on_time:
            return None
        if entry[1] <= time.monotonic():
            self._drop(key, "expired")
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def _begin(self, key: str) -> object:
        token = object()
        self._pending[key] = token
        return token

    def _take(self, key: str, token: object, value: bytes) -> None:
        """Keeps a value read from Redis, unless a report or a drop of its key came while it was read."""
        if self._pending.get(key) is not token:
            return
        del self._pending[key]
        if not self._stream.on_time:
            return
        self._drop(key, "replaced")
        self._entries[key] = (value, time.monotonic() + self._ttl)
        self._bytes += len(value)
        while self._bytes > self._max_bytes and self._entries:
            self._drop(next(iter(self._entries)), "capacity")

    def _settle(self, key: str, token: object) -> None:
        if self._pending.get(key) is token:
            del self._pending[key]

    async def get_or_lease(self, key: str) -> Lookup:
        return (await self.get_many_or_lease([key]))[0]

    async def get_many_or_lease(self, keys: Sequence[str]) -> list[Lookup]:
        found = [self.cached(key) for key in keys]
        asked = [key for key, value in zip(keys, found, strict=True) if value is None]
        if not asked:
            return [Lookup(value) for value in found]
        tokens = [self._begin(key) for key in asked]
        try:
            lookups = await self._shared.get_many_or_lease(asked)
        except BaseException:
            for key, token in zip(asked, tokens, strict=True):
                self._settle(key, token)
            raise
        for key, token, lookup in zip(asked, tokens, lookups, strict=True):
            if lookup.value is not None:
                self._take(key, token, lookup.value)
            else:
                self._settle(key, token)
        fetched = iter(lookups)
        return [Lookup(value) if value is not None else next(fetched) for value in found]

    async def get_linked(self, key: str, target_prefix: str) -> tuple[bytes | None, bytes | None]:
        link = self.cached(key)
        target_key: str | None = None
        if link is not None:
            if link == MISSING:
                return link, None
            target_key = target_prefix + link.decode()
            target = self.cached(target_key)
            if target is not None:
                return link, target
        # The target is taken in only if it was marked pending before the read, which needs the link known
        # beforehand: a report of it processed before this answer would otherwise go unnoticed.
        marked = [(key, self._begin(key))] + ([(target_key, self._begin(target_key))] if target_key else [])
        try:
            link, target = await self._shared.get_linked(key, target_prefix)
        except BaseException:
            for pending_key, token in marked:
                self._settle(pending_key, token)
            raise
        values = {key: link, target_key: target if link is not None and link != MISSING else None}
        if target_key is not None and link is not None and target_prefix + link.decode() != target_key:
            values[target_key] = None  # the link moved to another user meanwhile
        for pending_key, token in marked:
            value = values.get(pending_key)
            if value is not None:
                self._take(pending_key, token, value)
            else:
                self._settle(pending_key, token)
        return link, target

    async def fill(self, key: str, lease: str, value: bytes, ttl_seconds: float) -> bool:
        return await self._shared.fill(key, lease, value, ttl_seconds)

    async def fill_many(self, fills: Sequence[Fill]) -> None:
        await self._shared.fill_many(fills)

    async def invalidate(self, *keys: str) -> bool:
        for key in keys:
            self._drop(key, "invalidated")
        return await self._shared.invalidate(*keys)

    def set_recovery(self, recover: Callable[[], Awaitable[object]]) -> None:
        self._shared.set_recovery(recover)

    def _reported(self, keys: list[str]) -> None:
        for key in keys:
            self._drop(key, "invalidated")

    def _drop(self, key: str, reason: str) -> None:
        self._pending.pop(key, None)
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry[0])
            if reason != "replaced":
                self._metrics.near_evictions.labels(reason).inc()

    def _drop_all(self) -> None:
        self._pending.clear()
        if self._entries:
            self._metrics.near_evictions.labels("flushed").inc(len(self._entries))
        self._entries.clear()
        self._bytes = 0
        self._metrics.near_flushes.inc()

    async def aclose(self) -> None:
        await self._stream.aclose()
        self._drop_all()
        await self._shared.aclose()
