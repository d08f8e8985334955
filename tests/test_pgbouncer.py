"""The service behind PgBouncer in transaction pooling mode (DB_PGBOUNCER=true), over the wire: a private PgBouncer
(tests/backends.py) in front of a new database, with fewer server connections than the service has clients.

Every transaction of a client connection may run on another server connection, so nothing may outlive one:
no prepared statement kept for later (asyncpg's statement cache, which DB_PGBOUNCER turns off), no session
setting, no session lock (the migration runner's lock is transaction-level). The Debian PgBouncer here is
1.18, which cannot keep prepared statements across server connections (max_prepared_statements came in 1.21):
with asyncpg's statement cache on, a call fails as soon as its transaction lands on another server connection.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc
import pytest
from dataservice.v1 import content_service_pb2 as content_pb
from dataservice.v1 import content_service_pb2_grpc, embedding_service_pb2_grpc
from dataservice.v1 import embedding_service_pb2 as embedding_pb
from dataservice.v1 import recommendation_service_pb2 as recommendation_pb
from dataservice.v1 import recommendation_service_pb2_grpc, session_service_pb2_grpc
from dataservice.v1 import session_service_pb2 as session_pb
from dataservice.v1 import user_service_pb2 as user_pb
from dataservice.v1 import user_service_pb2_grpc
from dataservice.v1.common_pb2 import CONTENT_STATUS_PUBLISHED
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server import seed
from server.config import ConfigError, Settings
from server.db import migrate
from tests.backends import PgBouncer, with_database
from tests.grpc_errors import fails
from tests.harness import MIGRATIONS, quiet_settings_for, settings_for, unique_email, write_migration
from tests.test_check import check
from tests.test_migrations import recorded

BouncerFactory = Callable[[int], Awaitable[PgBouncer]]


@pytest.fixture
async def behind_pgbouncer(new_database) -> AsyncIterator[BouncerFactory]:
    """Factory: a new database with a private PgBouncer of ``pool_size`` server connections in front of it."""
    bouncers: list[PgBouncer] = []

    async def start(pool_size: int) -> PgBouncer:
        bouncer = PgBouncer(await new_database(), pool_size=pool_size)
        bouncers.append(bouncer)
        return bouncer

    yield start
    for bouncer in bouncers:
        bouncer.close()


async def server_connections(admin_url: str, database: str) -> int:
    """PostgreSQL's connections to ``database``: with every client behind PgBouncer, PgBouncer's."""
    conn = await asyncpg.connect(admin_url)
    try:
        return await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database)
    finally:
        await conn.close()


async def test_every_service_serves_through_pgbouncer_migrations_included(behind_pgbouncer, start_app):
    bouncer = await behind_pgbouncer(3)
    app = await start_app(settings_for(bouncer.url, DB_PGBOUNCER="true", CACHE_BACKEND="none"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        # SERVING: the server migrated the new database through PgBouncer at start
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        loaded = await seed.load_demo(channel)  # creates through every service
        again = await seed.load_demo(channel)  # the request ids find the first results
        assert (again.users, again.contents) == (loaded.users, loaded.contents)

        users = user_service_pb2_grpc.UserServiceStub(channel)
        alice = (await users.GetUser(user_pb.GetUserRequest(id=loaded.users["alice"]))).user
        change = user_pb.User(id=alice.id, display_name="Alice L.", etag=alice.etag)
        mask = field_mask_pb2.FieldMask(paths=["display_name"])
        updated = (await users.UpdateUser(user_pb.UpdateUserRequest(user=change, update_mask=mask))).user
        assert updated.display_name == "Alice L." and updated.etag != alice.etag
        stale = await fails(users.UpdateUser(user_pb.UpdateUserRequest(user=change, update_mask=mask)))
        assert stale.code() is grpc.StatusCode.ABORTED
        listed = await users.ListUsers(user_pb.ListUsersRequest())
        assert {user.id for user in listed.users} == set(loaded.users.values())

        sessions = session_service_pb2_grpc.SessionServiceStub(channel)
        session = (await sessions.GetSession(session_pb.GetSessionRequest(token=loaded.session_token))).session
        assert session.user_id == alice.id

        contents = content_service_pb2_grpc.ContentServiceStub(channel)
        found = await contents.SearchContents(content_pb.SearchContentsRequest(query="bread"))
        assert loaded.contents["Baking crusty bread"] in {result.content.id for result in found.results}

        feeds = recommendation_service_pb2_grpc.RecommendationServiceStub(channel)
        carol = await feeds.GetRecommendations(
            recommendation_pb.GetRecommendationsRequest(user_id=loaded.users["carol"])
        )
        assert carol.recommendations[0].reason == recommendation_pb.RECOMMENDATION_REASON_PRECOMPUTED
    direct = await migrate.Migrator(bouncer.url, migrate.load_migrations(MIGRATIONS)).status()
    assert {line.state for line in direct} == {"applied"}


@pytest.mark.pgvector
async def test_vector_searches_through_pgbouncer_set_their_parameters_for_their_own_statement_only(
    behind_pgbouncer, start_app
):
    bouncer = await behind_pgbouncer(1)  # one server connection: every client's statements share it
    app = await start_app(settings_for(bouncer.url, DB_PGBOUNCER="true", CACHE_BACKEND="none"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        loaded = await seed.load_demo(channel)
        assert loaded.pgvector
        embeddings = embedding_service_pb2_grpc.EmbeddingServiceStub(channel)
        anchor = seed.demo_id("embedding", "Vector search with pgvector")

        async def nearest(params: embedding_pb.SearchParams) -> list[str]:
            response = await embeddings.SearchEmbeddings(embedding_pb.SearchEmbeddingsRequest(
                collection=seed.COLLECTION, item_id=anchor, top_k=5, params=params))
            return [hit.id for hit in response.results]

        assert await nearest(embedding_pb.SearchParams(ef_search=777)) == await nearest(
            embedding_pb.SearchParams(exact=True)
        )
        contents = content_service_pb2_grpc.ContentServiceStub(channel)
        hybrid = await contents.SearchContents(content_pb.SearchContentsRequest(
            query="postgres", vector_query=content_pb.VectorQuery(
                collection=seed.COLLECTION, vector=seed.embed("postgres indexes"))))
        assert hybrid.results

        await embeddings.CreateCollection(embedding_pb.CreateCollectionRequest(collection=embedding_pb.Collection(
            name="imported", dimension=2, distance_metric=embedding_pb.DISTANCE_METRIC_L2)))

        async def stream() -> AsyncIterator[embedding_pb.ImportEmbeddingsRequest]:
            for start in (0, 50):
                batch = [embedding_pb.Embedding(id=str(uuid.uuid4()), vector=[n, 1]) for n in range(start, start + 50)]
                yield embedding_pb.ImportEmbeddingsRequest(collection="imported", embeddings=batch)

        imported_response = await embeddings.ImportEmbeddings(stream())  # COPY into a temporary table
        assert (imported_response.upserted_count, imported_response.index_rebuilt) == (100, True)

    # The one server connection ran the searches; another client on it sees pgvector's defaults, not theirs.
    conn = await asyncpg.connect(bouncer.url, statement_cache_size=0)
    try:
        assert await conn.fetchval("SELECT current_setting('hnsw.ef_search', true)") == "40"
        assert await conn.fetchval("SELECT current_setting('hnsw.iterative_scan', true)") == "off"
    finally:
        await conn.close()


async def test_many_clients_share_few_server_connections_without_a_failed_call(
    behind_pgbouncer, start_app, postgres_admin_url
):
    bouncer = await behind_pgbouncer(3)
    app = await start_app(settings_for(
        bouncer.url, DB_PGBOUNCER="true", CACHE_BACKEND="none", DB_POOL_MAX_SIZE="12", DB_POOL_MIN_SIZE="12"
    ))
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") for _ in range(6)]

    async def client(channel: grpc.aio.Channel) -> None:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        sessions = session_service_pb2_grpc.SessionServiceStub(channel)
        contents = content_service_pb2_grpc.ContentServiceStub(channel)
        for _ in range(5):
            user = (await users.CreateUser(user_pb.CreateUserRequest(
                user=user_pb.User(email=unique_email("bouncer"), display_name="Ada"), password="long enough"))).user
            change = user_pb.User(id=user.id, display_name="Ada L.", etag=user.etag)
            await users.UpdateUser(user_pb.UpdateUserRequest(
                user=change, update_mask=field_mask_pb2.FieldMask(paths=["display_name"])))
            assert (await users.GetUser(user_pb.GetUserRequest(id=user.id))).user.display_name == "Ada L."
            token = (await sessions.CreateSession(session_pb.CreateSessionRequest(
                session=session_pb.Session(user_id=user.id)))).token
            assert (await sessions.GetSession(session_pb.GetSessionRequest(token=token))).session.user_id == user.id
            created = (await contents.CreateContent(content_pb.CreateContentRequest(content=content_pb.Content(
                author_id=user.id, title="Pooled", body="through pgbouncer", status=CONTENT_STATUS_PUBLISHED)))).content
            assert (await contents.GetContent(content_pb.GetContentRequest(id=created.id))).content == created

    try:
        # as many clients as pooled connections: every call has one, and PgBouncer shares 3 server connections
        results = await asyncio.gather(*(client(channels[n % 6]) for n in range(12)), return_exceptions=True)
    finally:
        for channel in channels:
            await channel.close()
    assert [result for result in results if result is not None] == []
    assert app.pool.get_size() == 12
    assert await server_connections(postgres_admin_url, bouncer.database) <= 3


@pytest.mark.parametrize(
    ("env", "fails_on_another_server_connection"),
    [({"DB_PGBOUNCER": "true"}, False), ({}, True)],
    ids=["DB_PGBOUNCER=true", "statement cache on (DB_PGBOUNCER unset)"],
)
async def test_a_statement_prepared_on_one_server_connection_is_not_reused_on_another(
    behind_pgbouncer, start_app, caplog, env, fails_on_another_server_connection
):
    """One pooled connection, two server connections: the test holds each in turn in a transaction of its own,
    so that the service's first call runs on one and its second on the other."""
    bouncer = await behind_pgbouncer(2)
    app = await start_app(quiet_settings_for(bouncer.url, DB_POOL_MAX_SIZE="1", DB_POOL_MIN_SIZE="1", **env))
    first, second = [await asyncpg.connect(bouncer.url, statement_cache_size=0) for _ in range(2)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)

        async def get_nobody() -> grpc.StatusCode:
            error = await fails(users.GetUser(user_pb.GetUserRequest(id=str(uuid.uuid4())), timeout=10))
            return error.code()

        pinned = {}
        for holder in (first, second):
            await holder.execute("BEGIN")
            pinned[holder] = await holder.fetchval("SELECT pg_backend_pid()")
        assert len(set(pinned.values())) == 2
        await first.execute("COMMIT")  # the first server connection is the one free: the call prepares there
        assert await get_nobody() is grpc.StatusCode.NOT_FOUND
        await first.execute("BEGIN")
        assert await first.fetchval("SELECT pg_backend_pid()") == pinned[first]
        await second.execute("COMMIT")  # now only the second is free
        with caplog.at_level(logging.ERROR):
            code = await get_nobody()
    for holder in (first, second):
        await holder.close()
    if fails_on_another_server_connection:
        assert code is grpc.StatusCode.INTERNAL
        assert "prepared statement" in caplog.text and "does not exist" in caplog.text, caplog.text
    else:
        assert code is grpc.StatusCode.NOT_FOUND


async def test_concurrent_migration_runners_through_pgbouncer_apply_each_migration_once(
    behind_pgbouncer, postgres_admin_url, tmp_path: Path
):
    write_migration(tmp_path, 1, "alpha", "SELECT pg_sleep(0.3); CREATE TABLE alpha (id int);", "DROP TABLE alpha;")
    write_migration(tmp_path, 2, "beta", "CREATE TABLE beta (id int);", "DROP TABLE beta;")
    write_migration(tmp_path, 3, "gamma", "ALTER TABLE beta ADD COLUMN note text;", "ALTER TABLE beta DROP note;")
    migrations = migrate.load_migrations(tmp_path)
    bouncer = await behind_pgbouncer(2)  # fewer server connections than runners
    applied = await asyncio.gather(*(migrate.Migrator(bouncer.url, migrations).up() for _ in range(4)))
    assert sorted(migration.version for run in applied for migration in run) == [1, 2, 3]
    reverted = await migrate.Migrator(bouncer.url, migrations).to(1)
    assert [migration.version for migration in reverted] == [3, 2]
    assert await recorded(with_database(postgres_admin_url, bouncer.database)) == [(1, "alpha")]


async def test_check_through_pgbouncer_does_not_weigh_the_pool_against_max_connections(behind_pgbouncer):
    bouncer = await behind_pgbouncer(2)
    code, output = await check(DATABASE_URL=bouncer.url, DB_PGBOUNCER="true", DB_POOL_MAX_SIZE="5000")
    assert "max_connections" in output and "DB_PGBOUNCER = True" in output, output
    problems = [line for line in output.splitlines() if line.startswith("PROBLEM")]
    assert not any("DB_POOL_MAX_SIZE" in line for line in problems), output


def test_db_pgbouncer_turns_the_statement_cache_off_and_refuses_one():
    assert Settings.from_env({"DB_PGBOUNCER": "true"}).db_statement_cache_size == 0
    assert Settings.from_env({"DB_PGBOUNCER": "true", "DB_STATEMENT_CACHE_SIZE": "0"}).db_pgbouncer
    with pytest.raises(ConfigError, match="^DB_STATEMENT_CACHE_SIZE: 100 with DB_PGBOUNCER=true"):
        Settings.from_env({"DB_PGBOUNCER": "true", "DB_STATEMENT_CACHE_SIZE": "100"})
