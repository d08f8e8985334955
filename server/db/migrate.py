"""The migration runner: plain SQL files applied in order, each in its own transaction, recorded with checksums.

Files are ``migrations/NNNN_name.up.sql`` with a matching ``.down.sql``. ``schema_migrations`` keeps every
applied version with its name, the SHA-256 of its up file and when it was applied. Each migration's transaction
first takes a transaction-level advisory lock and then reads what is applied, so replicas that start together
apply each migration exactly once; holding no session state, the runner works through PgBouncer in
transaction pooling mode too. Another runner may take the lock between two steps of a run: a run that then finds
a migration moved away from its own target stops with an error, since undoing that move would have the two
runners undo each other's steps for as long as both run. An applied migration whose file has since changed is
refused: the database no longer matches what the file says.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.up\.sql$")
# How long one migration statement may wait for a table lock before the run fails (and is retried later):
# DDL queued behind a long transaction would otherwise hold up every query on that table behind it.
LOCK_TIMEOUT = "10s"
# Derived from a fixed name, so that every replica of this service contends for the same lock.
LOCK_KEY = int.from_bytes(hashlib.sha256(b"dataservice:schema_migrations").digest()[:8], "big", signed=True)

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    bigint      PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """The migrations on disk and in the database disagree, or a migration failed."""


@dataclass(frozen=True)
class Migration:
    """One migration on disk: the version orders it, the checksum pins the up file's content."""

    version: int
    name: str
    up_sql: str
    down_sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.up_sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str
    applied_at: datetime


@dataclass(frozen=True)
class MigrationStatus:
    """One line of ``migrate status``."""

    version: int
    name: str
    state: str  # "applied", "pending", "edited" (checksum differs), "missing" (applied, file gone)
    applied_at: datetime | None


def load_migrations(directory: Path) -> list[Migration]:
    """Reads every migration in ``directory``, in version order; refuses gaps in pairs and duplicate versions."""
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {str(directory)!r} does not exist")
    migrations: dict[int, Migration] = {}
    for up_path in sorted(directory.glob("*.up.sql")):
        match = _FILE.match(up_path.name)
        if match is None:
            raise MigrationError(f"{up_path.name}: expected a name like 0001_create_users.up.sql")
        version = int(match["version"])
        down_path = up_path.with_name(up_path.name.replace(".up.sql", ".down.sql"))
        if not down_path.exists():
            raise MigrationError(f"{up_path.name}: missing its {down_path.name}")
        if version in migrations:
            raise MigrationError(f"{up_path.name}: version {version} is used twice")
        migrations[version] = Migration(version, match["name"], up_path.read_text(), down_path.read_text())
    return [migrations[version] for version in sorted(migrations)]


def latest_version(migrations: list[Migration]) -> int:
    return migrations[-1].version if migrations else 0


async def current_version(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """The highest applied version, 0 for a database never migrated."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")


class Migrator:
    """Moves one database's schema between versions. Use ``up``, ``down``, ``to`` or ``status``."""

    def __init__(
        self,
        dsn: str,
        migrations: list[Migration],
        *,
        connect_timeout: float = 10.0,
        statement_timeout: float = 600.0,
    ) -> None:
        self._dsn = dsn
        self._migrations = migrations
        self._by_version = {migration.version: migration for migration in migrations}
        self._connect_timeout = connect_timeout
        # Bounds every statement, waiting for another runner's lock included: on a connection that dies
        # silently (a network partition), a migration would otherwise wait forever.
        self._statement_timeout = statement_timeout

    @property
    def latest_version(self) -> int:
        return latest_version(self._migrations)

    async def verify(self) -> None:
        """Raises MigrationError unless every applied migration this build knows matches its file.

        Migrations applied beyond this build's latest (by a newer build, during a rolling deploy) are allowed.
        """
        conn = await self._connect()
        try:
            exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
            applied = await self._applied(conn) if exists else []
        finally:
            await conn.close()
        self._check(record for record in applied if record.version <= self.latest_version)

    async def up(self) -> list[Migration]:
        """Applies every pending migration; returns those applied by this call."""
        return await self.to(latest_version(self._migrations))

    async def down(self) -> list[Migration]:
        """Reverts the latest applied migration, if any. One step, so no other runner can move the schema in the
        middle of it."""
        async with self._connection() as conn:
            migration, _ = await self._step(conn, lambda applied: self._by_version[max(applied)] if applied else None)
        return [] if migration is None else [migration]

    async def to(self, version: int) -> list[Migration]:
        """Applies or reverts migrations until ``version`` is the latest applied one (0 reverts all); returns
        those this call moved (another runner may move some of the others meanwhile).

        Raises MigrationError when another runner moved a migration away from ``version`` between two steps of
        this call (``_towards``): undoing that move would have that runner undo this call's in turn, and so on
        for as long as both run.
        """
        if version != 0 and version not in self._by_version:
            raise MigrationError(f"no migration with version {version}")
        changed: list[Migration] = []
        left: set[int] | None = None  # the versions this call's previous step left applied
        async with self._connection() as conn:
            while True:
                migration, left = await self._step(conn, partial(self._towards, version, left))
                if migration is None:
                    return changed
                changed.append(migration)

    async def status(self) -> list[MigrationStatus]:
        """Every migration known on disk or in the database, with its state."""
        conn = await self._connect()
        try:
            await conn.execute(_CREATE_TABLE)
            applied = {row.version: row for row in await self._applied(conn)}
        finally:
            await conn.close()
        lines = []
        for version in sorted(set(applied) | set(self._by_version)):
            on_disk = self._by_version.get(version)
            recorded = applied.get(version)
            if recorded is None:
                state = "pending"
            elif on_disk is None:
                state = "missing"
            elif on_disk.checksum != recorded.checksum:
                state = "edited"
            else:
                state = "applied"
            name = on_disk.name if on_disk else recorded.name  # type: ignore[union-attr]
            lines.append(MigrationStatus(version, name, state, recorded.applied_at if recorded else None))
        return lines

    async def _connect(self) -> asyncpg.Connection:
        # A few statements each run once: a statement cache would save nothing, and unnamed statements are the
        # ones PgBouncer in transaction pooling mode passes on.
        return await asyncpg.connect(
            self._dsn, timeout=self._connect_timeout, command_timeout=self._statement_timeout, statement_cache_size=0
        )

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A dedicated connection, dropped at once when the block fails: it may be dead or mid-statement."""
        conn = await self._connect()
        try:
            yield conn
        except BaseException:
            conn.terminate()
            raise
        await conn.close()

    async def _step(
        self, conn: asyncpg.Connection, choose: Callable[[set[int]], Migration | None]
    ) -> tuple[Migration | None, set[int]]:
        """Applies or reverts the one migration ``choose`` picks from the versions applied, in a transaction that
        first takes the migration lock; returns it (None when ``choose`` picks none) and the versions applied
        once it moved.

        The lock is transaction-level, and what is applied is read once it is held, so runners that start
        together move each migration once, and no session state outlives the transaction: the runner works
        through PgBouncer in transaction pooling mode as well as directly. Another runner may take the lock
        before this runner's next step: what this step leaves applied is what the next step expects to find.
        """
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)  # waits for another runner
            await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")  # not before: it would cut that wait
            await conn.execute(_CREATE_TABLE)
            applied = {record.version for record in await self._verified(conn)}
            migration = choose(applied)
            if migration is None:
                return None, applied
            if migration.version in applied:
                await self._revert(conn, migration)
            else:
                await self._apply(conn, migration)
        return migration, applied ^ {migration.version}

    def _towards(self, version: int, left: set[int] | None, applied: set[int]) -> Migration | None:
        """The next migration to move on the way to ``version``: the first pending one up to it, else the last
        applied one beyond it.

        ``left`` is what this run's previous step left applied (None before its first step). Where ``applied``
        differs, another runner moved migrations in between. Moves towards ``version`` are taken as they are:
        they are moves this run would have made itself, so two ``up()`` of replicas starting together both
        succeed, each migration applied once. A move away from it is refused, as undoing it would start the two
        runners undoing each other's steps. Every step of a run that goes on thus brings the schema closer to its
        target, and nothing between its steps takes it further away: every run ends.
        """
        if left is not None and any((v in applied) != (v <= version) for v in applied ^ left):
            now = ", ".join(f"{v:04d}" for v in sorted(applied)) or "none"
            raise MigrationError(
                f"another migration runner moved the schema meanwhile, away from version {version} that this one "
                f"was moving it to (applied now: {now}); run again when it is done"
            )
        pending = [m for m in self._migrations if m.version <= version and m.version not in applied]
        if pending:
            return pending[0]
        beyond = [m for m in self._migrations if m.version > version and m.version in applied]
        return beyond[-1] if beyond else None

    async def _applied(self, conn: asyncpg.Connection) -> list[AppliedMigration]:
        rows = await conn.fetch("SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version")
        return [AppliedMigration(**dict(row)) for row in rows]

    async def _verified(self, conn: asyncpg.Connection) -> list[AppliedMigration]:
        """The applied migrations, after checking that each still matches its file."""
        applied = await self._applied(conn)
        self._check(applied)
        return applied

    def _check(self, applied: Iterable[AppliedMigration]) -> None:
        for record in applied:
            on_disk = self._by_version.get(record.version)
            if on_disk is None:
                raise MigrationError(
                    f"migration {record.version:04d}_{record.name} is applied but its file is missing"
                )
            if on_disk.checksum != record.checksum:
                raise MigrationError(
                    f"migration {on_disk.label} was edited after it was applied (checksum mismatch); "
                    "add a new migration instead of editing an applied one"
                )

    async def _apply(self, conn: asyncpg.Connection, migration: Migration) -> None:
        log.info("applying migration", extra={"migration": migration.label})
        try:
            await conn.execute(migration.up_sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"{migration.label}.up.sql failed: {_describe(exc, migration.up_sql)}") from exc

    async def _revert(self, conn: asyncpg.Connection, migration: Migration) -> None:
        log.info("reverting migration", extra={"migration": migration.label})
        try:
            await conn.execute(migration.down_sql)
            await conn.execute("DELETE FROM schema_migrations WHERE version = $1", migration.version)
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"{migration.label}.down.sql failed: {_describe(exc, migration.down_sql)}") from exc


def _describe(exc: asyncpg.PostgresError, sql: str) -> str:
    """The server's message, with line and column when PostgreSQL reports a position."""
    position = getattr(exc, "position", None)
    if not position:
        return str(exc)
    offset = int(position) - 1
    line = sql.count("\n", 0, offset) + 1
    column = offset - (sql.rfind("\n", 0, offset) + 1) + 1
    return f"{exc} (line {line}, column {column})"


def new_migration(directory: Path, name: str) -> tuple[Path, Path]:
    """Creates the next-numbered, empty up/down pair for ``name`` and returns their paths."""
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise MigrationError(f"migration name {name!r}: use lowercase letters, digits and underscores")
    version = latest_version(load_migrations(directory)) + 1
    up = directory / f"{version:04d}_{name}.up.sql"
    down = directory / f"{version:04d}_{name}.down.sql"
    up.write_text(f"-- {version:04d}_{name}: what this migration does and why.\n")
    down.write_text(f"-- Reverts {version:04d}_{name}.\n")
    return up, down
