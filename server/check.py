"""``python -m server check``: a diagnosis of this server's configuration and dependencies, for an operator.

It reads the same environment as the server, reaches PostgreSQL and Redis as the server would, and prints
what it found: versions, the PostgreSQL settings that matter to the service, the migration state, pgvector,
Redis's answer and latency, and the effective configuration with every secret masked. Each problem is said
with what to do about it, and any problem makes the exit status 1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import time
from dataclasses import dataclass, field
from importlib import metadata

import asyncpg
import redis.asyncio as redis

from server.config import Settings
from server.db import migrate, pgvector
from server.db.connect_errors import configuration_problem
from server.db.embedded import start_embedded_postgres
from server.secret import Secret, mask_url

# A pool near max_connections leaves no room for another replica, a migration job or an operator's psql.
CONNECTION_HEADROOM = 0.8


@dataclass
class Report:
    """Lines to print, and the problems among them (each with what to do)."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.lines.append(line)

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def render(self) -> str:
        verdict = ["ok: nothing to fix"] if not self.problems else [f"PROBLEM: {text}" for text in self.problems]
        return "\n".join([*self.lines, "", *verdict])


async def diagnose(settings: Settings) -> Report:
    report = Report()
    report.add(f"dataservice {_version()}")
    await _check_postgres(settings, report)
    await _check_redis(settings, report)
    report.add("configuration:")
    for name, value in _effective_configuration(settings):
        report.add(f"  {name} = {value}")
    return report


def _version() -> str:
    try:
        return metadata.version("dataservice-server")
    except metadata.PackageNotFoundError:
        return "(not installed as a package)"


async def _check_postgres(settings: Settings, report: Report) -> None:
    if settings.database_url is None:
        dsn = await asyncio.to_thread(start_embedded_postgres, settings.embedded_pg_dir)
        report.add(f"postgresql: embedded, in {settings.embedded_pg_dir}")
    else:
        dsn = settings.database_url.reveal()
        report.add(f"postgresql: {mask_url(dsn)}")
    try:
        conn = await asyncpg.connect(
            dsn,
            timeout=settings.db_connect_timeout_seconds,
            server_settings={"application_name": "dataservice-check"},
            statement_cache_size=0,  # unnamed statements only, which pass PgBouncer in transaction mode too
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        # A refusal no retry can fix is said as the server says it (server/db/connect_errors.py).
        report.problem(
            configuration_problem(exc, dsn)
            or f"cannot connect to PostgreSQL ({type(exc).__name__}: {exc}); check DATABASE_URL (or DB_HOST, DB_PORT, "
            "DB_USER, DB_PASSWORD, DB_NAME, DB_SSLMODE, DB_SSLROOTCERT) and that the server is up and reachable "
            "from here"
        )
        return
    try:
        await _describe_postgres(conn, settings, report)
    finally:
        await conn.close()


async def _describe_postgres(conn: asyncpg.Connection, settings: Settings, report: Report) -> None:
    row = await conn.fetchrow(
        "SELECT current_setting('server_version') AS version, current_setting('max_connections')::int AS max,"
        " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS used,"
        " current_setting('transaction_read_only') = 'on' AS read_only"
    )
    report.add(f"  version {row['version']}; max_connections {row['max']}, in use {row['used']}")
    for app in await conn.fetch(
        "SELECT coalesce(nullif(application_name, ''), '(none)') AS name, count(*) AS n FROM pg_stat_activity"
        " WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 2 DESC, 1"
    ):
        report.add(f"    {app['name']}: {app['n']}")
    # Behind PgBouncer the pool holds PgBouncer's connections; PgBouncer's own pool sizes bound PostgreSQL's.
    # Each of the WORKERS processes has a pool of its own: the replica holds all of them.
    replica_connections = settings.workers * settings.db_pool_max_size
    if not settings.db_pgbouncer and replica_connections > row["max"] * CONNECTION_HEADROOM:
        report.problem(
            f"one replica holds up to {replica_connections} connections (WORKERS={settings.workers} pools of "
            f"{settings.db_pool_max_size}, within DB_CONNECTION_BUDGET={settings.db_connection_budget}), over "
            f"{CONNECTION_HEADROOM:.0%} of max_connections ({row['max']}): lower DB_CONNECTION_BUDGET (or "
            "DB_POOL_MAX_SIZE), or raise max_connections (or put PgBouncer in front)"
        )
    if row["read_only"]:
        report.problem("the database is read-only (a standby?): point DATABASE_URL at the primary")
    version, missing = await pgvector.check(conn, install=False)
    report.add(f"  pgvector {version}" if version else f"  pgvector missing: {missing}")
    if missing:
        report.problem(f"EmbeddingService cannot serve: {missing}")
    migrations = migrate.load_migrations(settings.migrations_dir)
    applied = await migrate.current_version(conn)
    latest = migrate.latest_version(migrations)
    report.add(f"  migrations: schema at {applied}, this build ships {latest}")
    if applied < latest:
        report.problem(
            f"the schema is at version {applied}, this build needs {latest}: run `python -m server migrate up` "
            "(or start the server with MIGRATE_ON_START=true)"
        )
    elif applied > latest:
        report.add("    (ahead: a newer build migrated it; this build serves it)")


async def _check_redis(settings: Settings, report: Report) -> None:
    if settings.redis_url is None:
        report.add(f"redis: not configured; the cache is {settings.cache_backend.value} (in this process only)")
        return
    url = settings.redis_url.reveal()
    report.add(f"redis: {mask_url(url)}")
    client = redis.Redis.from_url(url, socket_timeout=settings.redis_timeout_seconds,
                                  socket_connect_timeout=settings.redis_timeout_seconds)
    try:
        started = time.perf_counter()
        await client.ping()
        latency_ms = (time.perf_counter() - started) * 1000
        server = await client.info("server")
        report.add(f"  PONG in {latency_ms:.2f} ms; redis {server.get('redis_version', '?')}")
    except (redis.RedisError, OSError) as exc:
        report.problem(
            f"Redis does not answer ({type(exc).__name__}: {exc}); check REDIS_URL and that Redis is up. The service "
            "still serves without it, from PostgreSQL, slower"
        )
    finally:
        await client.aclose()


def _effective_configuration(settings: Settings) -> list[tuple[str, str]]:
    """Every setting with its value; URLs with their passwords masked, other secrets not shown at all."""
    shown = []
    for item in dataclasses.fields(settings):
        value = getattr(settings, item.name)
        if isinstance(value, Secret):
            text = mask_url(value.reveal()) if item.name.endswith("_url") else "(set, not shown)"
        else:
            text = _shown(value)
        shown.append((item.name.upper(), text))
    return shown


def _shown(value: object) -> str:
    """A setting as its environment variable would spell it."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, tuple):  # name=value pairs (RECOMMENDATION_WEIGHTS)
        return ",".join(f"{name}={number:g}" for name, number in value)
    return str(value)


async def run(settings: Settings) -> int:
    report = await diagnose(settings)
    print(report.render())
    return 1 if report.problems else 0

