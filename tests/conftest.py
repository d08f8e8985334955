"""Fixtures over real backends: one switch (TEST_DATABASE_URL / TEST_REDIS_URL) picks "start one" or
"use this one"; the server runs in-process on a free port and is called through the shipped stubs."""

from __future__ import annotations

import os

# The tests fork helpers (pg_ctl as the postgres user, redis-server) while grpc calls are in flight, e.g. with Watch
# streams open. grpc's fork handlers then run in the child before its exec, and crash it (SIGSEGV) when other
# threads are inside grpc. No child of a test uses grpc, so the handlers are turned off before grpc starts.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
# A server process a test starts serves alone unless the test asks for workers (tests/test_workers.py): its
# logs, exit code and pool are then those of one process, whatever the machine's CPU count.
os.environ["WORKERS"] = "1"

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
import asyncpg
import grpc
import pytest
import redis.asyncio as redis
import uvloop
from dataservice.v1 import content_service_pb2_grpc, user_service_pb2_grpc

from server.app import App
from server.config import Settings
from tests import backends
from tests.harness import settings_for
from tests.tcp_proxy import TcpProxy, postgres_opener

def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict:
    """Tests run on uvloop, the loop the service runs on."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    with backends.postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
async def pgvector_offered(postgres_admin_url: str) -> bool:
    """Whether the PostgreSQL under test offers pgvector: the embedded 18 does, the machine's 15 does not."""
    conn = await asyncpg.connect(postgres_admin_url)
    try:
        return await conn.fetchval("SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'vector')")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with backends.redis_server() as url:
        yield url


DatabaseFactory = Callable[[], Awaitable[str]]


@pytest.fixture
async def new_database(postgres_admin_url: str) -> AsyncIterator[DatabaseFactory]:
    """Factory of empty databases on the server under test, dropped when the test ends."""
    created: list[str] = []

    async def create() -> str:
        name = backends.unique_name("dstest")
        conn = await asyncpg.connect(postgres_admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        created.append(name)
        return backends.with_database(postgres_admin_url, name)

    yield create
    conn = await asyncpg.connect(postgres_admin_url)
    try:
        for name in created:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def database_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """A database of its own for this test session, so runs never see each other's rows."""
    name = backends.unique_name("dataservice_test")
    conn = await asyncpg.connect(postgres_admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield backends.with_database(postgres_admin_url, name)
    conn = await asyncpg.connect(postgres_admin_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


AppFactory = Callable[..., Awaitable[App]]
STOP_SECONDS = 30.0


@pytest.fixture
async def start_app() -> AsyncIterator[AppFactory]:
    """Factory of started in-process servers, each stopped when the test ends."""
    apps: list[App] = []

    async def start(settings: Settings) -> App:
        app = App(settings)
        apps.append(app)
        await app.start()
        return app

    yield start
    for app in apps:
        await stopped(app)


async def stopped(app: App) -> None:
    """Stops ``app``, failing the test rather than hanging the suite if the stop does not end."""
    try:
        async with asyncio.timeout(STOP_SECONDS):
            await app.stop(0)
    except TimeoutError:
        pytest.fail(f"the server did not stop within {STOP_SECONDS} s")


@pytest.fixture(scope="session")
async def app(database_url: str, redis_url: str) -> AsyncIterator[App]:
    """The shared in-process server of the suite, over the session database and Redis."""
    app = App(settings_for(database_url, REDIS_URL=redis_url))
    await app.start()
    yield app
    await stopped(app)


@pytest.fixture(scope="session")
async def channel(app: App) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield channel


@pytest.fixture(scope="session")
def users(channel: grpc.aio.Channel) -> user_service_pb2_grpc.UserServiceStub:
    return user_service_pb2_grpc.UserServiceStub(channel)


@pytest.fixture(scope="session")
def contents(channel: grpc.aio.Channel) -> content_service_pb2_grpc.ContentServiceStub:
    return content_service_pb2_grpc.ContentServiceStub(channel)


@pytest.fixture
async def db(app: App) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own to the shared server's database, to read and move rows as time would."""
    conn = await asyncpg.connect(app.dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[redis.Redis]:
    """A client of the Redis that the shared server caches in, to look at what it cached."""
    client = redis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def proxy(postgres_admin_url: str) -> AsyncIterator[TcpProxy]:
    """A TCP proxy of the test's own to the PostgreSQL under test (tests/tcp_proxy.py), to break connections on
    cue; also a TCP path where that PostgreSQL listens on a Unix socket only (the embedded one)."""
    proxy = TcpProxy(postgres_opener(postgres_admin_url))
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
def private_redis() -> Iterator[backends.RedisServer]:
    """A Redis of the test's own, which it may stop, pause, kill or flush."""
    server = backends.RedisServer()
    yield server
    server.close()
