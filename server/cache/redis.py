"""The Redis cache: the lease rules done atomically in Redis with two small Lua scripts, over entries that a
Redis restart or failover cannot bring back.

A Redis failure never fails an RPC: reads become misses (served from PostgreSQL), and the outage is logged as
changes of state (server/outage.py), not once per failed call. Short socket timeouts bound what an unreachable
Redis costs each call. An invalidation that fails is not forgotten: its keys are retried in the background
until Redis takes them, and until then this process reads those keys from PostgreSQL only, so its own callers
never see the value their write replaced. (Other replicas may serve it until the retry lands.)

Nothing cached before a restart or failover of Redis is served after it. A restarted Redis loads its last
snapshot, which predates the invalidations acknowledged after it was taken; a promoted replica may have missed
the last ones. So every value and lease is stored tagged with the epoch it was written under, and the epoch key
holds the current epoch: the run_id of the Redis server process, new at every start. Each new connection,
before it carries any command, sets the epoch key to its server's run_id (a restored snapshot holds the
previous one), and the scripts compare tags with the epoch key inside Redis, so an entry or a lease from before
the restart is a miss whatever this process believes. Every command after a restart runs on a new connection,
since the old ones died with the server, as long as connections go straight to Redis: a proxy that keeps
client connections open across a restart of the server behind it would hide the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid

import redis.asyncio as redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from server.cache.base import Lookup
from server.cache.keys import EPOCH
from server.outage import OutageLog

log = logging.getLogger(__name__)

LEASE_MILLISECONDS = 5000
_RETRY_FIRST_SECONDS = 0.05
_RETRY_MAX_SECONDS = 2.0

# Every script names all the keys it touches in KEYS: an entry, its lease and the epoch key. Redis Cluster would
# need more: a script may touch the keys of one slot only, and each master has its own run_id, so each entry
# would be checked against an epoch key of its own slot (entry, lease and epoch key sharing a hash tag drawn
# from a fixed set), and the connect hook would set the epoch keys of the slots its node serves.

# Lua for the run_id of the Redis server running a script (new at every start of its process); the scripts
# below name it $RUN_ID.
_RUN_ID = "string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')"

# KEYS[1] epoch key. Run by every new connection before its first command; returns the server's run_id.
_ADOPT_RUN_ID = """
local run_id = $RUN_ID
if redis.call('GET', KEYS[1]) ~= run_id then redis.call('SET', KEYS[1], run_id) end
return run_id
""".replace("$RUN_ID", _RUN_ID)

# KEYS[1] value key, KEYS[2] lease key, KEYS[3] epoch key; ARGV[1] new lease token, ARGV[2] lease lifetime in ms.
# One round trip: a hit returns the value; a miss takes the lease if nobody holds it. A value or lease of an
# earlier epoch does not count. An epoch key gone from the live server (evicted, deleted) is set again to its
# run_id: what was written under that run_id is still valid, as this server has applied every invalidation since.
_GET_OR_LEASE = """
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = $RUN_ID
  redis.call('SET', KEYS[3], epoch)
end
local tag = epoch .. '|'
local value = redis.call('GET', KEYS[1])
if value then
  if string.sub(value, 1, #tag) == tag then return {string.sub(value, #tag + 1), false} end
  redis.call('DEL', KEYS[1])
end
local lease = redis.call('GET', KEYS[2])
if lease and string.sub(lease, 1, #tag) == tag then return {false, false} end
redis.call('SET', KEYS[2], tag .. ARGV[1], 'PX', ARGV[2])
return {false, ARGV[1]}
""".replace("$RUN_ID", _RUN_ID)

# KEYS[1] value key, KEYS[2] lease key, KEYS[3] epoch key; ARGV[1] lease token, ARGV[2] value, ARGV[3] ttl in ms.
# The fill lands only if the lease is still the one this reader took, in this epoch: an invalidation in between
# deleted it, and a lease restored from a snapshot belongs to an earlier epoch.
_FILL = """
local epoch = redis.call('GET', KEYS[3])
if epoch and redis.call('GET', KEYS[2]) == epoch .. '|' .. ARGV[1] then
  redis.call('SET', KEYS[1], epoch .. '|' .. ARGV[2], 'PX', ARGV[3])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""


def _lease_key(key: str) -> str:
    return f"{key}:lease"


class RedisCache:
    """Cache on one redis.asyncio client (its own connection pool inside), closed with ``aclose()``.

    An outage is logged when it begins, then summarized every ``outage_summary_seconds`` while it lasts.
    """

    def __init__(self, url: str, *, timeout_seconds: float, outage_summary_seconds: float = 60.0) -> None:
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry_on_timeout=False,
            redis_connect_func=self._adopt_run_id,  # the pool passes it to every connection it makes
        )
        self._get_or_lease = self._client.register_script(_GET_OR_LEASE)
        self._fill = self._client.register_script(_FILL)
        self._outage = OutageLog(log, "cache", summary_seconds=outage_summary_seconds)
        self._run_id: bytes | None = None  # of the server this process last connected to; for the log only
        # Keys whose invalidation Redis has not yet accepted, each with a count of failed invalidations: a
        # retry confirms a key only if no newer invalidation of it failed while the retry was in flight.
        self._unconfirmed: dict[str, int] = {}
        self._retry_task: asyncio.Task[None] | None = None

    async def _adopt_run_id(self, connection: AbstractConnection) -> None:
        """redis-py calls this on each new connection instead of its handshake (``on_connect``), so it runs that
        first. An error here is a failed connection: redis-py closes it, and the command that needed it fails."""
        await connection.on_connect()
        await connection.send_command("EVAL", _ADOPT_RUN_ID, 1, EPOCH)
        run_id = await connection.read_response()
        if self._run_id is not None and run_id != self._run_id:
            log.warning(
                "cache Redis restarted or failed over; entries cached before are ignored",
                extra={"previous_run_id": self._run_id.decode(), "run_id": run_id.decode()},
            )
        self._run_id = run_id

    async def get_or_lease(self, key: str) -> Lookup:
        if key in self._unconfirmed:
            return Lookup(None)  # its cached value may predate a write: read the database, fill nothing
        token = uuid.uuid4().hex
        try:
            value, lease = await self._get_or_lease(
                keys=[key, _lease_key(key), EPOCH], args=[token, LEASE_MILLISECONDS]
            )
        except (RedisError, OSError) as exc:
            self._outage.failed("read", exc)
            return Lookup(None)
        self._outage.succeeded()
        return Lookup(value or None, lease.decode() if lease else None)

    async def fill(self, key: str, lease: str, value: bytes, ttl_seconds: float) -> bool:
        try:
            filled = await self._fill(
                keys=[key, _lease_key(key), EPOCH], args=[lease, value, max(1, int(ttl_seconds * 1000))]
            )
        except (RedisError, OSError) as exc:
            self._outage.failed("fill", exc)
            return False
        self._outage.succeeded()
        return bool(filled)

    async def invalidate(self, *keys: str) -> None:
        try:
            await self._delete(keys)
        except (RedisError, OSError) as exc:
            self._outage.failed("invalidate", exc)
            for key in keys:
                self._unconfirmed[key] = self._unconfirmed.get(key, 0) + 1
            if self._retry_task is None or self._retry_task.done():
                self._retry_task = asyncio.create_task(self._retry_invalidations(), name="cache-invalidation-retry")
        else:
            self._outage.succeeded()

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
            except (RedisError, OSError) as exc:
                self._outage.failed("invalidation retry", exc)
                delay = min(delay * 2, _RETRY_MAX_SECONDS)
                continue
            self._outage.succeeded()
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
