"""The Cache protocol: plain get, plus leases so that a slow reader can never put back a stale value.

The lease rule (from "Scaling Memcache at Facebook", NSDI 2013): a reader that misses takes a lease
*before* it reads the database, and may fill the key only while its lease is intact. Every write deletes
the value and the lease after its transaction commits. So a reader whose database read may predate a
write finds its lease gone and its fill refused; it can never overwrite the newer state with an older one.
Only one reader per key holds a lease at a time, so a popular miss causes one fill, not a herd.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

# The value of a negative entry: the database had no such row. No serialized message starts with a zero byte
# (field number 0 does not exist), and an id link is ASCII, so no real value can be mistaken for it.
MISSING = b"\x00"


class NotConfirmed(Exception):
    """The cache did not confirm an invalidation (it is owed, and retried in the background)."""


def jittered(ttl_seconds: float) -> float:
    """``ttl_seconds`` lowered by up to 20 % at random, for a fill: entries filled together must not all expire
    together and send their readers to the database at once."""
    return ttl_seconds * random.uniform(0.8, 1.0)


@dataclass(frozen=True)
class Lookup:
    """The answer of ``get_or_lease``: the cached bytes, or on a miss the lease token if this reader got one."""

    value: bytes | None
    lease: str | None = None


@dataclass(frozen=True)
class Fill:
    """One entry to store under the lease its reader took."""

    key: str
    lease: str
    value: bytes
    ttl_seconds: float


class Cache(Protocol):
    """Bytes by key with leases. Implementations never raise on a backend failure: a failing cache is a miss."""

    def cached(self, key: str) -> bytes | None:
        """The value of ``key`` if this process holds it: no I/O, no lease. None when it must be asked for."""

    async def get_or_lease(self, key: str) -> Lookup:
        """The value of ``key``; on a miss, also try to take the key's lease (None when another reader has it)."""

    async def get_many_or_lease(self, keys: Sequence[str]) -> list[Lookup]:
        """``get_or_lease`` of every key, in order, in one round trip."""

    async def get_linked(self, key: str, target_prefix: str) -> tuple[bytes | None, bytes | None]:
        """The value of ``key`` and, when it is cached, the value of the entry it names (``target_prefix`` +
        the value), in one round trip and without leases: a lookup by an alternate key."""

    async def fill(self, key: str, lease: str, value: bytes, ttl_seconds: float) -> bool:
        """Stores ``value`` if ``lease`` is still the key's lease; False when a write invalidated it meanwhile."""

    async def fill_many(self, fills: Sequence[Fill]) -> None:
        """``fill`` of every entry, in one round trip."""

    async def invalidate(self, *keys: str) -> bool:
        """Deletes the values and leases of ``keys``; called after the write that changed them commits. True
        once the backend has done it; False when it is owed (it is retried in the background)."""

    def set_recovery(self, recover: Callable[[], Awaitable[object]]) -> None:
        """What must run after an outage of a shared cache before its entries are served again."""

    async def aclose(self) -> None:
        """Releases connections."""


class NoCache:
    """The cache that is not there (CACHE_BACKEND=none): every read goes to the database."""

    def cached(self, key: str) -> bytes | None:
        return None

    async def get_or_lease(self, key: str) -> Lookup:
        return Lookup(None)

    async def get_many_or_lease(self, keys: Sequence[str]) -> list[Lookup]:
        return [Lookup(None)] * len(keys)

    async def get_linked(self, key: str, target_prefix: str) -> tuple[bytes | None, bytes | None]:
        return None, None

    async def fill(self, key: str, lease: str, value: bytes, ttl_seconds: float) -> bool:
        return False

    async def fill_many(self, fills: Sequence[Fill]) -> None:
        return None

    async def invalidate(self, *keys: str) -> bool:
        return True

    def set_recovery(self, recover: Callable[[], Awaitable[object]]) -> None:
        return None

    async def aclose(self) -> None:
        return None
