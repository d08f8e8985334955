"""Lost database connections over the wire: never INTERNAL; a read runs again on a fresh connection, a write
answers UNAVAILABLE with RetryInfo.

The server reaches PostgreSQL through a proxy of the test's own (tests/tcp_proxy.py), which can keep back the
close that follows a server's FATAL error or cut every connection, so that each failure happens on cue.
The shared PostgreSQL is never stopped: sessions are ended with ``pg_terminate_backend``, the way a stopping
server ends them (FATAL 57P01, then close).
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2

from server.app import App
from server.errors import ERROR_DOMAIN
from tests.conftest import AppFactory, DatabaseFactory
from tests.grpc_errors import status_of
from tests.harness import settings_for, unique_email
from tests.tcp_proxy import TcpProxy


async def start_behind(
    proxy: TcpProxy, new_database: DatabaseFactory, start_app: AppFactory, **overrides: str
) -> tuple[App, str]:
    """A server whose every connection to a new database goes through ``proxy``; returns it and the database's name.

    No cache, so every read reaches PostgreSQL; no health checks after the first, so that only the calls of
    the test take connections from the pool.
    """
    url = await new_database()
    settings = settings_for(
        proxy.url(url), CACHE_BACKEND="none", HEALTH_CHECK_INTERVAL_SECONDS="3600", DB_POOL_MIN_SIZE="2", **overrides
    )
    return await start_app(settings), urlsplit(url).path.lstrip("/")


async def end_sessions(admin_url: str, database: str) -> int:
    """Ends every session the server under test holds on ``database``, as a stopping PostgreSQL does."""
    conn = await asyncpg.connect(admin_url)
    try:
        return await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'dataservice' AND datname = $1",
            database,
        )
    finally:
        await conn.close()


async def create_user(users: user_service_pb2_grpc.UserServiceStub) -> pb.User:
    user = pb.User(email=unique_email("faults"), display_name="Ada")
    return (await users.CreateUser(pb.CreateUserRequest(user=user, password="long enough"), timeout=10)).user


def assert_unavailable_with_retry_info(error: grpc.aio.AioRpcError) -> None:
    assert error.code() is grpc.StatusCode.UNAVAILABLE, (error.code(), error.details())
    details = status_of(error).details
    info = error_details_pb2.ErrorInfo()
    assert any(detail.Unpack(info) for detail in details if detail.Is(info.DESCRIPTOR))
    assert (info.reason, info.domain) == ("BACKEND_UNAVAILABLE", ERROR_DOMAIN)
    assert any(detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for detail in details)


async def break_idle_connections(proxy: TcpProxy, admin_url: str, database: str) -> int:
    """Ends the server's sessions so that the FATAL reaches every idle pooled connection but the close does not:
    the pool still hands them out. Returns how many sessions ended."""
    proxy.hold_closes = True
    ended = await end_sessions(admin_url, database)
    await proxy.wait_held(ended)
    return ended


async def test_a_read_on_pooled_connections_whose_sessions_ended_runs_again_on_a_fresh_one(
    proxy, postgres_admin_url, new_database, start_app
):
    app, database = await start_behind(proxy, new_database, start_app)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        user = await create_user(users)

        ended = await break_idle_connections(proxy, postgres_admin_url, database)
        assert ended >= 2, "with two broken connections or more, a retry on another idle one would fail too"

        assert (await users.GetUser(pb.GetUserRequest(id=user.id), timeout=10)).user == user
        assert (await users.GetUser(pb.GetUserRequest(id=user.id), timeout=10)).user == user


async def test_a_write_on_a_pooled_connection_whose_session_ended_is_unavailable_with_retry_info(
    proxy, postgres_admin_url, new_database, start_app
):
    app, database = await start_behind(proxy, new_database, start_app)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        user = await create_user(users)
        await break_idle_connections(proxy, postgres_admin_url, database)

        request = pb.UpdateUserRequest(
            user=pb.User(id=user.id, display_name="Grace", etag=user.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await users.UpdateUser(request, timeout=10)
        assert_unavailable_with_retry_info(raised.value)

        # The caller's retry, with the same etag, succeeds: the lost write was never applied.
        updated = (await users.UpdateUser(request, timeout=10)).user
        assert updated.display_name == "Grace"


async def test_reads_while_sessions_end_and_connections_are_cut_never_answer_internal(
    proxy, postgres_admin_url, new_database, start_app
):
    """Readers keep reading while every connection is, in turn, ended by the server or cut without a word."""
    readers, reads_each, outages = 8, 25, 6
    app, database = await start_behind(proxy, new_database, start_app, DB_POOL_MAX_SIZE="4")
    codes: list[grpc.StatusCode] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        user = await create_user(users)

        async def read() -> None:
            for _ in range(reads_each):
                try:
                    await users.GetUser(pb.GetUserRequest(id=user.id), timeout=10)
                    codes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as error:
                    codes.append(error.code())
                    if error.code() is grpc.StatusCode.UNAVAILABLE:
                        assert_unavailable_with_retry_info(error)

        async def break_connections() -> None:
            """An outage after every few answers, alternately a server ending sessions and a cut network."""
            give_up = time.monotonic() + 60
            for outage in range(outages):
                answered = len(codes)
                while len(codes) < min(answered + 10, readers * reads_each) and time.monotonic() < give_up:
                    await asyncio.sleep(0.005)
                if outage % 2:
                    proxy.cut()
                else:
                    await end_sessions(postgres_admin_url, database)

        await asyncio.gather(*(read() for _ in range(readers)), break_connections())

    assert len(codes) == readers * reads_each
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, set(codes)
    assert codes.count(grpc.StatusCode.OK) > len(codes) // 2
