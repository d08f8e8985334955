"""The read-through cache: never stale after a write, leases refuse stale fills, Redis down is only slower."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import redis.asyncio as redis
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc
from google.protobuf import field_mask_pb2
from prometheus_client import CollectorRegistry

from server.cache import keys
from server.cache import redis as cache_redis
from server.cache.base import Cache, Lookup
from server.cache.memory import MemoryCache
from server.cache.metrics import CacheMetrics
from server.cache.redis import RedisCache
from tests.backends import RedisServer, free_port
from tests.harness import settings_for, unique_email

PASSWORD = "long enough password"


@pytest.fixture(params=["redis", "memory"])
async def cached_users(request, database_url, redis_url, start_app) -> AsyncIterator[user_service_pb2_grpc.UserServiceStub]:
    """UserService stubs of a server whose cache is Redis, then the in-process cache."""
    overrides = {"REDIS_URL": redis_url} if request.param == "redis" else {"CACHE_BACKEND": "memory"}
    app = await start_app(settings_for(database_url, **overrides))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield user_service_pb2_grpc.UserServiceStub(channel)


async def make_user(users) -> pb.User:
    request = pb.CreateUserRequest(user=pb.User(email=unique_email("cache"), display_name="Cached"), password=PASSWORD)
    return (await users.CreateUser(request)).user


async def get(users, user_id: str) -> pb.User:
    return (await users.GetUser(pb.GetUserRequest(id=user_id))).user


async def test_a_read_after_update_returns_the_update_even_when_cached(cached_users):
    user = await make_user(cached_users)
    assert await get(cached_users, user.id) == user  # fills the cache; the update below must invalidate it
    mask = field_mask_pb2.FieldMask(paths=["display_name"])
    updated = (await cached_users.UpdateUser(
        pb.UpdateUserRequest(user=pb.User(id=user.id, display_name="Renamed"), update_mask=mask))).user
    assert await get(cached_users, user.id) == updated


async def test_a_read_after_delete_is_not_found_even_when_cached(cached_users):
    user = await make_user(cached_users)
    await get(cached_users, user.id)
    await cached_users.DeleteUser(pb.DeleteUserRequest(id=user.id))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await get(cached_users, user.id)
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND


async def test_a_password_change_moves_the_cached_etag(cached_users):
    user = await make_user(cached_users)
    await get(cached_users, user.id)
    await cached_users.ChangePassword(pb.ChangePasswordRequest(id=user.id, old_password=PASSWORD, new_password="another password"))
    assert (await get(cached_users, user.id)).etag != user.etag


async def test_lookup_follows_an_email_change_and_a_reused_email(cached_users):
    first = await make_user(cached_users)
    old_email = first.email
    assert (await cached_users.LookupUser(pb.LookupUserRequest(email=old_email))).user.id == first.id
    mask = field_mask_pb2.FieldMask(paths=["email"])
    await cached_users.UpdateUser(pb.UpdateUserRequest(user=pb.User(id=first.id, email=unique_email()), update_mask=mask))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await cached_users.LookupUser(pb.LookupUserRequest(email=old_email))
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND
    second = (await cached_users.CreateUser(
        pb.CreateUserRequest(user=pb.User(email=old_email, display_name="Second"), password=PASSWORD))).user
    assert (await cached_users.LookupUser(pb.LookupUserRequest(email=old_email.upper()))).user.id == second.id


@pytest.fixture(params=["redis", "memory"])
async def cache(request, redis_url) -> AsyncIterator[Cache]:
    cache = RedisCache(redis_url, CacheMetrics(CollectorRegistry()), timeout_seconds=1.0) if request.param == "redis" else MemoryCache()
    yield cache
    await cache.aclose()


async def test_a_fill_after_an_invalidation_is_refused(cache):
    """The stale-fill interleaving, forced step by step: slow reader misses, writer commits and
    invalidates, reader tries to fill with what it read before the write."""
    key = keys.user(uuid.uuid4())
    reader = await cache.get_or_lease(key)
    assert reader.value is None and reader.lease is not None
    await cache.invalidate(key)  # the writer, after its commit
    assert await cache.fill(key, reader.lease, b"stale", 60) is False
    assert (await cache.get_or_lease(key)).value is None


async def test_one_lease_per_key_and_the_holder_fills(cache):
    key = keys.user(uuid.uuid4())
    holder = await cache.get_or_lease(key)
    other = await cache.get_or_lease(key)
    assert holder.lease and other.lease is None and other.value is None
    assert await cache.fill(key, holder.lease, b"fresh", 60)
    assert (await cache.get_or_lease(key)).value == b"fresh"


async def test_redis_entries_are_namespaced_serialized_users_tagged_with_the_epoch(users, redis_url):
    """The suite's shared server caches in Redis; its entries follow the documented key format."""
    user = await make_user(users)
    await get(users, user.id)
    client = redis.Redis.from_url(redis_url)
    try:
        stored = await client.get(keys.user(uuid.UUID(user.id)))
        epoch = await client.get(keys.EPOCH)
        run_id = (await client.info("server"))["run_id"]
    finally:
        await client.aclose()
    tag, _, serialized = stored.partition(b"|")
    assert tag == epoch == run_id.encode()
    assert pb.User.FromString(serialized) == user


async def test_every_rpc_still_works_when_redis_is_unreachable(database_url, start_app):
    app = await start_app(settings_for(database_url, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        user = await make_user(users)
        assert (await get(users, user.id)).id == user.id
        assert (await users.LookupUser(pb.LookupUserRequest(email=user.email))).user.id == user.id
        mask = field_mask_pb2.FieldMask(paths=["display_name"])
        await users.UpdateUser(pb.UpdateUserRequest(user=pb.User(id=user.id, display_name="Still"), update_mask=mask))
        await users.DeleteUser(pb.DeleteUserRequest(id=user.id))


async def test_a_redis_pause_slows_calls_and_the_delayed_invalidation_lands_after_it(database_url, start_app, private_redis):
    """Redis stops answering writes (CLIENT PAUSE) while a user is updated: every call still answers within
    its deadline (reads time out on Redis and go to PostgreSQL), and once Redis answers again the delayed
    invalidation removes the stale entry. (The bypass of a key whose invalidation failed while Redis still
    serves reads is the next test's subject.)"""
    app = await start_app(settings_for(database_url, REDIS_URL=private_redis.url, REDIS_TIMEOUT_SECONDS="0.2"))
    admin = redis.Redis.from_url(private_redis.url)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        user, bystander = await make_user(users), await make_user(users)
        await get(users, user.id)
        key = keys.user(uuid.UUID(user.id))
        assert await admin.exists(key), "the read filled the cache"

        await admin.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
        mask = field_mask_pb2.FieldMask(paths=["display_name"])
        updated = (await users.UpdateUser(
            pb.UpdateUserRequest(user=pb.User(id=user.id, display_name="During pause"), update_mask=mask),
            timeout=5)).user
        assert (await users.GetUser(pb.GetUserRequest(id=user.id), timeout=5)).user == updated
        assert (await users.GetUser(pb.GetUserRequest(id=bystander.id), timeout=5)).user == bystander

        deadline = asyncio.get_running_loop().time() + 10
        while await admin.exists(key):  # the background retry lands once the pause is over
            assert asyncio.get_running_loop().time() < deadline, "the delayed invalidation never landed"
            await asyncio.sleep(0.1)
        assert await get(users, user.id) == updated
    await admin.aclose()


async def test_a_lost_invalidation_is_retried_and_its_key_bypassed_until_then(database_url, start_app, private_redis):
    """Redis serves reads but refuses the DEL of an invalidation (here: an ACL that forbids DEL for a while).
    The writer's process must not serve the entry its write replaced, and must delete it once Redis lets it."""
    admin = redis.Redis.from_url(private_redis.url)
    await admin.execute_command("ACL", "SETUSER", "svc", "on", ">svc-password", "~*", "&*", "+@all")
    service_url = f"redis://svc:svc-password@127.0.0.1:{private_redis.port}/0"
    app = await start_app(settings_for(database_url, REDIS_URL=service_url))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        user = await make_user(users)
        await get(users, user.id)
        key = keys.user(uuid.UUID(user.id))
        assert await admin.exists(key)

        await admin.execute_command("ACL", "SETUSER", "svc", "-del")
        mask = field_mask_pb2.FieldMask(paths=["display_name"])
        updated = (await users.UpdateUser(
            pb.UpdateUserRequest(user=pb.User(id=user.id, display_name="After"), update_mask=mask))).user
        assert await admin.exists(key), "the invalidation really failed"
        assert await get(users, user.id) == updated

        await admin.execute_command("ACL", "SETUSER", "svc", "+del")
        deadline = asyncio.get_running_loop().time() + 10
        while await admin.exists(key):
            assert asyncio.get_running_loop().time() < deadline, "the delayed invalidation never landed"
            await asyncio.sleep(0.1)
        assert await get(users, user.id) == updated
    await admin.aclose()


async def test_a_retry_in_flight_does_not_confirm_a_newer_failed_invalidation(private_redis, monkeypatch):
    """W1's invalidation fails; its retry's DEL lands but its reply is slow; meanwhile another replica fills
    W1 and W2's invalidation fails too. When the retry's reply arrives, the key must stay bypassed (W2's
    delete is still owed), or the writer would serve W1 after its own W2. Redis faults are injected into the
    writer's client; Redis itself is real."""
    monkeypatch.setattr(cache_redis, "_PROBE_FIRST_SECONDS", 0.001)
    writer = RedisCache(private_redis.url, CacheMetrics(CollectorRegistry()), timeout_seconds=0.5)
    other_replica = RedisCache(private_redis.url, CacheMetrics(CollectorRegistry()), timeout_seconds=0.5)
    key = keys.user(uuid.uuid4())
    real_delete = writer._client.delete
    attempts = 0
    retry_landed, let_retry_return = asyncio.Event(), asyncio.Event()

    async def delete(*names: str) -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 2:  # the background retry: executes in Redis, answers late
            deleted = await real_delete(*names)
            retry_landed.set()
            await let_retry_return.wait()
            return deleted
        raise redis.ConnectionError("injected: connection lost")  # W1's and W2's invalidations

    monkeypatch.setattr(writer._client, "delete", delete)
    await writer.invalidate(key)  # W1
    await retry_landed.wait()
    lease = (await other_replica.get_or_lease(key)).lease
    assert await other_replica.fill(key, lease, b"W1", 60)
    await writer.invalidate(key)  # W2
    let_retry_return.set()
    await asyncio.sleep(0.1)
    assert (await writer.get_or_lease(key)).value is None
    await writer.aclose()
    await other_replica.aclose()


async def test_invalidations_still_owed_at_shutdown_are_made_before_closing(private_redis, monkeypatch):
    admin = redis.Redis.from_url(private_redis.url)
    key = keys.user(uuid.uuid4())
    await admin.set(key, b"replaced by a committed write")
    cache = RedisCache(private_redis.url, CacheMetrics(CollectorRegistry()), timeout_seconds=0.5)
    real_delete = cache._client.delete
    failures = iter([True])

    async def delete(*names: str) -> int:
        if next(failures, False):
            raise redis.ConnectionError("injected: connection lost")
        return await real_delete(*names)

    monkeypatch.setattr(cache_redis, "_PROBE_FIRST_SECONDS", 60.0)  # the retry would come too late
    monkeypatch.setattr(cache._client, "delete", delete)
    await cache.invalidate(key)
    await cache.aclose()  # SIGTERM right after the write
    assert not await admin.exists(key)
    await admin.aclose()


@pytest.fixture
def snapshotting_redis() -> Iterator[RedisServer]:
    """A private Redis that persists as Redis does by default: a restart loads its last snapshot."""
    server = RedisServer(snapshots=True)
    yield server
    server.close()


async def run_id_of(url: str) -> bytes:
    client = redis.Redis.from_url(url)
    try:
        return (await client.info("server"))["run_id"].encode()
    finally:
        await client.aclose()


async def test_entries_restored_from_an_older_snapshot_are_never_served(
    database_url, start_app, snapshotting_redis, caplog
):
    """Redis snapshots while a user's entries are cached, acknowledges the invalidation of an update, is
    killed and restarts from the snapshot, which brings the replaced entries back. Reads must return the update,
    and the cache must fill and serve again under the new server."""
    caplog.set_level(logging.WARNING, logger=cache_redis.__name__)
    app = await start_app(settings_for(database_url, REDIS_URL=snapshotting_redis.url))
    admin = redis.Redis.from_url(snapshotting_redis.url)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        user = await make_user(users)
        await get(users, user.id)
        await users.LookupUser(pb.LookupUserRequest(email=user.email))
        user_key, email_key = keys.user(uuid.UUID(user.id)), keys.user_email(user.email)
        assert await admin.exists(user_key, email_key) == 2, "the reads filled the cache"
        await admin.save()

        mask = field_mask_pb2.FieldMask(paths=["display_name"])
        updated = (await users.UpdateUser(
            pb.UpdateUserRequest(user=pb.User(id=user.id, display_name="After the snapshot"), update_mask=mask))).user
        assert not await admin.exists(user_key), "the live Redis acknowledged the invalidation"
        await admin.aclose()

        snapshotting_redis.kill()
        snapshotting_redis.start()
        admin = redis.Redis.from_url(snapshotting_redis.url)
        assert await admin.exists(user_key, email_key) == 2, "the snapshot brought the replaced entries back"

        run_id = await run_id_of(snapshotting_redis.url)
        refilled: list[bytes] = []
        for _ in range(100):  # the first call after the restart fails on a dead connection, and the breaker
            assert await get(users, user.id) == updated  # then sends reads to PostgreSQL until a probe succeeds
            assert (await users.LookupUser(pb.LookupUserRequest(email=user.email))).user == updated
            refilled = [key for key in (user_key, email_key) if (await admin.get(key) or b"").startswith(run_id + b"|")]
            if len(refilled) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(refilled) == 2, "refilled under the new server's epoch"
    await admin.aclose()
    restarts = [record for record in caplog.records if "restarted" in record.getMessage()]
    assert len(restarts) == 1 and restarts[0].run_id == run_id.decode()


async def test_a_lease_restored_from_an_older_snapshot_cannot_fill(snapshotting_redis):
    """A slow reader takes a lease, Redis snapshots, a writer's invalidation deletes the lease, and Redis
    crashes and restarts from the snapshot, lease included. The reader's fill, with what it read before the
    write, must be refused."""
    reader = RedisCache(snapshotting_redis.url, CacheMetrics(CollectorRegistry()), timeout_seconds=1.0)
    key = keys.user(uuid.uuid4())
    lease = (await reader.get_or_lease(key)).lease
    assert lease is not None
    await reader.aclose()
    admin = redis.Redis.from_url(snapshotting_redis.url)
    await admin.save()
    writer = RedisCache(snapshotting_redis.url, CacheMetrics(CollectorRegistry()), timeout_seconds=1.0)
    await writer.invalidate(key)
    await writer.aclose()
    await admin.aclose()

    snapshotting_redis.kill()
    snapshotting_redis.start()
    admin = redis.Redis.from_url(snapshotting_redis.url)
    assert await admin.exists(keys.lease(key)), "the snapshot brought the deleted lease back"
    reader = RedisCache(snapshotting_redis.url, CacheMetrics(CollectorRegistry()), timeout_seconds=1.0)  # the token is all a fill needs
    assert await reader.fill(key, lease, b"read before the write", 60) is False
    assert (await reader.get_or_lease(key)).value is None
    await reader.aclose()
    await admin.aclose()


async def test_entries_stay_valid_when_the_epoch_key_alone_is_lost(private_redis):
    """The epoch key evicted or deleted on the live server: what was cached on it stays valid (that server
    applied every invalidation since), and new entries are filled and served."""
    cache = RedisCache(private_redis.url, CacheMetrics(CollectorRegistry()), timeout_seconds=1.0)
    cached, new = keys.user(uuid.uuid4()), keys.user(uuid.uuid4())
    assert await cache.fill(cached, (await cache.get_or_lease(cached)).lease, b"cached", 60)
    admin = redis.Redis.from_url(private_redis.url)
    await admin.delete(keys.EPOCH)
    assert (await cache.get_or_lease(cached)).value == b"cached"
    assert await admin.get(keys.EPOCH) == await run_id_of(private_redis.url)
    assert await cache.fill(new, (await cache.get_or_lease(new)).lease, b"new", 60)
    assert (await cache.get_or_lease(new)).value == b"new"
    await cache.aclose()
    await admin.aclose()


async def test_a_redis_outage_is_logged_once_and_its_end_once(database_url, start_app, private_redis, caplog):
    """Redis down: every RPC still succeeds, and the cache logs the outage's start, not a line per call; once
    Redis is back, one line says so."""
    caplog.set_level(logging.INFO, logger=cache_redis.__name__)
    app = await start_app(settings_for(database_url, REDIS_URL=private_redis.url))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        user = await make_user(users)
        await get(users, user.id)

        private_redis.stop()
        mask = field_mask_pb2.FieldMask(paths=["display_name"])
        for i in range(50):
            if i % 5 == 0:
                await users.UpdateUser(
                    pb.UpdateUserRequest(user=pb.User(id=user.id, display_name=f"Outage {i}"), update_mask=mask))
            elif i % 5 == 1:
                await users.LookupUser(pb.LookupUserRequest(email=user.email))
            else:
                await get(users, user.id)
        during = [record.getMessage() for record in caplog.records if record.name == cache_redis.__name__]
        assert during == ["cache unavailable"]

        private_redis.start()
        deadline = asyncio.get_running_loop().time() + 10
        while not [record for record in caplog.records if record.getMessage() == "cache available again"]:
            assert asyncio.get_running_loop().time() < deadline, "the recovery was never logged"
            await get(users, user.id)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        after = [record.getMessage() for record in caplog.records if record.name == cache_redis.__name__]
    assert after.count("cache unavailable") == 1 and after.count("cache available again") == 1
    assert len(after) <= 4, after  # also: Redis restarted, and the delayed invalidations landed


async def test_a_long_redis_outage_is_summarized_once_per_interval(private_redis, caplog):
    """Redis down for several intervals: one line when it goes, then at most one per interval counting the
    failed operations, and one when it is back; together they count every failure. The breaker spares most
    calls the attempt: only its probes fail."""
    caplog.set_level(logging.WARNING, logger=cache_redis.__name__)
    registry = CollectorRegistry()
    cache = RedisCache(private_redis.url, CacheMetrics(registry), timeout_seconds=0.2, outage_summary_seconds=0.2)
    key = keys.user(uuid.uuid4())
    private_redis.stop()
    started = asyncio.get_running_loop().time()
    for _ in range(30):
        assert await cache.get_or_lease(key) == Lookup(None)
        await asyncio.sleep(0.02)
    elapsed = asyncio.get_running_loop().time() - started
    private_redis.start()
    while (await cache.get_or_lease(key)).lease is None:  # until the breaker's next probe
        await asyncio.sleep(0.02)
    await cache.aclose()
    lines = [record for record in caplog.records if record.name == cache_redis.__name__]
    messages = [line.getMessage() for line in lines]
    assert messages[0] == "cache unavailable" and messages[-1] == "cache available again"
    assert set(messages[1:-1]) <= {"cache still unavailable"} and len(messages) - 2 <= elapsed / 0.2
    failures = sum(
        registry.get_sample_value("dataservice_cache_errors_total", {"operation": operation}) or 0
        for operation in ("read", "probe")
    )
    assert sum(line.failed_operations for line in lines) == failures < 30
