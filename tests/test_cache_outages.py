"""Redis outages never fail an RPC, and nothing a write replaced during one is served after it.

Two replicas with near caches share a private Redis, which the test freezes (SIGSTOP), pauses for writes
(CLIENT PAUSE WRITE), stops (connections refused, then an empty restart) or flushes while a user is updated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest
import redis.asyncio as redis
from dataservice.v1 import content_service_pb2 as content_pb
from dataservice.v1 import session_service_pb2 as session_pb
from dataservice.v1 import user_service_pb2 as user_pb
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.app import CACHE_HEALTH_NAME
from tests.backends import RedisServer
from tests.harness import new_user
from tests.test_cache_coherence import (
    CHECK_SECONDS,
    Replica,
    login,
    lookup,
    mask,
    near_serving,
    process_hits,
    replica,
    replica_settings,
    user_of,
    warm,
    within,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
# Every call made during an outage must answer within this, which is the callers' deadline here.
DEADLINE_SECONDS = 3.0
AFTER_RECOVERY_SECONDS = 2.0


async def freeze(server: RedisServer, admin: redis.Redis) -> Callable[[], Awaitable[None]]:
    server.pause()

    async def thaw() -> None:
        server.resume()

    return thaw


async def pause_writes(server: RedisServer, admin: redis.Redis) -> Callable[[], Awaitable[None]]:
    await admin.execute_command("CLIENT", "PAUSE", "60000", "WRITE")

    async def unpause() -> None:
        await admin.execute_command("CLIENT", "UNPAUSE")

    return unpause


async def stop(server: RedisServer, admin: redis.Redis) -> Callable[[], Awaitable[None]]:
    server.stop()

    async def restart() -> None:
        server.start()  # empty: the server keeps nothing on disk

    return restart


async def flush(server: RedisServer, admin: redis.Redis) -> Callable[[], Awaitable[None]]:
    await admin.flushall()

    async def nothing() -> None:
        return None

    return nothing


OUTAGES = {"frozen": freeze, "paused for writes": pause_writes, "stopped": stop, "flushed": flush}


async def every_rpc_answers(one: Replica, user_id: str, token: str, content_id: str) -> None:
    """Reads and writes of every service, each within the deadline."""
    await one.users.GetUser(user_pb.GetUserRequest(id=user_id), timeout=DEADLINE_SECONDS)
    await one.sessions.GetSession(session_pb.GetSessionRequest(token=token), timeout=DEADLINE_SECONDS)
    await one.contents.GetContent(content_pb.GetContentRequest(id=content_id), timeout=DEADLINE_SECONDS)
    await one.contents.BatchGetContents(
        content_pb.BatchGetContentsRequest(ids=[content_id]), timeout=DEADLINE_SECONDS
    )
    await one.contents.UpdateContent(
        content_pb.UpdateContentRequest(content=content_pb.Content(id=content_id, title="Edited"), update_mask=mask("title")),
        timeout=DEADLINE_SECONDS,
    )
    await one.sessions.RefreshSession(session_pb.RefreshSessionRequest(token=token), timeout=DEADLINE_SECONDS)


async def health_of(one: Replica, name: str) -> int:
    """The status the standard health service reports for ``name``, asked over the wire."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{one.app.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
    return reply.status


async def cache_in_use(one: Replica) -> bool:
    return await health_of(one, CACHE_HEALTH_NAME) == SERVING


@pytest.mark.parametrize("outage", OUTAGES.values(), ids=OUTAGES.keys())
async def test_rpcs_succeed_through_a_redis_outage_and_nothing_replaced_during_it_is_served_after(
    outage, new_database, start_app, private_redis
):
    # A database of its own, whose recorded invalidations only these replicas sweep (into this Redis).
    settings = replica_settings(await new_database(), private_redis.url, near=True, REDIS_TIMEOUT_SECONDS="0.2")
    admin = redis.Redis.from_url(private_redis.url)
    async with replica(start_app, settings) as a, replica(start_app, settings) as b:
        await near_serving(a, b)
        user_id = await new_user(a.users)
        email = (await user_of(a, user_id)).email
        token = (await login(a, user_id)).token
        content_id = (await a.contents.CreateContent(content_pb.CreateContentRequest(
            content=content_pb.Content(author_id=user_id, title="Before")))).content.id
        await warm(*(read for one in (a, b) for read in (lambda one=one: user_of(one, user_id), lambda one=one: lookup(one, email))))
        before_hits = process_hits(b.app)

        end = await outage(private_redis, admin)
        try:
            change = user_pb.User(id=user_id, display_name="Written during the outage")
            updated = (await a.users.UpdateUser(
                user_pb.UpdateUserRequest(user=change, update_mask=mask("display_name")),
                timeout=DEADLINE_SECONDS)).user
            assert await user_of(a, user_id) == updated, "the writer's replica reads its write at once"
            assert await lookup(a, email) == updated
            await within(CHECK_SECONDS, lambda: _fresh(b, user_id, email, updated), "the other replica")
            for one in (a, b):
                await every_rpc_answers(one, user_id, token, content_id)
        finally:
            await end()
        admin = redis.Redis.from_url(private_redis.url)  # its connection may not have survived

        # From the end of the outage on, every read is the write's value, until both caches serve again.
        give_up = time.monotonic() + 30
        recovered_at: float | None = None
        while recovered_at is None or time.monotonic() - recovered_at < AFTER_RECOVERY_SECONDS:
            for one in (a, b):
                assert await _fresh(one, user_id, email, updated), "an entry replaced during the outage was served"
            if recovered_at is None and await cache_in_use(a) and await cache_in_use(b):
                recovered_at = time.monotonic()
            assert time.monotonic() < give_up, "the cache never came back into use"
            await asyncio.sleep(0.02)
        await near_serving(a, b)
        await warm(lambda: user_of(b, user_id))
        assert process_hits(b.app) > before_hits, "the near cache serves again"
        for one in (a, b):
            await every_rpc_answers(one, user_id, token, content_id)
    await admin.aclose()


async def _fresh(one: Replica, user_id: str, email: str, updated: user_pb.User) -> bool:
    return await user_of(one, user_id) == updated and await lookup(one, email) == updated


async def test_health_stays_serving_without_redis_and_names_the_cache_as_bypassed(
    database_url, start_app, private_redis
):
    settings = replica_settings(database_url, private_redis.url, near=True, REDIS_TIMEOUT_SECONDS="0.2")
    async with replica(start_app, settings) as one:
        await near_serving(one)
        private_redis.stop()
        user_id = await new_user(one.users)
        await user_of(one, user_id)
        give_up = time.monotonic() + 10
        while await cache_in_use(one):
            assert time.monotonic() < give_up, "the cache's health never said it was bypassed"
            await asyncio.sleep(0.02)
        assert await health_of(one, "") == SERVING, "Redis down costs speed, not truth: the replica still serves"
        assert one.app.metrics_registry.get_sample_value("dataservice_cache_breaker_open") == 1
        private_redis.start()
        give_up = time.monotonic() + 10
        while not await cache_in_use(one):
            assert time.monotonic() < give_up, "the cache never came back into use"
            await asyncio.sleep(0.05)
        assert one.app.metrics_registry.get_sample_value("dataservice_cache_breaker_open") == 0


async def test_a_redis_that_refuses_tracking_turns_the_near_cache_off_and_keeps_the_shared_cache(
    database_url, start_app, private_redis, caplog
):
    """A Redis user not allowed CLIENT TRACKING (a managed Redis may forbid it): the near cache says so once and
    stays off, and the shared cache is used as usual instead of being bypassed again and again."""
    admin = redis.Redis.from_url(private_redis.url)
    await admin.execute_command("ACL", "SETUSER", "svc", "on", ">svc-password", "~*", "&*", "+@all", "-client|tracking")
    await admin.aclose()
    url = f"redis://svc:svc-password@127.0.0.1:{private_redis.port}/0"
    async with replica(start_app, replica_settings(database_url, url, near=True)) as one:
        user_id = await new_user(one.users)
        await warm(lambda: user_of(one, user_id))
        await asyncio.sleep(1.0)  # long enough for several attempts at the stream, were it retried
        await warm(lambda: user_of(one, user_id))
        registry = one.app.metrics_registry
        assert registry.get_sample_value("dataservice_cache_near_enabled") == 0
        assert registry.get_sample_value("dataservice_cache_hits_total", {"entity": "user", "tier": "shared"}) >= 5
        assert await cache_in_use(one)
    refusals = [record for record in caplog.records if "refuses server-assisted invalidation" in record.getMessage()]
    assert len(refusals) == 1
    assert not [record for record in caplog.records if record.getMessage() == "cache unavailable"]
