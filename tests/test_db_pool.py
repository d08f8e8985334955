"""An exhausted connection pool over the wire: a call that cannot get a connection is answered RESOURCE_EXHAUSTED
(DB_POOL_EXHAUSTED, with RetryInfo) after DB_POOL_ACQUIRE_TIMEOUT_SECONDS, not held until its deadline; a call
whose deadline comes first is answered DEADLINE_EXCEEDED; and while the connection it waited for is still
connecting to a PostgreSQL that does not answer, UNAVAILABLE: the database is away, not the replica busy.

The pool's only connection is kept busy for real: a row lock taken by a connection of the test's own holds an
UpdateUser inside PostgreSQL, on that connection, until the test lets go; or a call connecting through a proxy
(tests/tcp_proxy.py) that leaves connection attempts unanswered.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from urllib.parse import urlsplit

import asyncpg
import grpc
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2

from server.config import Settings
from server.errors import ERROR_DOMAIN
from tests.grpc_errors import error_info, fails, status_of
from tests.harness import quiet_settings_for, unique_email

CALLER_DEADLINE_SECONDS = 10.0


def one_connection_settings(database_url: str, **overrides: str) -> Settings:
    """A server whose pool holds one connection, which only the test's calls take (harness.quiet_settings_for)."""
    return quiet_settings_for(database_url, **{"DB_POOL_MAX_SIZE": "1", "DB_POOL_MIN_SIZE": "1", **overrides})


async def wait_for_lock_waiter(conn: asyncpg.Connection, database: str, within: float = 30.0) -> None:
    """Waits until a session of ``database`` waits for a lock: the blocked write, holding the pool's connection."""
    give_up = time.monotonic() + within
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'"
    while not await conn.fetchval(query, database):
        assert time.monotonic() < give_up, "the write never reached the row lock"
        await asyncio.sleep(0.02)


def retry_delay_seconds(error: grpc.aio.AioRpcError) -> float:
    for detail in status_of(error).details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToTimedelta().total_seconds()
    raise AssertionError(f"{error.code()} without a google.rpc.RetryInfo detail")


async def test_a_call_finding_every_connection_busy_is_resource_exhausted_with_retry_info_and_the_server_recovers(
    new_database, start_app
):
    url = await new_database()
    app = await start_app(one_connection_settings(url))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        created = await users.CreateUser(
            pb.CreateUserRequest(user=pb.User(email=unique_email("pool"), display_name="Ada"), password="long enough"),
            timeout=10,
        )
        user = created.user

        locker = await asyncpg.connect(url)
        try:
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user.id)
            update = asyncio.ensure_future(users.UpdateUser(
                pb.UpdateUserRequest(
                    user=pb.User(id=user.id, display_name="Grace", etag=user.etag),
                    update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                ),
                timeout=60,
            ))
            await wait_for_lock_waiter(locker, urlsplit(url).path.lstrip("/"))

            # Waiting out the deadline would end DEADLINE_EXCEEDED: this code says the wait was cut short.
            error = await fails(users.GetUser(pb.GetUserRequest(id=user.id), timeout=CALLER_DEADLINE_SECONDS))
            assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, (error.code(), error.details())
            info = error_info(error)
            assert (info.reason, info.domain) == ("DB_POOL_EXHAUSTED", ERROR_DOMAIN)
            assert 0 < retry_delay_seconds(error) < CALLER_DEADLINE_SECONDS
            assert app.metrics_registry.get_sample_value("dataservice_db_pool_exhausted_total") == 1
            assert not update.done(), "the write still holds the connection"

            await transaction.rollback()
        finally:
            await locker.close()

        assert (await update).user.display_name == "Grace"
        assert (await users.GetUser(pb.GetUserRequest(id=user.id), timeout=10)).user.display_name == "Grace"


async def test_a_call_whose_deadline_ends_before_the_wait_for_a_connection_is_deadline_exceeded(
    new_database, start_app
):
    """The call's deadline (1 s: DB_COMMAND_TIMEOUT_SECONDS, the deadline of every call whose caller allows more)
    ends before DB_POOL_ACQUIRE_TIMEOUT_SECONDS: the truth is DEADLINE_EXCEEDED, said by the server (its
    ErrorInfo), long before the caller's own deadline would have ended the call on the client's side. The only
    connection is held by the test itself for the whole call: a call of the server's would end with its own
    deadline first."""
    app = await start_app(one_connection_settings(
        await new_database(), DB_COMMAND_TIMEOUT_SECONDS="1", DB_POOL_ACQUIRE_TIMEOUT_SECONDS="5"
    ))
    held = await app.pool.acquire()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            users = user_service_pb2_grpc.UserServiceStub(channel)
            error = await fails(
                users.GetUser(pb.GetUserRequest(id=str(uuid.uuid4())), timeout=CALLER_DEADLINE_SECONDS)
            )
    finally:
        await app.pool.release(held)
    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED, (error.code(), error.details())
    assert (error_info(error).reason, error_info(error).domain) == ("DEADLINE_EXCEEDED", ERROR_DOMAIN)
    assert app.metrics_registry.get_sample_value("dataservice_db_pool_exhausted_total") == 0


async def test_a_call_waiting_while_the_only_connection_is_still_connecting_is_unavailable_not_resource_exhausted(
    proxy, new_database, start_app
):
    """PostgreSQL's address drops packets: the call that took the pool's only slot waits connecting (up to
    DB_CONNECT_TIMEOUT_SECONDS), and the next call, finding no slot free for DB_POOL_ACQUIRE_TIMEOUT_SECONDS,
    is told the database does not answer (UNAVAILABLE, which callers retry later or elsewhere), not that the
    replica is busy. Once PostgreSQL answers, both connect and serve."""
    app = await start_app(one_connection_settings(
        proxy.url(await new_database()),
        # The pooled connection closes once idle, after the health monitor's first checks (which keep it busy),
        # so that the next call must connect; connecting and the first call's deadline outlast the test.
        DB_POOL_MAX_IDLE_SECONDS="0.5",
        DB_CONNECT_TIMEOUT_SECONDS="60",
        DB_COMMAND_TIMEOUT_SECONDS="60",
    ))
    async with asyncio.timeout(30):
        while app.pool.get_size():
            await asyncio.sleep(0.02)
    proxy.stall_connections()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        first = asyncio.ensure_future(users.GetUser(pb.GetUserRequest(id=str(uuid.uuid4())), timeout=60))
        await proxy.wait_stalled(1)  # the first call holds the only slot, connecting

        error = await fails(users.GetUser(pb.GetUserRequest(id=str(uuid.uuid4())), timeout=CALLER_DEADLINE_SECONDS))
        assert error.code() is grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())
        assert error_info(error).reason == "BACKEND_UNAVAILABLE"
        assert 0 < retry_delay_seconds(error) < CALLER_DEADLINE_SECONDS
        assert app.metrics_registry.get_sample_value("dataservice_db_pool_exhausted_total") == 0
        assert not first.done(), "the first call is still connecting"

        proxy.release_connections()
        assert (await fails(first)).code() is grpc.StatusCode.NOT_FOUND
        error = await fails(users.GetUser(pb.GetUserRequest(id=str(uuid.uuid4())), timeout=CALLER_DEADLINE_SECONDS))
        assert error.code() is grpc.StatusCode.NOT_FOUND, (error.code(), error.details())
