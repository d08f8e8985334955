"""Keeps the standard grpc.health.v1 statuses true: SERVING only while PostgreSQL answers, accepts writes and
has at least the schema this build needs; the vector services (EmbeddingService) also need pgvector, and are
NOT_SERVING without it while ``""`` and the other services stay SERVING.

The monitor checks in the background; while the database is down it retries with exponential backoff and
full jitter (so replicas do not stampede a recovering database), and flips every status back to SERVING
when the database returns, without a restart. With ``migrate_on_start`` it also applies pending migrations
as soon as the database can be reached, which is what lets the server start before its database.

A refusal that no retry can fix (a rejected password, an unknown role or database, TLS the server does not
offer: server.db.connect_errors) is not an outage to wait out. At start the server stops on it, saying why
(server.app); later, as when a password is rotated under a running server, the monitor logs it as an ERROR
naming the cause and the setting to fix, keeps every status NOT_SERVING, and checks again each interval on a
connection of its own, until PostgreSQL accepts one.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable

import asyncpg
from grpc_health.v1 import health_pb2

from server.api.health import NOT_SERVING, SERVING, HealthServicer
from server.db import migrate, pgvector
from server.db.connect_errors import configuration_problem
from server.outage import OutageLog

log = logging.getLogger(__name__)

_FIRST_RETRY_SECONDS = 0.1


def retry_delay(failures: int, *, first_seconds: float, max_seconds: float) -> float:
    """Exponential backoff with full jitter after ``failures`` failures in a row (1 or more), capped.

    The exponent is bounded so that a database that stays away for hours never overflows the float.
    """
    return random.uniform(0, min(max_seconds, first_seconds * 2 ** min(failures - 1, 32)))


class HealthMonitor:
    """Polls the database and sets the health status of ``""`` and of each service name."""

    def __init__(
        self,
        servicer: HealthServicer,
        service_names: Iterable[str],
        pool: asyncpg.Pool,
        *,
        dsn: str,
        migrator: migrate.Migrator,
        auto_migrate: bool,
        interval_seconds: float,
        check_timeout_seconds: float,
        migration_timeout_seconds: float,
        outage: OutageLog,
        vectors: pgvector.VectorSupport,
        vector_service_names: Iterable[str],
    ) -> None:
        self._servicer = servicer
        self._names = ["", *service_names]
        self._vectors = vectors
        self._vector_names = frozenset(vector_service_names)
        self._pool = pool
        self._dsn = dsn
        self._migrator = migrator
        self._latest_version = migrator.latest_version
        self._auto_migrate = auto_migrate
        self._interval = interval_seconds
        self._check_timeout = check_timeout_seconds
        self._migration_timeout = migration_timeout_seconds
        self._outage = outage
        self._schema_verified = False
        self._serving: bool | None = None
        self._vectors_serving: bool | None = None
        self.refusal: str | None = None
        """Why PostgreSQL turns this server's connections away, when no retry can change it; None otherwise."""

    @property
    def serving(self) -> bool:
        return bool(self._serving)

    async def run(self) -> None:
        """Checks forever; cancel the task to stop. A refusal is logged when it begins, changes or ends, not at
        every check."""
        failures = 0
        while True:
            refused = self.refusal
            healthy = await self.check_once()
            if self.refusal != refused:
                if self.refusal is None:
                    log.info("PostgreSQL accepts this server's connections again")
                else:
                    log.error("%s (checking again every %g s)", self.refusal, self._interval)
            failures = 0 if healthy else failures + 1
            await asyncio.sleep(self._delay(failures))

    def _delay(self, failures: int) -> float:
        """The interval while healthy, and while refused: only an operator's change ends a refusal, and each
        retry is one more failed login in PostgreSQL's log. Backoff from 0.1 s otherwise."""
        if failures == 0 or self.refusal is not None:
            return self._interval
        return retry_delay(failures, first_seconds=_FIRST_RETRY_SECONDS, max_seconds=self._interval)

    async def check_once(self) -> bool:
        """One check: returns whether the service can serve, after setting every status accordingly."""
        try:
            if self.refusal is not None:
                await self._connect_anew()
            version, read_only = await asyncio.wait_for(self._probe(), self._check_timeout)
            if version < self._latest_version and self._auto_migrate:
                # A budget of its own: a migration may rightly take longer than a health check.
                await asyncio.wait_for(self._migrator.up(), self._migration_timeout)
                version, read_only = await asyncio.wait_for(self._probe(), self._check_timeout)
            await asyncio.wait_for(self._check_pgvector(install=self._auto_migrate and not read_only),
                                   self._check_timeout)
            if not self._schema_verified:
                # Once per process: the applied migrations must be the ones this build ships, byte for byte.
                await asyncio.wait_for(self._migrator.verify(), self._check_timeout)
                self._schema_verified = True
        except migrate.MigrationError as exc:
            await self._set(False, f"migrations: {exc}")
            return False
        except Exception as exc:  # any failure to reach or query the database means "cannot serve"
            problem = configuration_problem(exc, self._dsn)
            if problem is not None:
                self.refusal = problem
            await self._set(False, problem or f"database unreachable: {type(exc).__name__}: {exc}")
            return False
        # A schema ahead of this build is fine (a newer replica migrated during a rolling deploy); one behind is not.
        if version < self._latest_version:
            reason = f"schema at version {version}, this build needs {self._latest_version}"
        elif read_only:
            reason = "database is read-only (a standby, or read-only transactions by default)"
        else:
            reason = "ok"
        healthy = reason == "ok"
        await self._set(healthy, reason)
        if healthy:
            self._outage.succeeded()  # RPCs report the failures; the database answering ends the outage
        return healthy

    async def _connect_anew(self) -> None:
        """Opens a connection of its own, and closes it: while PostgreSQL refuses this server, a pooled connection
        opened before would answer the probe and hide the refusal. PostgreSQL accepting it ends the refusal."""
        conn = await asyncpg.connect(self._dsn, timeout=self._check_timeout)
        await conn.close()
        self.refusal = None

    async def _probe(self) -> tuple[int, bool]:
        """The schema version and whether writes would be refused, on one pooled connection."""
        async with self._pool.acquire() as conn:
            version = await migrate.current_version(conn)
            read_only = await conn.fetchval("SELECT current_setting('transaction_read_only') = 'on'")
        return version, read_only

    async def _check_pgvector(self, *, install: bool) -> None:
        """Reads (or, with ``install``, creates) pgvector; the vector services follow it at the next ``_set``."""
        async with self._pool.acquire() as conn:
            version, missing_reason = await pgvector.check(conn, install=install)
        if version is not None and self._vectors.version is None:
            # Connections opened before pgvector was there lack its codec (server/db/pool.py): replace them.
            await self._pool.expire_connections()
        if missing_reason is not None and not self._vectors.known_missing:
            log.warning("pgvector missing: the vector services are not serving", extra={"reason": missing_reason})
        elif version is not None and self._vectors.known_missing:
            log.info("pgvector found: the vector services can serve", extra={"pgvector": version})
        self._vectors.update(version, missing_reason)

    async def _set(self, healthy: bool, reason: str) -> None:
        vectors_serving = healthy and not self._vectors.known_missing
        if healthy == self._serving and vectors_serving == self._vectors_serving:
            return
        if healthy != self._serving:
            status = SERVING if healthy else NOT_SERVING
            log.log(logging.INFO if healthy else logging.WARNING, "health changed",
                    extra={"status": health_pb2.HealthCheckResponse.ServingStatus.Name(status), "reason": reason})
        self._serving = healthy
        self._vectors_serving = vectors_serving
        for name in self._names:
            serving = vectors_serving if name in self._vector_names else healthy
            self._servicer.set(name, SERVING if serving else NOT_SERVING)
