"""Health over the wire: SERVING only while PostgreSQL answers at the latest schema, and it follows outages.

These tests own a private PostgreSQL (stopped and started for real) so they never disturb the shared one.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import uuid
from collections.abc import Iterator

import asyncpg
import grpc
import pytest
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.app import CACHE_HEALTH_NAME
from server.db import migrate
from server.health import retry_delay
from tests.backends import EmbeddedPostgres
from tests.harness import MIGRATIONS, migrations_plus, settings_for

# The names that follow the database alone; EmbeddingService also needs pgvector (tests/test_embeddings*.py).
SERVICE_NAMES = [
    "",
    "dataservice.v1.UserService",
    "dataservice.v1.SessionService",
    "dataservice.v1.ContentService",
    "dataservice.v1.RecommendationService",
]
VECTOR_SERVICE = "dataservice.v1.EmbeddingService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def private_postgres() -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres()
    yield server
    server.close()


async def statuses(port: int) -> dict[str, int]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        return {
            name: (await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)).status
            for name in SERVICE_NAMES
        }


async def wait_for_status(port: int, expected: int, within: float = 30.0) -> None:
    """Waits until every service name reports ``expected``; fails after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        current = await statuses(port)
        if set(current.values()) == {expected}:
            return
        assert time.monotonic() < deadline, f"health stayed {current}, expected all {expected}"
        await asyncio.sleep(0.1)


async def test_health_is_serving_for_every_service_name_and_for_embeddings_where_pgvector_is(app, pgvector_offered):
    assert set((await statuses(app.port)).values()) == {SERVING}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        request = health_pb2.HealthCheckRequest(service=VECTOR_SERVICE)
        vectors = (await health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)).status
    assert vectors == (SERVING if pgvector_offered else NOT_SERVING)


async def test_health_follows_a_database_outage_and_recovery_without_restart(private_postgres, start_app, caplog):
    app = await start_app(settings_for(private_postgres.url))
    await wait_for_status(app.port, SERVING)

    await asyncio.to_thread(private_postgres.stop)
    await wait_for_status(app.port, NOT_SERVING)
    caplog.set_level(logging.WARNING, logger="server.rpc")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        for _ in range(30):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await users.GetUser(pb.GetUserRequest(id=str(uuid.uuid4())), timeout=10)
            assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
        outage_lines = [record.getMessage() for record in caplog.records if record.name == "server.rpc"]
        assert outage_lines == ["database unavailable"], "an outage is one line, not one per call"

        await asyncio.to_thread(private_postgres.start)
        await wait_for_status(app.port, SERVING)
        outage_lines = [record.getMessage() for record in caplog.records if record.name == "server.rpc"]
        assert outage_lines == ["database unavailable", "database available again"]
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await users.GetUser(pb.GetUserRequest(id=str(uuid.uuid4())), timeout=10)
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND, "queries work again after the recovery"


async def test_the_server_starts_with_the_database_down_and_serves_once_it_is_up(private_postgres, start_app):
    await asyncio.to_thread(private_postgres.stop)
    app = await start_app(settings_for(private_postgres.url))
    assert set((await statuses(app.port)).values()) == {NOT_SERVING}
    await asyncio.to_thread(private_postgres.start)
    await wait_for_status(app.port, SERVING)


async def test_health_is_not_serving_while_the_schema_is_behind(new_database, start_app):
    url = await new_database()
    app = await start_app(settings_for(url, MIGRATE_ON_START="false"))
    assert set((await statuses(app.port)).values()) == {NOT_SERVING}
    await migrate.Migrator(url, migrate.load_migrations(MIGRATIONS)).up()
    await wait_for_status(app.port, SERVING)


async def test_health_goes_not_serving_when_the_server_stops(new_database, start_app):
    app = await start_app(settings_for(await new_database()))
    await wait_for_status(app.port, SERVING)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == SERVING
        stopping = asyncio.create_task(app.stop(2))
        assert (await watch.read()).status == NOT_SERVING
        await stopping


async def test_a_schema_ahead_of_this_build_still_serves(new_database, start_app, tmp_path):
    """A newer replica migrated first during a rolling deploy: this one must keep serving."""
    url = await new_database()
    newer = migrations_plus(tmp_path / "newer", 9999, "from_a_newer_build",
                            "CREATE TABLE from_a_newer_build (id int);", "DROP TABLE from_a_newer_build;")
    await migrate.Migrator(url, migrate.load_migrations(newer)).up()
    app = await start_app(settings_for(url))
    await wait_for_status(app.port, SERVING)


async def test_a_read_only_database_is_not_serving_and_writes_are_unavailable(new_database, start_app):
    """As after a failover that left the service pointing at a standby."""
    url = await new_database()
    await migrate.Migrator(url, migrate.load_migrations(MIGRATIONS)).up()
    conn = await asyncpg.connect(url)
    try:
        name = await conn.fetchval("SELECT current_database()")
        await conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    finally:
        await conn.close()
    app = await start_app(settings_for(url))
    assert set((await statuses(app.port)).values()) == {NOT_SERVING}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await users.CreateUser(pb.CreateUserRequest(
                user=pb.User(email="ro@example.com", display_name="R"), password="long enough"))
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_a_migration_longer_than_a_health_check_completes(new_database, start_app, tmp_path):
    slow = migrations_plus(tmp_path / "slow", 9000, "slow",
                           "SELECT pg_sleep(3); CREATE TABLE slow_done (id int);", "DROP TABLE slow_done;")
    url = await new_database()
    # A one-second connect timeout makes each health check time out after three seconds.
    app = await start_app(settings_for(url, MIGRATIONS_DIR=str(slow), DB_CONNECT_TIMEOUT_SECONDS="1"))
    await wait_for_status(app.port, SERVING)
    conn = await asyncpg.connect(url)
    try:
        assert await migrate.current_version(conn) == 9000
    finally:
        await conn.close()


async def test_a_database_whose_applied_migration_differs_from_this_build_is_not_serving(
    new_database, start_app, tmp_path
):
    """Same version, other content (an edited migration): serving would fail queries, so health says no."""
    other = tmp_path / "other"
    shutil.copytree(MIGRATIONS, other)
    first = sorted(other.glob("0001_*.up.sql"))[0]
    first.write_text(first.read_text() + "\n-- an edit made after this migration was applied\n")
    url = await new_database()
    await migrate.Migrator(url, migrate.load_migrations(other)).up()
    app = await start_app(settings_for(url))
    assert set((await statuses(app.port)).values()) == {NOT_SERVING}


async def test_a_migration_over_its_time_budget_is_rolled_back_and_the_server_still_starts(
    new_database, start_app, tmp_path
):
    slow = migrations_plus(tmp_path / "slow", 9000, "slow",
                           "CREATE TABLE slow_started (id int); SELECT pg_sleep(30);", "DROP TABLE slow_started;")
    url = await new_database()
    app = await start_app(settings_for(url, MIGRATIONS_DIR=str(slow), MIGRATION_TIMEOUT_SECONDS="1"))
    assert set((await statuses(app.port)).values()) == {NOT_SERVING}
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT to_regclass('slow_started')") is None, "the slow migration rolled back"
    finally:
        await conn.close()


def test_the_retry_delay_stays_bounded_however_long_the_database_is_away():
    for failures in (1, 2, 10, 1025, 100_000):
        assert 0 <= retry_delay(failures, first_seconds=0.1, max_seconds=2.0) <= 2.0
    assert retry_delay(1, first_seconds=0.1, max_seconds=2.0) <= 0.1


async def test_health_list_reports_every_service(app, pgvector_offered):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        listed = await health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=5)
    assert {name: response.status for name, response in listed.statuses.items()} == {
        **dict.fromkeys(SERVICE_NAMES, SERVING),
        VECTOR_SERVICE: SERVING if pgvector_offered else NOT_SERVING,
        CACHE_HEALTH_NAME: SERVING,
    }
