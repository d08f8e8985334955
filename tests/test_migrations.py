"""The migration runner on the PostgreSQL under test: up, down, to, status, checksums, concurrency, CLI."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from server.db import migrate
from tests.harness import MIGRATIONS, REPO, write_migration


@pytest.fixture
def scratch_migrations(tmp_path: Path) -> Path:
    """Three small migrations; the first sleeps so that concurrent runners really overlap."""
    write_migration(tmp_path, 1, "alpha", "SELECT pg_sleep(0.3); CREATE TABLE alpha (id int);", "DROP TABLE alpha;")
    write_migration(tmp_path, 2, "beta", "CREATE TABLE beta (id int);", "DROP TABLE beta;")
    write_migration(tmp_path, 3, "gamma", "ALTER TABLE beta ADD COLUMN note text;", "ALTER TABLE beta DROP COLUMN note;")
    return tmp_path


async def tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {row["tablename"] for row in rows}


async def recorded(url: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    return [(row["version"], row["name"]) for row in rows]


async def test_the_projects_migrations_go_up_down_and_up_again(new_database):
    url = await new_database()
    migrator = migrate.Migrator(url, migrate.load_migrations(MIGRATIONS))
    applied = await migrator.up()
    assert [m.version for m in applied] == [m.version for m in migrate.load_migrations(MIGRATIONS)]
    assert "users" in await tables(url)
    await migrator.to(0)
    assert await tables(url) == {"schema_migrations"}
    await migrator.up()
    assert all(line.state == "applied" for line in await migrator.status())


async def test_up_applies_pending_once_and_records_history(new_database, scratch_migrations):
    url = await new_database()
    migrator = migrate.Migrator(url, migrate.load_migrations(scratch_migrations))
    assert [m.label for m in await migrator.up()] == ["0001_alpha", "0002_beta", "0003_gamma"]
    assert await migrator.up() == []
    assert await recorded(url) == [(1, "alpha"), (2, "beta"), (3, "gamma")]
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("SELECT checksum, applied_at FROM schema_migrations WHERE version = 1")
    finally:
        await conn.close()
    assert row["checksum"] == migrate.load_migrations(scratch_migrations)[0].checksum and row["applied_at"]


async def test_down_reverts_the_latest_and_to_moves_both_ways(new_database, scratch_migrations):
    url = await new_database()
    migrator = migrate.Migrator(url, migrate.load_migrations(scratch_migrations))
    await migrator.up()
    assert [m.label for m in await migrator.down()] == ["0003_gamma"]
    assert await recorded(url) == [(1, "alpha"), (2, "beta")]
    assert [m.label for m in await migrator.to(1)] == ["0002_beta"]
    assert await tables(url) == {"schema_migrations", "alpha"}
    assert [m.label for m in await migrator.to(3)] == ["0002_beta", "0003_gamma"]
    await migrator.to(0)
    assert await recorded(url) == [] and await migrator.down() == []
    with pytest.raises(migrate.MigrationError, match="no migration with version 9"):
        await migrator.to(9)


async def test_status_lists_applied_and_pending(new_database, scratch_migrations):
    url = await new_database()
    migrator = migrate.Migrator(url, migrate.load_migrations(scratch_migrations))
    await migrator.to(2)
    states = [(line.version, line.state) for line in await migrator.status()]
    assert states == [(1, "applied"), (2, "applied"), (3, "pending")]


async def test_an_applied_migration_that_was_edited_is_refused(new_database, scratch_migrations):
    url = await new_database()
    await migrate.Migrator(url, migrate.load_migrations(scratch_migrations)).to(2)
    (scratch_migrations / "0002_beta.up.sql").write_text("CREATE TABLE beta (id bigint);")
    edited = migrate.Migrator(url, migrate.load_migrations(scratch_migrations))
    with pytest.raises(migrate.MigrationError, match="0002_beta was edited after it was applied"):
        await edited.up()
    assert [(line.version, line.state) for line in await edited.status()][1] == (2, "edited")
    assert await recorded(url) == [(1, "alpha"), (2, "beta")], "nothing was applied after the refusal"


async def test_two_concurrent_runners_apply_each_migration_once(new_database, scratch_migrations):
    url = await new_database()
    migrations = migrate.load_migrations(scratch_migrations)
    first, second = await asyncio.gather(
        migrate.Migrator(url, migrations).up(), migrate.Migrator(url, migrations).up()
    )
    assert sorted(m.version for m in first + second) == [1, 2, 3]
    assert await recorded(url) == [(1, "alpha"), (2, "beta"), (3, "gamma")]


async def lock_waiters(conn: asyncpg.Connection, count: int) -> None:
    """Returns once ``count`` sessions of this database wait for an advisory lock."""
    async with asyncio.timeout(10):
        while await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ) < count:
            await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("start", "first", "second", "outcome", "final"),
    [
        # the first applies 0002, the second reverts it: the first would apply it again, forever
        pytest.param(1, None, 1, (migrate.MigrationError, [2]), 1, id="up-then-to-1"),
        # the first reverts 0003, the second applies it again
        pytest.param(3, 1, None, (migrate.MigrationError, [3]), 3, id="to-1-then-up"),
        # both revert (0003, then 0002), until the first reverts 0001, which the second wants applied
        pytest.param(3, 0, 1, ([3, 1], migrate.MigrationError), 0, id="to-0-then-to-1"),
        # the replicas' case: each applies what the other left pending, and both succeed
        pytest.param(0, None, None, ([1, 3], [2]), 3, id="up-then-up"),
    ],
)
async def test_runners_with_other_targets_stop_instead_of_undoing_each_other(
    new_database, tmp_path, start, first, second, outcome, final
):
    """Two runners take turns on the lock, step by step; one whose previous step another undid stops with an error
    (up() also goes on over migrations another runner applied). Before, each undid the other's step forever.

    The turns are made certain: the test holds the lock until the first runner, then the second, wait for it.
    Each migration creates one table, which runners can create and drop forever (unlike a column: dropped ones
    count towards the 1600 a table may have).
    """
    names = {1: "alpha", 2: "beta", 3: "gamma"}
    for version, name in names.items():
        write_migration(tmp_path, version, name, f"CREATE TABLE {name} (id int);", f"DROP TABLE {name};")
    url = await new_database()
    migrations = migrate.load_migrations(tmp_path)
    await migrate.Migrator(url, migrations).to(start)

    async def run(target: int | None) -> list[int]:
        migrator = migrate.Migrator(url, migrations)
        return [m.version for m in await (migrator.up() if target is None else migrator.to(target))]

    holder = await asyncpg.connect(url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", migrate.LOCK_KEY)
        runners = [asyncio.create_task(run(first))]
        await lock_waiters(holder, 1)
        runners.append(asyncio.create_task(run(second)))
        await lock_waiters(holder, 2)
        await holder.execute("SELECT pg_advisory_unlock($1)", migrate.LOCK_KEY)
        try:
            # a guard against the runners undoing each other forever, not a timing assertion
            results = await asyncio.wait_for(asyncio.gather(*runners, return_exceptions=True), 30)
        except TimeoutError:
            pytest.fail("the two runners were still undoing each other's migrations after 30 s")
    finally:
        await holder.close()
    failures = [result for result in results if isinstance(result, BaseException)]
    for failure in failures:
        assert isinstance(failure, migrate.MigrationError), failure
        assert "another migration runner moved the schema" in str(failure) and "run again" in str(failure)
    assert [type(result) if isinstance(result, BaseException) else result for result in results] == list(outcome)
    applied = [version for version, _ in await recorded(url)]
    assert applied == list(range(1, final + 1))
    assert await tables(url) == {"schema_migrations", *(names[version] for version in applied)}, "records match tables"


async def test_a_failing_migration_rolls_back_and_names_file_line_and_column(new_database, tmp_path):
    write_migration(tmp_path, 1, "good", "CREATE TABLE good (id int);", "DROP TABLE good;")
    write_migration(tmp_path, 2, "bad", "CREATE TABLE half (id int);\nSELECT nonsense FROM;", "SELECT 1;")
    url = await new_database()
    with pytest.raises(migrate.MigrationError, match=r"0002_bad.up.sql failed: .*line 2, column"):
        await migrate.Migrator(url, migrate.load_migrations(tmp_path)).up()
    assert await recorded(url) == [(1, "good")]
    assert "half" not in await tables(url), "the failed migration left nothing behind"


def test_load_migrations_refuses_malformed_directories(tmp_path):
    (tmp_path / "0001_ok.up.sql").write_text("SELECT 1;")
    with pytest.raises(migrate.MigrationError, match="missing its 0001_ok.down.sql"):
        migrate.load_migrations(tmp_path)
    (tmp_path / "0001_ok.down.sql").write_text("SELECT 1;")
    (tmp_path / "1_Bad-Name.up.sql").write_text("SELECT 1;")
    with pytest.raises(migrate.MigrationError, match="expected a name like"):
        migrate.load_migrations(tmp_path)


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=REPO,
        env={**os.environ, "LOG_LEVEL": "WARNING", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_migrate_up_status_to_and_down(new_database, scratch_migrations):
    url = await new_database()
    env = {"DATABASE_URL": url, "MIGRATIONS_DIR": str(scratch_migrations)}
    up = run_cli("migrate", "up", **env)
    assert up.returncode == 0, up.stderr
    assert up.stdout.split() == ["up:", "0001_alpha", "up:", "0002_beta", "up:", "0003_gamma"]
    to = run_cli("migrate", "to", "1", **env)
    assert to.returncode == 0 and "0003_gamma" in to.stdout and "0002_beta" in to.stdout
    down = run_cli("migrate", "down", **env)
    assert down.returncode == 0 and "0001_alpha" in down.stdout
    status = run_cli("migrate", "status", **env)
    assert [line.split()[:3] for line in status.stdout.splitlines()] == [
        ["0001", "alpha", "pending"], ["0002", "beta", "pending"], ["0003", "gamma", "pending"]
    ]


def test_cli_migrate_new_creates_the_next_pair(tmp_path):
    shutil.copytree(MIGRATIONS, tmp_path / "m")
    result = run_cli("migrate", "new", "add_widgets", MIGRATIONS_DIR=str(tmp_path / "m"))
    assert result.returncode == 0, result.stderr
    next_version = migrate.latest_version(migrate.load_migrations(MIGRATIONS)) + 1
    assert (tmp_path / "m" / f"{next_version:04d}_add_widgets.up.sql").exists()
    assert (tmp_path / "m" / f"{next_version:04d}_add_widgets.down.sql").exists()


async def test_cli_refuses_an_edited_migration_with_one_clear_line(new_database, scratch_migrations):
    url = await new_database()
    env = {"DATABASE_URL": url, "MIGRATIONS_DIR": str(scratch_migrations)}
    assert run_cli("migrate", "up", **env).returncode == 0
    (scratch_migrations / "0001_alpha.up.sql").write_text("CREATE TABLE alpha (id bigint);")
    result = run_cli("migrate", "up", **env)
    assert result.returncode == 1
    assert "checksum mismatch" in result.stderr and "Traceback" not in result.stderr
