"""Redis's reports of changed keys, for a near cache: server-assisted client-side caching in broadcast mode.

Two connections of our own: a subscriber to ``__redis__:invalidate``, and a tracking connection that turns on
``CLIENT TRACKING ... REDIRECT <subscriber> BCAST PREFIX <each tracked prefix>``. From then on Redis reports
every change of a key under those prefixes, by anyone (a write, an expiry, an eviction, a fill), to the
subscriber, and a flush of the whole keyspace as a report without keys. The subscriber speaks RESP2: redis-py
speaks RESP3 by default and would then drop these reports.

The reports are trusted only while they are known to be on time. Every ``heartbeat_seconds`` the tracking
connection writes a heartbeat key of its own and waits for its report. Reports come in the order Redis makes
them, so when the heartbeat's report arrives, every report of a change made before the heartbeat has arrived
too. If it is not back within ``max_lag_seconds``, or either connection fails, the stream is declared late:
the near cache drops everything and serves nothing until a heartbeat comes back on time (on new connections
after a failure). A change that Redis applied at time t is therefore acted on here by
t + heartbeat_seconds + max_lag_seconds at the latest.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable

import redis.asyncio as redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

from server.cache.keys import HEARTBEAT_PREFIX, TRACKED_PREFIXES
from server.cache.metrics import CacheMetrics
from server.tasks import cancel

log = logging.getLogger(__name__)

CHANNEL = "__redis__:invalidate"
_RECONNECT_FIRST_SECONDS = 0.1
_RECONNECT_MAX_SECONDS = 5.0


class StreamLost(Exception):
    """The invalidation stream stopped being trustworthy (a connection failed, or a heartbeat was late)."""


class TrackingRefused(Exception):
    """Redis refuses what the stream needs (an ACL without CLIENT or SUBSCRIBE, a renamed command): asking again
    would not help, and Redis itself is fine."""


class InvalidationStream:
    """Calls ``on_keys(keys)`` for every reported change, ``on_flush()`` whenever Redis flushed everything or
    reports may have been missed, and then also ``on_lost(error)``: Redis itself may be failing, and writes may
    have missed it. ``on_time`` says whether reports can be trusted right now."""

    def __init__(
        self,
        url: str,
        metrics: CacheMetrics,
        *,
        on_keys: Callable[[list[str]], None],
        on_flush: Callable[[], None],
        on_lost: Callable[[Exception], None],
        timeout_seconds: float,
        heartbeat_seconds: float,
        max_lag_seconds: float,
    ) -> None:
        self._pool = redis.ConnectionPool.from_url(
            url, protocol=2, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds
        )
        self._metrics = metrics
        self._on_keys = on_keys
        self._on_flush = on_flush
        self._on_lost = on_lost
        self._heartbeat_seconds = heartbeat_seconds
        self._max_lag = max_lag_seconds
        self._heartbeat_key = f"{HEARTBEAT_PREFIX}{uuid.uuid4().hex}"
        self._heartbeat_back: asyncio.Event = asyncio.Event()
        self.on_time = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cache-invalidation-stream")

    async def _run(self) -> None:
        delay = _RECONNECT_FIRST_SECONDS
        while True:
            connections: list[AbstractConnection] = []
            try:
                await self._follow(connections)
            except TrackingRefused as exc:
                self._on_flush()
                log.error(
                    "near cache off: Redis refuses server-assisted invalidation; set CACHE_NEAR=false, or allow "
                    "CLIENT ID, CLIENT TRACKING and SUBSCRIBE to this user",
                    extra={"error": str(exc.__cause__)},
                )
                return
            except (RedisError, OSError, StreamLost) as exc:
                if self.on_time:  # it had worked: try again soon
                    delay = _RECONNECT_FIRST_SECONDS
                self._lost(exc)
            finally:
                for connection in connections:
                    await connection.disconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX_SECONDS)

    async def _follow(self, connections: list[AbstractConnection]) -> None:
        """Subscribes, turns tracking on, then reads reports and beats until something fails."""
        self._heartbeat_back.clear()
        subscriber = self._pool.make_connection()
        connections.append(subscriber)
        await subscriber.connect()
        subscriber_id = await _set_up(subscriber, "CLIENT", "ID")
        await _set_up(subscriber, "SUBSCRIBE", CHANNEL)
        tracker = self._pool.make_connection()
        connections.append(tracker)
        await tracker.connect()
        prefixes = [part for prefix in TRACKED_PREFIXES for part in ("PREFIX", prefix)]
        await _set_up(tracker, "CLIENT", "TRACKING", "on", "REDIRECT", subscriber_id, "BCAST", *prefixes)
        reading = asyncio.create_task(self._read(subscriber))
        beating = asyncio.create_task(self._beat(tracker))
        try:
            done, _ = await asyncio.wait([reading, beating], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises what stopped it
        finally:
            reading.cancel()
            beating.cancel()
            # gather, not a suppressed await: a cancellation of this task while it waits must go on up.
            await asyncio.gather(reading, beating, return_exceptions=True)

    async def _read(self, subscriber: AbstractConnection) -> None:
        while True:
            message = await subscriber.read_response(timeout=math.inf)  # quiet for long is normal
            if not isinstance(message, list) or len(message) != 3 or message[0] != b"message":
                continue
            reported = message[2]
            if reported is None:  # FLUSHALL / FLUSHDB
                log.info("near cache dropped everything: Redis was flushed")
                self._on_flush()
                continue
            keys = [key.decode() for key in reported]
            if self._heartbeat_key in keys:
                self._heartbeat_back.set()
                keys = [key for key in keys if key != self._heartbeat_key]
            if keys:
                self._on_keys(keys)

    async def _beat(self, tracker: AbstractConnection) -> None:
        while True:
            self._heartbeat_back.clear()
            sent = time.monotonic()
            await tracker.send_command("SET", self._heartbeat_key, "1", "PX", "60000")
            await tracker.read_response()
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that arrives as
                # the heartbeat comes back, and this loop would then outlive the close that cancelled it.
                async with asyncio.timeout(self._max_lag):
                    await self._heartbeat_back.wait()
            except TimeoutError:
                raise StreamLost(f"a heartbeat was not reported back within {self._max_lag} s") from None
            lag = time.monotonic() - sent
            self._metrics.invalidation_lag.observe(lag)
            if not self.on_time:
                self.on_time = True
                self._metrics.near_enabled.set(1)
                log.info("near cache serving: Redis reports changes on time", extra={"lag_ms": round(lag * 1000, 3)})
            await asyncio.sleep(max(0.0, self._heartbeat_seconds - lag))

    def _lost(self, error: Exception) -> None:
        self._on_flush()
        self._on_lost(error)
        if self.on_time:
            self.on_time = False
            self._metrics.near_enabled.set(0)
            log.warning("near cache off and emptied: invalidation stream lost", extra={"error": repr(error)})

    async def aclose(self) -> None:
        if self._task is not None:
            await cancel(self._task)
        self.on_time = False
        await self._pool.aclose()


async def _set_up(connection: AbstractConnection, *command: object) -> object:
    """Sends one command of the stream's set-up; an error answer is a refusal. (A Redis still loading its data
    answers with an error that redis-py raises as a connection error, and is asked again later.)"""
    await connection.send_command(*command)
    try:
        return await connection.read_response()
    except ResponseError as exc:
        raise TrackingRefused() from exc
