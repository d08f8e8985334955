"""The Cache protocol: plain get, plus leases so that a slow reader can never put back a stale value.

The lease rule (from "Scaling Memcache at Facebook", NSDI 2013): a reader that misses takes a lease
*before* it reads the database, and may fill the key only while its lease is intact. Every write deletes
the value and the lease after its transaction commits. So a reader whose database read may predate a
write finds its lease gone and its fill refused; it can never overwrite the newer state with an older one.
Only one reader per key holds a lease at a time, so a popular miss causes one fill, not a herd.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol


def jittered(ttl_seconds: float) -> float:
    """``ttl_seconds`` lowered by up to 20 % at random, for a fill: entries filled together must not all expire
    together and send their readers to the database at once."""
    return ttl_seconds * random.uniform(0.8, 1.0)


@dataclass(frozen=True)
class Lookup:
    """The answer of ``get_or_lease``: the cached bytes, or on a miss the lease token if this reader got one."""

    value: bytes | None
    lease: str | None = None


class Cache(Protocol):
    """Bytes by key with leases. Implementations never raise on a backend failure: a failing cache is a miss."""

    async def get_or_lease(self, key: str) -> Lookup:
        """The value of ``key``; on a miss, also try to take the key's lease (None when another reader has it)."""

    async def fill(self, key: str, lease: str, value: bytes, ttl_seconds: float) -> bool:
        """Stores ``value`` if ``lease`` is still the key's lease; False when a write invalidated it meanwhile."""

    async def invalidate(self, *keys: str) -> None:
        """Deletes the values and leases of ``keys``; called after the write that changed them commits."""

    async def aclose(self) -> None:
        """Releases connections."""


class NoCache:
    """The cache that is not there (CACHE_BACKEND=none): every read goes to the database."""

    async def get_or_lease(self, key: str) -> Lookup:
        return Lookup(None)

    async def fill(self, key: str, lease: str, value: bytes, ttl_seconds: float) -> bool:
        return False

    async def invalidate(self, *keys: str) -> None:
        return None

    async def aclose(self) -> None:
        return None
