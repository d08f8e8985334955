"""The cache never answers what a write replaced: on the writer's replica at once, on another replica within the
near cache's stated bound, after a writer killed between commit and invalidation, and around Redis outages.

Every test runs real replicas (in-process Apps, or a server process where one must be killed) on one database
and a private Redis.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import grpc
import pytest
import redis.asyncio as redis
from dataservice.v1 import content_service_pb2 as content_pb
from dataservice.v1 import content_service_pb2_grpc
from dataservice.v1 import session_service_pb2 as session_pb
from dataservice.v1 import session_service_pb2_grpc
from dataservice.v1 import user_service_pb2 as user_pb
from dataservice.v1 import user_service_pb2_grpc
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2_grpc

from server.app import App
from server.cache import keys
from server.cache.base import MISSING
from server.config import Settings
from tests.backends import free_port
from tests.harness import REPO, new_user, settings_for, unique_email
from tests.tcp_proxy import TcpProxy, tcp_opener
from tests.test_shutdown import wait_serving

HEARTBEAT_SECONDS = 0.1
MAX_LAG_SECONDS = 0.4
BOUND_SECONDS = HEARTBEAT_SECONDS + MAX_LAG_SECONDS  # the stated cross-replica bound (server/cache/near.py)
# What the bound is checked with: the bound plus room for a loaded test machine to schedule the replicas.
CHECK_SECONDS = BOUND_SECONDS + 1.0
PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Replica:
    app: App
    users: user_service_pb2_grpc.UserServiceStub
    sessions: session_service_pb2_grpc.SessionServiceStub
    contents: content_service_pb2_grpc.ContentServiceStub


def replica_settings(database_url: str, redis_url: str, *, near: bool, **overrides: str) -> Settings:
    return settings_for(
        database_url,
        REDIS_URL=redis_url,
        CACHE_NEAR="true" if near else "false",
        CACHE_NEAR_HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS),
        CACHE_NEAR_MAX_LAG_SECONDS=str(MAX_LAG_SECONDS),
        **overrides,
    )


@asynccontextmanager
async def replica(start_app, settings: Settings) -> AsyncIterator[Replica]:
    app = await start_app(settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield Replica(
            app,
            user_service_pb2_grpc.UserServiceStub(channel),
            session_service_pb2_grpc.SessionServiceStub(channel),
            content_service_pb2_grpc.ContentServiceStub(channel),
        )


def process_hits(app: App) -> float:
    return sum(
        sample.value
        for metric in app.metrics_registry.collect()
        if metric.name == "dataservice_cache_hits"
        for sample in metric.samples
        if sample.name == "dataservice_cache_hits_total" and sample.labels["tier"] == "process"
    )


async def near_serving(*replicas: Replica) -> None:
    """Waits until each replica's near cache follows Redis's reports (a few heartbeats after start)."""
    for one in replicas:
        give_up = time.monotonic() + 10
        while one.app.cache_metrics.near_enabled._value.get() != 1:
            assert time.monotonic() < give_up, "the near cache never started serving"
            await asyncio.sleep(0.02)


async def within(seconds: float, fresh: Callable[[], Awaitable[bool]], what: str) -> None:
    """Polls ``fresh`` until it is true; fails after ``seconds``."""
    give_up = time.monotonic() + seconds
    while not await fresh():
        assert time.monotonic() < give_up, f"{what}: still stale after {seconds} s"
        await asyncio.sleep(0.01)


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


async def code_of(call: Awaitable[object]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def user_of(one: Replica, user_id: str) -> user_pb.User | None:
    try:
        return (await one.users.GetUser(user_pb.GetUserRequest(id=user_id), timeout=5)).user
    except grpc.aio.AioRpcError as error:
        assert error.code() is grpc.StatusCode.NOT_FOUND
        return None


async def lookup(one: Replica, email: str) -> user_pb.User | None:
    try:
        return (await one.users.LookupUser(user_pb.LookupUserRequest(email=email), timeout=5)).user
    except grpc.aio.AioRpcError as error:
        assert error.code() is grpc.StatusCode.NOT_FOUND
        return None


async def session_of(one: Replica, token: str) -> session_pb.Session | None:
    try:
        return (await one.sessions.GetSession(session_pb.GetSessionRequest(token=token), timeout=5)).session
    except grpc.aio.AioRpcError as error:
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        return None


async def content_of(one: Replica, content_id: str) -> content_pb.Content | None:
    try:
        return (await one.contents.GetContent(content_pb.GetContentRequest(id=content_id), timeout=5)).content
    except grpc.aio.AioRpcError as error:
        assert error.code() is grpc.StatusCode.NOT_FOUND
        return None


async def batch_of(one: Replica, content_id: str) -> content_pb.Content | None:
    answer = await one.contents.BatchGetContents(content_pb.BatchGetContentsRequest(ids=[content_id]), timeout=5)
    return answer.contents[0] if answer.contents else None


async def login(one: Replica, user_id: str, request_id: str = "") -> session_pb.CreateSessionResponse:
    return await one.sessions.CreateSession(
        session_pb.CreateSessionRequest(session=session_pb.Session(user_id=user_id), request_id=request_id)
    )


async def warm(*reads: Callable[[], Awaitable[object]]) -> None:
    """Reads each thing three times: a miss fills Redis, a Redis hit fills the near cache, then it serves."""
    for _ in range(3):
        for read in reads:
            await read()


# A write path: given the writer A and another replica B, it creates what it needs, reads it through both so
# that both cache it, writes through A, and returns the check that a replica reads the write's outcome.
Fresh = Callable[[Replica], Awaitable[bool]]
WritePath = Callable[[Replica, Replica], Awaitable[Fresh]]


async def update_user(a: Replica, b: Replica) -> Fresh:
    user_id = await new_user(a.users)
    email = (await user_of(a, user_id)).email
    await warm(*(lambda one=one: user_of(one, user_id) for one in (a, b)), *(lambda one=one: lookup(one, email) for one in (a, b)))
    change = user_pb.User(id=user_id, display_name="Renamed")
    updated = (await a.users.UpdateUser(user_pb.UpdateUserRequest(user=change, update_mask=mask("display_name")))).user
    return lambda one: _all(user_of(one, user_id), lookup(one, email), expected=updated)


async def change_email(a: Replica, b: Replica) -> Fresh:
    user_id = await new_user(a.users)
    old_email, new_email = (await user_of(a, user_id)).email, unique_email("moved")
    reads = [lambda one=one, email=email: lookup(one, email) for one in (a, b) for email in (old_email, new_email)]
    await warm(*reads)  # the new email is cached as "no such user"
    change = user_pb.User(id=user_id, email=new_email)
    updated = (await a.users.UpdateUser(user_pb.UpdateUserRequest(user=change, update_mask=mask("email")))).user

    async def fresh(one: Replica) -> bool:
        return await lookup(one, old_email) is None and await lookup(one, new_email) == updated

    return fresh


async def create_user_after_lookup(a: Replica, b: Replica) -> Fresh:
    email = unique_email("later")
    await warm(*(lambda one=one: lookup(one, email) for one in (a, b)))  # "no such user", cached
    created = (await a.users.CreateUser(
        user_pb.CreateUserRequest(user=user_pb.User(email=email, display_name="Later"), password=PASSWORD))).user
    return lambda one: _all(lookup(one, email), expected=created)


async def change_password(a: Replica, b: Replica) -> Fresh:
    user_id = await new_user(a.users)
    await warm(*(lambda one=one: user_of(one, user_id) for one in (a, b)))
    before = await user_of(a, user_id)
    await a.users.ChangePassword(
        user_pb.ChangePasswordRequest(id=user_id, old_password=PASSWORD, new_password="another long password"))

    async def fresh(one: Replica) -> bool:
        return (await user_of(one, user_id)).etag != before.etag  # the row's version moved

    return fresh


async def delete_user(a: Replica, b: Replica) -> Fresh:
    user_id = await new_user(a.users)
    token = (await login(a, user_id)).token
    content_id = (await a.contents.CreateContent(
        content_pb.CreateContentRequest(content=content_pb.Content(author_id=user_id, title="Theirs")))).content.id
    reads = [
        read
        for one in (a, b)
        for read in (
            lambda one=one: user_of(one, user_id),
            lambda one=one: session_of(one, token),
            lambda one=one: content_of(one, content_id),
        )
    ]
    await warm(*reads)
    await a.users.DeleteUser(user_pb.DeleteUserRequest(id=user_id))
    return lambda one: _all(user_of(one, user_id), session_of(one, token), content_of(one, content_id), expected=None)


async def revoke_by_token(a: Replica, b: Replica) -> Fresh:
    token = (await login(a, await new_user(a.users))).token
    await warm(*(lambda one=one: session_of(one, token) for one in (a, b)))
    await a.sessions.DeleteSession(session_pb.DeleteSessionRequest(token=token))
    return lambda one: _all(session_of(one, token), expected=None)


async def revoke_by_id(a: Replica, b: Replica) -> Fresh:
    issued = await login(a, await new_user(a.users))
    await warm(*(lambda one=one: session_of(one, issued.token) for one in (a, b)))
    await a.sessions.DeleteSession(session_pb.DeleteSessionRequest(id=issued.session.id))
    return lambda one: _all(session_of(one, issued.token), expected=None)


async def revoke_all(a: Replica, b: Replica) -> Fresh:
    user_id = await new_user(a.users)
    tokens = [(await login(a, user_id)).token for _ in range(3)]
    await warm(*(lambda one=one, token=token: session_of(one, token) for one in (a, b) for token in tokens))
    await a.sessions.DeleteUserSessions(session_pb.DeleteUserSessionsRequest(user_id=user_id))
    return lambda one: _all(*(session_of(one, token) for token in tokens), expected=None)


async def reissue_token(a: Replica, b: Replica) -> Fresh:
    user_id, request_id = await new_user(a.users), str(uuid.uuid4())
    first = (await login(a, user_id, request_id)).token
    await warm(*(lambda one=one: session_of(one, first) for one in (a, b)))
    await login(a, user_id, request_id)  # the retry replaces the token
    return lambda one: _all(session_of(one, first), expected=None)


async def refresh_session(a: Replica, b: Replica) -> Fresh:
    issued = await login(a, await new_user(a.users))
    await warm(*(lambda one=one: session_of(one, issued.token) for one in (a, b)))
    refreshed = (await a.sessions.RefreshSession(session_pb.RefreshSessionRequest(token=issued.token))).session
    assert refreshed.expire_time != issued.session.expire_time

    async def fresh(one: Replica) -> bool:
        seen = await session_of(one, issued.token)
        return seen is not None and seen.expire_time == refreshed.expire_time

    return fresh


async def update_content(a: Replica, b: Replica) -> Fresh:
    made = (await a.contents.CreateContent(content_pb.CreateContentRequest(
        content=content_pb.Content(author_id=await new_user(a.users), title="Before")))).content
    await warm(*(read for one in (a, b) for read in (lambda one=one: content_of(one, made.id), lambda one=one: batch_of(one, made.id))))
    updated = (await a.contents.UpdateContent(content_pb.UpdateContentRequest(
        content=content_pb.Content(id=made.id, title="After"), update_mask=mask("title")))).content
    return lambda one: _all(content_of(one, made.id), batch_of(one, made.id), expected=updated)


async def delete_content(a: Replica, b: Replica) -> Fresh:
    made = (await a.contents.CreateContent(content_pb.CreateContentRequest(
        content=content_pb.Content(author_id=await new_user(a.users), title="Gone soon")))).content
    await warm(*(read for one in (a, b) for read in (lambda one=one: content_of(one, made.id), lambda one=one: batch_of(one, made.id))))
    await a.contents.DeleteContent(content_pb.DeleteContentRequest(id=made.id))
    return lambda one: _all(content_of(one, made.id), batch_of(one, made.id), expected=None)


async def _all(*reads: Awaitable[object], expected: object) -> bool:
    return all([await read == expected for read in reads])


WRITE_PATHS: dict[str, WritePath] = {
    "UpdateUser": update_user,
    "UpdateUser email": change_email,
    "CreateUser after a lookup": create_user_after_lookup,
    "ChangePassword": change_password,
    "DeleteUser": delete_user,
    "DeleteSession by token": revoke_by_token,
    "DeleteSession by id": revoke_by_id,
    "DeleteUserSessions": revoke_all,
    "CreateSession retry": reissue_token,
    "RefreshSession": refresh_session,
    "UpdateContent": update_content,
    "DeleteContent": delete_content,
}


@pytest.mark.parametrize("near", [True, False], ids=["near", "redis-only"])
@pytest.mark.parametrize("write", WRITE_PATHS.values(), ids=WRITE_PATHS.keys())
async def test_a_write_is_read_back_at_once_on_its_replica_and_within_the_bound_on_another(
    write, near, database_url, start_app, private_redis
):
    async with (
        replica(start_app, replica_settings(database_url, private_redis.url, near=near)) as a,
        replica(start_app, replica_settings(database_url, private_redis.url, near=near)) as b,
    ):
        if near:
            await near_serving(a, b)
        fresh = await write(a, b)
        assert await fresh(a), "the writer's replica answered what its write replaced"
        # Without a near cache there is nothing to wait for: B reads Redis, which the write invalidated.
        await within(CHECK_SECONDS if near else 0, lambda: fresh(b), "another replica")
        if near:
            assert process_hits(a.app) and process_hits(b.app), "the near caches served the warm reads"


async def test_a_writer_killed_between_commit_and_invalidation_leaves_no_stale_entry_past_the_sweep(
    new_database, start_app, private_redis
):
    """Replica B caches a user. A server process whose invalidations never reach Redis (its REDIS_URL names a
    port where nothing listens, so the delete after its commit fails and waits for a retry) updates the user
    and is killed with SIGKILL before any retry. B must answer the update once its sweep has made the recorded
    invalidation: within the grace plus the sweep interval.

    A database of its own: the replicas of other tests, which share the suite's database but not this Redis,
    would otherwise sweep the record into their own Redis (a deployment's replicas share one Redis)."""
    database_url = await new_database()
    grace, interval = 1.5, 0.2
    settings = replica_settings(
        database_url, private_redis.url, near=True,
        CACHE_OUTBOX_GRACE_SECONDS=str(grace), CACHE_OUTBOX_SWEEP_SECONDS=str(interval),
    )
    async with replica(start_app, settings) as b:
        await near_serving(b)
        user_id = await new_user(b.users)
        await warm(lambda: user_of(b, user_id))
        before = await user_of(b, user_id)

        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "GRPC_ADDRESS": f"127.0.0.1:{port}",
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "CACHE_OUTBOX_SWEEP_SECONDS": "0",
            "PASSWORD_HASH_TIME_COST": "1",
            "PASSWORD_HASH_MEMORY_KIB": "1024",
            "LOG_LEVEL": "ERROR",
        }
        writer = await asyncio.create_subprocess_exec(sys.executable, "-m", "server", cwd=REPO, env=env)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await wait_serving(health_pb2_grpc.HealthStub(channel))
                change = user_pb.User(id=user_id, display_name="Written by the killed replica")
                updated = (await user_service_pb2_grpc.UserServiceStub(channel).UpdateUser(
                    user_pb.UpdateUserRequest(user=change, update_mask=mask("display_name")), timeout=10)).user
            writer.send_signal(signal.SIGKILL)
            await writer.wait()
        finally:
            if writer.returncode is None:
                writer.kill()
                await writer.wait()
        assert await user_of(b, user_id) == before, "the entry is stale until the sweep (else the test proves nothing)"
        await within(grace + interval + CHECK_SECONDS, lambda: _all(user_of(b, user_id), expected=updated), "after the kill")


async def test_a_fill_read_before_a_write_is_refused(database_url, start_app, private_redis, db):
    """The stale fill, forced: reader R misses and takes the lease, its database read waits on a table lock; the
    test stops R's traffic to Redis, lets the read through (it reads the old row), and while R's fill is held on
    the way to Redis, writer W updates the user and invalidates. R's fill then arrives and must be refused."""
    proxy = TcpProxy(tcp_opener("127.0.0.1", private_redis.port))
    await proxy.start()
    try:
        r_settings = replica_settings(  # no sweep: nothing but the fill may travel through the proxy
            database_url, f"redis://127.0.0.1:{proxy.port}/0", near=False, REDIS_TIMEOUT_SECONDS="10",
            CACHE_OUTBOX_SWEEP_SECONDS="0",
        )
        async with (
            replica(start_app, r_settings) as r,
            replica(start_app, replica_settings(database_url, private_redis.url, near=False)) as w,
        ):
            user_id = await new_user(w.users)
            lock = db.transaction()
            await lock.start()
            await db.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            reading = asyncio.create_task(user_of(r, user_id))
            await _waiting_on_lock(db, 1)
            proxy.hold_requests()
            await lock.rollback()  # R reads the row as it is, then sends its fill: held
            give_up = time.monotonic() + 10
            while proxy.requests_held == 0:
                assert time.monotonic() < give_up, "R never sent its fill"
                await asyncio.sleep(0.01)
            change = user_pb.User(id=user_id, display_name="Written while the fill was on its way")
            updated = (await w.users.UpdateUser(
                user_pb.UpdateUserRequest(user=change, update_mask=mask("display_name")))).user
            proxy.release_requests()
            stale = await reading
            assert stale.display_name == "Test user"
            assert r.app.metrics_registry.get_sample_value(
                "dataservice_cache_fills_total", {"entity": "user", "outcome": "refused"}) == 1
            assert await user_of(r, user_id) == updated
            assert await user_of(w, user_id) == updated
    finally:
        await proxy.close()


async def _waiting_on_lock(db: asyncpg.Connection, count: int) -> int:
    """Waits until ``count`` backends wait for a lock on the users table; returns how many do."""
    give_up = time.monotonic() + 10
    while True:
        waiting = await db.fetchval(
            "SELECT count(*) FROM pg_locks WHERE relation = 'users'::regclass AND NOT granted")
        if waiting >= count:
            return waiting
        assert time.monotonic() < give_up, f"{waiting} reads wait on the users table, expected {count}"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("near", [True, False], ids=["near", "redis-only"])
async def test_100_concurrent_cold_reads_of_one_key_make_one_database_read(
    near, database_url, start_app, private_redis, db
):
    settings = replica_settings(database_url, private_redis.url, near=near, DB_POOL_MAX_SIZE="20")
    async with replica(start_app, settings) as one:
        user_id = await new_user(one.users)
        lock = db.transaction()
        await lock.start()
        await db.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        reads = [asyncio.create_task(user_of(one, user_id)) for _ in range(100)]
        await _waiting_on_lock(db, 1)
        await asyncio.sleep(0.5)  # room for any further reads to reach PostgreSQL and queue behind the lock
        waiting = await _waiting_on_lock(db, 1)
        await lock.rollback()
        answers = await asyncio.gather(*reads)
        assert waiting == 1
        assert {answer.id for answer in answers} == {user_id}
        joined = one.app.metrics_registry.get_sample_value("dataservice_cache_coalesced_total", {"entity": "user"})
        assert joined == 99


async def test_no_such_row_is_cached_and_the_write_that_makes_it_clears_it(database_url, start_app, private_redis):
    async with replica(start_app, replica_settings(database_url, private_redis.url, near=False)) as one:
        email = unique_email("absent")
        assert await lookup(one, email) is None
        assert await lookup(one, email) is None
        admin = redis.Redis.from_url(private_redis.url)
        try:
            stored = await admin.get(keys.user_email(email))
            unknown = str(uuid.uuid4())
            assert await content_of(one, unknown) is None
            missing_content = await admin.get(keys.content(uuid.UUID(unknown)))
        finally:
            await admin.aclose()
        assert stored is not None and stored.endswith(b"|" + MISSING), "NOT_FOUND is cached"
        assert missing_content is not None and missing_content.endswith(b"|" + MISSING)
        assert one.app.metrics_registry.get_sample_value(
            "dataservice_cache_hits_total", {"entity": "user-email", "tier": "shared"}) == 1
        created = (await one.users.CreateUser(
            user_pb.CreateUserRequest(user=user_pb.User(email=email, display_name="Here now"), password=PASSWORD))).user
        assert await lookup(one, email) == created


async def _round_trips(admin: redis.Redis) -> int:
    """Commands the cache sent so far: each read, lease and fill is one MGET or one script call. (What a script
    calls inside Redis is counted under those commands' own names, GET and SET, so they are left out.)"""
    stats = await admin.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("eval", "evalsha", "mget"))


async def test_warm_lookups_and_batches_are_one_redis_round_trip_and_a_cold_batch_three(
    database_url, start_app, private_redis
):
    """Counted by Redis itself (INFO commandstats), without a near cache, whose heartbeats would count too."""
    async with replica(start_app, replica_settings(database_url, private_redis.url, near=False)) as one:
        user_id = await new_user(one.users)
        email = (await user_of(one, user_id)).email
        author = await new_user(one.users)
        ids = [(await one.contents.CreateContent(content_pb.CreateContentRequest(
            content=content_pb.Content(author_id=author, title=f"Item {index}")))).content.id for index in range(20)]
        batch = content_pb.BatchGetContentsRequest(ids=ids)
        await warm(lambda: lookup(one, email))
        admin = redis.Redis.from_url(private_redis.url)
        try:
            before = await _round_trips(admin)
            assert (await lookup(one, email)).id == user_id
            after_lookup = await _round_trips(admin)
            cold = await one.contents.BatchGetContents(batch)
            after_cold = await _round_trips(admin)
            warm_answer = await one.contents.BatchGetContents(batch)
            after_warm = await _round_trips(admin)
        finally:
            await admin.aclose()
        # INFO itself is counted by Redis under its own name, not among these.
        assert after_lookup - before == 1, "a warm LookupUser: one round trip"
        assert after_cold - after_lookup == 3, "a cold batch: one MGET, one round trip for the leases, one fill"
        assert after_warm - after_cold == 1, "a warm batch: one MGET"
        assert [content.id for content in warm_answer.contents] == ids
        assert warm_answer == cold
