"""An exhausted connection pool over the wire: a call that cannot get a connection is answered RESOURCE_EXHAUSTED
(DB_POOL_EXHAUSTED, with RetryInfo) after DB_POOL_ACQUIRE_TIMEOUT_SECONDS, not held until its deadline.

The pool's only connection is kept busy for real: a row lock taken by a connection of the test's own holds an
UpdateUser inside PostgreSQL, on that connection, until the test lets go.
"""

from __future__ import annotations

import asyncio
import time
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
from tests.harness import settings_for, unique_email

CALLER_DEADLINE_SECONDS = 10.0


def one_connection_settings(database_url: str, **overrides: str) -> Settings:
    """A server whose pool holds one connection, which only the test's calls take: no cache (every read goes
    to PostgreSQL), no background passes, and no health checks after the first."""
    return settings_for(
        database_url,
        DB_POOL_MAX_SIZE="1",
        DB_POOL_MIN_SIZE="1",
        CACHE_BACKEND="none",
        HEALTH_CHECK_INTERVAL_SECONDS="3600",
        CACHE_OUTBOX_SWEEP_SECONDS="0",
        SESSION_PURGE_INTERVAL_SECONDS="0",
        EMBEDDING_PURGE_INTERVAL_SECONDS="0",
        RECOMMENDATION_POPULARITY_REFRESH_SECONDS="0",
        **overrides,
    )


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
