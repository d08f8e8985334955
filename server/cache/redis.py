"""The Redis cache: the lease rules done atomically in Redis with two small Lua scripts.

A Redis failure never fails an RPC: reads become misses (served from PostgreSQL) and the error is logged.
Short socket timeouts bound what an unreachable Redis costs each call. An invalidation that fails is not
forgotten: its keys are retried in the background until Redis takes them, and until then this process
reads those keys from PostgreSQL only, so its own callers never see the value their write replaced.
(Other replicas are protected once the retry lands; closing that window entirely is the cache issue's
key-epoch work.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid

import redis.asyncio as redis
from redis.exceptions import RedisError

from server.cache.base import Lookup

log = logging.getLogger(__name__)

LEASE_MILLISECONDS = 5000
_RETRY_FIRST_SECONDS = 0.05
_RETRY_MAX_SECONDS = 2.0

# KEYS[1] value key, KEYS[2] lease key; ARGV[1] new lease token, ARGV[2] lease lifetime in ms.
# One round trip: a hit returns the value; a miss takes the lease if nobody holds it.
_GET_OR_LEASE = """
local value = redis.call('GET', KEYS[1])
if value then return {value, false} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {false, ARGV[1]} end
return {false, false}
"""

# KEYS[1] value key, KEYS[2] lease key; ARGV[1] lease token, ARGV[2] value, ARGV[3] ttl in ms.
# The fill lands only if the lease is still the one this reader took: an invalidation in between deleted it.
_FILL = """
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""


def _lease_key(key: str) -> str:
    return f"{key}:lease"


class RedisCache:
    """Cache on one redis.asyncio client (its own connection pool inside), closed with ``aclose()``."""

    def __init__(self, url: str, *, timeout_seconds: float) -> None:
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds, retry_on_timeout=False
        )
        self._get_or_lease = self._client.register_script(_GET_OR_LEASE)
        self._fill = self._client.register_script(_FILL)
        # Keys whose invalidation Redis has not yet accepted, each with a count of failed invalidations: a
        # retry confirms a key only if no newer invalidation of it failed while the retry was in flight.
        self._unconfirmed: dict[str, int] = {}
        self._retry_task: asyncio.Task[None] | None = None

    async def get_or_lease(self, key: str) -> Lookup:
        if key in self._unconfirmed:
            return Lookup(None)  # its cached value may predate a write: read the database, fill nothing
        token = uuid.uuid4().hex
        try:
            value, lease = await self._get_or_lease(keys=[key, _lease_key(key)], args=[token, LEASE_MILLISECONDS])
        except (RedisError, OSError) as exc:
            log.warning("cache read failed; reading from the database", extra={"error": repr(exc)})
            return Lookup(None)
        return Lookup(value or None, lease.decode() if lease else None)

    async def fill(self, key: str, lease: str, value: bytes, ttl_seconds: float) -> bool:
        try:
            filled = await self._fill(
                keys=[key, _lease_key(key)], args=[lease, value, max(1, int(ttl_seconds * 1000))]
            )
        except (RedisError, OSError) as exc:
            log.warning("cache fill failed", extra={"error": repr(exc)})
            return False
        return bool(filled)

    async def invalidate(self, *keys: str) -> None:
        try:
            await self._delete(keys)
        except (RedisError, OSError) as exc:
            log.error("cache invalidation failed; retrying in the background", extra={"error": repr(exc)})
            for key in keys:
                self._unconfirmed[key] = self._unconfirmed.get(key, 0) + 1
            if self._retry_task is None or self._retry_task.done():
                self._retry_task = asyncio.create_task(self._retry_invalidations(), name="cache-invalidation-retry")

    async def _delete(self, keys: tuple[str, ...] | list[str]) -> None:
        await self._client.delete(*keys, *(_lease_key(key) for key in keys))

    async def _retry_invalidations(self) -> None:
        """Deletes the unconfirmed keys until Redis accepts, with exponential backoff and full jitter."""
        delay = _RETRY_FIRST_SECONDS
        while self._unconfirmed:
            await asyncio.sleep(random.uniform(0, delay))
            attempted = dict(self._unconfirmed)
            try:
                await self._delete(list(attempted))
            except (RedisError, OSError):
                delay = min(delay * 2, _RETRY_MAX_SECONDS)
                continue
            for key, failures in attempted.items():
                if self._unconfirmed.get(key) == failures:
                    del self._unconfirmed[key]
            log.info("delayed cache invalidation done", extra={"keys": len(attempted)})

    async def aclose(self) -> None:
        """Closes the client, after one last attempt at invalidations still pending: a restart must not
        leave behind an entry that a write already replaced."""
        if self._retry_task is not None:
            self._retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry_task
        if self._unconfirmed:
            try:
                await self._delete(list(self._unconfirmed))
            except (RedisError, OSError) as exc:
                log.error(
                    "pending cache invalidations lost at shutdown; stale entries may live until their TTL",
                    extra={"keys": len(self._unconfirmed), "error": repr(exc)},
                )
        await self._client.aclose()
