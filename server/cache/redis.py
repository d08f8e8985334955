"""The Redis cache: the lease rules done atomically in Redis with small Lua scripts (one round trip for a
read or a fill, of one key or a batch), over entries that a Redis restart or failover cannot bring back.

A Redis failure never fails an RPC: reads become misses (served from PostgreSQL), and the outage is logged as
changes of state (server/outage.py), not once per failed call. Short socket timeouts bound what an unreachable
Redis costs a call, and a circuit breaker stops calling it after the first failure: the cache is *bypassed*
(reads go straight to PostgreSQL and fill nothing, without waiting for a timeout) while a background probe pings
Redis with exponential backoff. Opening on the first failure is deliberate: a call to a dead Redis costs an RPC
a whole timeout, a bypassed read costs one PostgreSQL read.

Invalidations that failed are kept and made by the probe once Redis answers. Then, before any entry is served
again, the cache is *recovering*: it runs the recovery given to ``set_recovery`` (the outbox sweep with no
grace, server/cache/outbox.py), which makes every invalidation that any writer recorded in PostgreSQL, here or on
another replica that may have died since. Only then is the cache in use again. So no entry replaced by a write
during the outage is served by this process after it. (A replica that saw no failure at all, because it made no
call during the outage and keeps no near cache, may serve such an entry until the writer's own probe or the
periodic sweep removes it, within seconds; near caches notice every outage through their heartbeat.)

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
import enum
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence

import redis.asyncio as redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from server.cache import keys
from server.cache.base import MISSING, Fill, Lookup
from server.cache.keys import EPOCH
from server.cache.metrics import CacheMetrics
from server.outage import OutageLog
from server.tasks import cancel

log = logging.getLogger(__name__)

LEASE_MILLISECONDS = 5000
_PROBE_FIRST_SECONDS = 0.05
_PROBE_MAX_SECONDS = 2.0

# Every script names in KEYS the entries, leases and epoch key it touches, but for _GET_LINKED, which reads the
# entry an alternate key names. Redis Cluster would need more: a script may touch the keys of one slot only, and
# each master has its own run_id, so each entry would be checked against an epoch key of its own slot (entry,
# lease and epoch key sharing a hash tag drawn from a fixed set), and the connect hook would set the epoch keys
# of the slots its node serves.

# Lua for the run_id of the Redis server running a script (new at every start of its process); the scripts
# below name it $RUN_ID.
_RUN_ID = "string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')"

# The current epoch as $TAG ("<epoch>|"). An epoch key gone from the live server (evicted, deleted) is set
# again to its run_id: what was written under that run_id is still valid, as this server has applied every
# invalidation since.
_EPOCH_TAG = """
local epoch = redis.call('GET', KEYS[#KEYS])
if not epoch then
  epoch = $RUN_ID
  redis.call('SET', KEYS[#KEYS], epoch)
end
local tag = epoch .. '|'
""".replace("$RUN_ID", _RUN_ID)

# KEYS[1] epoch key. Run by every new connection before its first command; returns the server's run_id.
_ADOPT_RUN_ID = """
local run_id = $RUN_ID
if redis.call('GET', KEYS[1]) ~= run_id then redis.call('SET', KEYS[1], run_id) end
return run_id
""".replace("$RUN_ID", _RUN_ID)

# KEYS: value key and lease key of each entry, then the epoch key; ARGV: a new lease token per entry, then the
# lease lifetime in ms. Returns per entry {value, lease}: a hit's value (filled since the MGET that missed it),
# or on a miss the lease token if this reader took the lease (nobody held it). A value or lease of an earlier
# epoch does not count, and such a value is deleted.
_GET_MANY_OR_LEASE = (
    _EPOCH_TAG
    + """
local answers = {}
for i = 1, (#KEYS - 1) / 2 do
  local value_key, lease_key = KEYS[2 * i - 1], KEYS[2 * i]
  local value = redis.call('GET', value_key)
  if value and string.sub(value, 1, #tag) ~= tag then
    redis.call('DEL', value_key)
    value = nil
  end
  if value then
    answers[i] = {string.sub(value, #tag + 1), false}
  else
    local lease = redis.call('GET', lease_key)
    if lease and string.sub(lease, 1, #tag) == tag then
      answers[i] = {false, false}
    else
      redis.call('SET', lease_key, tag .. ARGV[i], 'PX', ARGV[#ARGV])
      answers[i] = {false, ARGV[i]}
    end
  end
end
return answers
"""
)

# KEYS[1] the alternate key, KEYS[2] the epoch key; ARGV[1] the prefix of the entries it names. Returns
# {link, target}: the alternate key's value and, if that is an id (not MISSING), the value of the entry it names.
_GET_LINKED = (
    _EPOCH_TAG
    + """
local link = redis.call('GET', KEYS[1])
if not link or string.sub(link, 1, #tag) ~= tag then return {false, false} end
link = string.sub(link, #tag + 1)
if link == ARGV[2] then return {link, false} end
local target = redis.call('GET', ARGV[1] .. link)
if not target or string.sub(target, 1, #tag) ~= tag then return {link, false} end
return {link, string.sub(target, #tag + 1)}
"""
)

# KEYS: value key and lease key of each entry, then the epoch key; ARGV: lease token, value and ttl in ms of
# each entry. A fill lands only if its lease is still the one its reader took, in this epoch: an invalidation
# in between deleted it, and a lease restored from a snapshot belongs to an earlier epoch. Returns the count.
_FILL_MANY = """
local epoch = redis.call('GET', KEYS[#KEYS])
if not epoch then return 0 end
local tag = epoch .. '|'
local filled = 0
for i = 1, (#KEYS - 1) / 2 do
  if redis.call('GET', KEYS[2 * i]) == tag .. ARGV[3 * i - 2] then
    redis.call('SET', KEYS[2 * i - 1], tag .. ARGV[3 * i - 1], 'PX', ARGV[3 * i])
    redis.call('DEL', KEYS[2 * i])
    filled = filled + 1
  end
end
return filled
"""


def _milliseconds(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class Mode(enum.Enum):
    """Whether the cache calls Redis."""

    IN_USE = "in use"
    BYPASSED = "bypassed"  # after a failure: no calls, the probe pings Redis
    RECOVERING = "recovering"  # Redis answers: owed and recorded invalidations are made, nothing is read yet


class RedisCache:
    """Cache on one redis.asyncio client (its own connection pool inside), closed with ``aclose()``.

    An outage is logged when it begins, then summarized every ``outage_summary_seconds`` while it lasts.
    """

    def __init__(
        self,
        url: str,
        metrics: CacheMetrics,
        *,
        timeout_seconds: float,
        outage_summary_seconds: float = 60.0,
        on_mode_change: Callable[[Mode], None] = lambda mode: None,
    ) -> None:
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry_on_timeout=False,
            redis_connect_func=self._adopt_run_id,  # the pool passes it to every connection it makes
        )
        self._get_many_or_lease = self._client.register_script(_GET_MANY_OR_LEASE)
        self._get_linked = self._client.register_script(_GET_LINKED)
        self._fill_many = self._client.register_script(_FILL_MANY)
        self._metrics = metrics
        self._outage = OutageLog(log, "cache", summary_seconds=outage_summary_seconds)
        self._mode = Mode.IN_USE
        self._on_mode_change = on_mode_change
        self._recover: Callable[[], Awaitable[object]] | None = None
        self._run_id: bytes | None = None  # of the server this process last connected to; for the log only
        # Keys whose invalidation Redis has not yet accepted, each with a count of failed invalidations: a
        # probe confirms a key only if no newer invalidation of it failed while the probe was in flight.
        self._unconfirmed: dict[str, int] = {}
        self._probe_task: asyncio.Task[None] | None = None

    @property
    def mode(self) -> Mode:
        return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        if mode is not self._mode:
            self._mode = mode
            self._metrics.breaker_open.set(0 if mode is Mode.IN_USE else 1)
            self._on_mode_change(mode)

    def set_recovery(self, recover: Callable[[], Awaitable[object]]) -> None:
        """What must run after an outage before entries are served again; its failure prolongs the outage."""
        self._recover = recover

    def suspect(self, error: Exception) -> None:
        """Treats Redis as failed, as when the near cache's invalidation stream is lost: the outage is logged
        and the cache bypassed until a probe succeeds and the recovery has run."""
        self._failed("invalidation stream", error)

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

    def _failed(self, operation: str, exc: BaseException) -> None:
        self._metrics.errors.labels(operation).inc()
        self._outage.failed(operation, exc)
        self._bypass()

    def _bypass(self) -> None:
        self.mode = Mode.BYPASSED
        if self._probe_task is None or self._probe_task.done():
            self._probe_task = asyncio.create_task(self._probe(), name="cache-probe")

    def cached(self, key: str) -> bytes | None:
        return None  # nothing is held in the process

    async def get_or_lease(self, key: str) -> Lookup:
        return (await self.get_many_or_lease([key]))[0]

    async def get_many_or_lease(self, keys_: Sequence[str]) -> list[Lookup]:
        """A hit costs one MGET of the entries and the epoch key, compared here: Redis spends less on a plain
        MGET than on a script, and hits are most reads. The misses then go through the lease script."""
        if self.mode is not Mode.IN_USE or not keys_:
            return [Lookup(None)] * len(keys_)
        try:
            epoch, *values = await self._client.mget(EPOCH, *keys_)
            answers = [Lookup(None)] * len(keys_)
            missed: list[int] = []
            tag = epoch + b"|" if epoch is not None else None
            for index, value in enumerate(values):
                if tag is not None and value is not None and value.startswith(tag):
                    answers[index] = Lookup(value[len(tag) :])
                else:
                    missed.append(index)
            if missed:
                leased = await self._get_many_or_lease(
                    keys=[*(part for index in missed for part in (keys_[index], keys.lease(keys_[index]))), EPOCH],
                    args=[*(uuid.uuid4().hex for _ in missed), LEASE_MILLISECONDS],
                )
                for index, (value, lease) in zip(missed, leased, strict=True):
                    answers[index] = Lookup(value or None, lease.decode() if lease else None)
        except (RedisError, OSError) as exc:
            self._failed("read", exc)
            return [Lookup(None)] * len(keys_)
        self._outage.succeeded()
        return answers

    async def get_linked(self, key: str, target_prefix: str) -> tuple[bytes | None, bytes | None]:
        if self.mode is not Mode.IN_USE:
            return None, None
        try:
            link, target = await self._get_linked(keys=[key, EPOCH], args=[target_prefix, MISSING])
        except (RedisError, OSError) as exc:
            self._failed("read", exc)
            return None, None
        self._outage.succeeded()
        return link or None, target or None

    async def fill(self, key: str, lease: str, value: bytes, ttl_seconds: float) -> bool:
        return await self._fill([Fill(key, lease, value, ttl_seconds)]) == 1

    async def fill_many(self, fills: Sequence[Fill]) -> None:
        if fills:
            await self._fill(fills)

    async def _fill(self, fills: Sequence[Fill]) -> int:
        if self.mode is not Mode.IN_USE:
            return 0
        try:
            filled = await self._fill_many(
                keys=[*(part for fill in fills for part in (fill.key, keys.lease(fill.key))), EPOCH],
                args=[
                    part
                    for fill in fills
                    for part in (fill.lease, fill.value, _milliseconds(fill.ttl_seconds))
                ],
            )
        except (RedisError, OSError) as exc:
            self._failed("fill", exc)
            return 0
        self._outage.succeeded()
        return int(filled)

    async def invalidate(self, *keys_: str) -> bool:
        if not keys_:
            return True
        if self.mode is not Mode.BYPASSED:
            try:
                await self._delete(keys_)
            except (RedisError, OSError) as exc:
                self._failed("invalidate", exc)
            else:
                self._outage.succeeded()
                return True
        for key in keys_:
            self._unconfirmed[key] = self._unconfirmed.get(key, 0) + 1
        self._bypass()
        return False

    async def _delete(self, keys_: Sequence[str]) -> None:
        await self._client.delete(*keys_, *(keys.lease(key) for key in keys_))

    async def _probe(self) -> None:
        """Until Redis answers: ping it, make the owed invalidations, run the recovery; then use the cache again.
        Exponential backoff with full jitter between attempts."""
        delay = _PROBE_FIRST_SECONDS
        while True:
            await asyncio.sleep(random.uniform(0, delay))
            delay = min(delay * 2, _PROBE_MAX_SECONDS)
            try:
                await self._client.ping()
                self.mode = Mode.RECOVERING
                await self._confirm_owed()
                if self._recover is not None:
                    await self._recover()
            except (RedisError, OSError) as exc:
                self.mode = Mode.BYPASSED
                self._metrics.errors.labels("probe").inc()
                self._outage.failed("probe", exc)
                continue
            except Exception as exc:  # the recovery failed (PostgreSQL unreachable, Redis failing again)
                self.mode = Mode.BYPASSED
                self._outage.failed("recovery", exc)
                continue
            if self.mode is Mode.RECOVERING and not self._unconfirmed:  # nothing failed meanwhile
                self.mode = Mode.IN_USE
                self._outage.succeeded()
                return

    async def _confirm_owed(self) -> None:
        while self._unconfirmed:
            attempted = dict(self._unconfirmed)
            await self._delete(list(attempted))
            for key, failures in attempted.items():
                if self._unconfirmed.get(key) == failures:
                    del self._unconfirmed[key]
            log.info("delayed cache invalidation done", extra={"keys": len(attempted)})

    async def aclose(self) -> None:
        """Closes the client, after one last attempt at invalidations still owed: a restart must not leave behind
        an entry that a write already replaced."""
        if self._probe_task is not None:
            await cancel(self._probe_task)
        if self._unconfirmed:
            try:
                await self._delete(list(self._unconfirmed))
            except (RedisError, OSError) as exc:
                log.error(
                    "pending cache invalidations lost at shutdown; the outbox sweep of another replica makes them",
                    extra={"keys": len(self._unconfirmed), "error": repr(exc)},
                )
        await self._client.aclose()
