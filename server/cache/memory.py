"""The in-process cache of the development default (no REDIS_URL): same lease rules, one process only."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from server.cache.base import Fill, Lookup

LEASE_SECONDS = 5.0


class MemoryCache:
    """A bounded LRU of (value, expiry) with per-key leases. Not shared between replicas: one process only."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._leases: dict[str, tuple[str, float]] = {}
        self._max_entries = max_entries

    def cached(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[0]

    async def get_or_lease(self, key: str) -> Lookup:
        return self._get_or_lease(key)

    async def get_many_or_lease(self, keys: Sequence[str]) -> list[Lookup]:
        return [self._get_or_lease(key) for key in keys]

    async def get_linked(self, key: str, target_prefix: str) -> tuple[bytes | None, bytes | None]:
        link = self.cached(key)
        return link, (self.cached(target_prefix + link.decode()) if link else None)

    def _get_or_lease(self, key: str) -> Lookup:
        value = self.cached(key)
        if value is not None:
            return Lookup(value)
        now = time.monotonic()
        holder = self._leases.get(key)
        if holder is not None and holder[1] > now:
            return Lookup(None)
        token = uuid.uuid4().hex
        self._leases[key] = (token, now + LEASE_SECONDS)
        if len(self._leases) > self._max_entries:
            self._drop_expired_leases(now)  # misses that are never filled leave their lease
        return Lookup(None, token)

    def _drop_expired_leases(self, now: float) -> None:
        for key in [key for key, (_, expires) in self._leases.items() if expires <= now]:
            del self._leases[key]
        while len(self._leases) > self._max_entries:  # all live: drop the oldest; its fill is merely refused
            del self._leases[next(iter(self._leases))]

    async def fill(self, key: str, lease: str, value: bytes, ttl_seconds: float) -> bool:
        return self._fill(key, lease, value, ttl_seconds)

    async def fill_many(self, fills: Sequence[Fill]) -> None:
        for fill in fills:
            self._fill(fill.key, fill.lease, fill.value, fill.ttl_seconds)

    def _fill(self, key: str, lease: str, value: bytes, ttl_seconds: float) -> bool:
        holder = self._leases.get(key)
        if holder is None or holder[0] != lease:
            return False
        del self._leases[key]
        self._entries[key] = (value, time.monotonic() + ttl_seconds)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return True

    async def invalidate(self, *keys: str) -> bool:
        for key in keys:
            self._entries.pop(key, None)
            self._leases.pop(key, None)
        return True

    def set_recovery(self, recover: Callable[[], Awaitable[object]]) -> None:
        return None  # one process, no outage: nothing to recover

    async def aclose(self) -> None:
        self._entries.clear()
        self._leases.clear()
