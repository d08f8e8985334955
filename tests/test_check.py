"""``python -m server check`` as an operator runs it: a real process over the real PostgreSQL and Redis, which
prints what it found with secrets masked, and exits 1 naming what to fix."""

from __future__ import annotations

import asyncio
import os
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.backends import free_port
from tests.harness import MIGRATIONS, REPO

PASSWORD = "s3cret-pw-never-shown"


def with_password(url: str) -> str:
    """``url`` with a password in it (the servers under test trust their clients, so it is not checked)."""
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{PASSWORD}@{host}"))


async def check(**env: str) -> tuple[int, str]:
    environment = {
        "PATH": os.environ["PATH"],
        "MIGRATIONS_DIR": str(MIGRATIONS),
        "LOG_LEVEL": "WARNING",
        "DB_CONNECT_TIMEOUT_SECONDS": "3",
        **env,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "check", cwd=REPO, env=environment,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, output.decode()


async def test_a_healthy_deployment_checks_out_with_every_secret_masked(app, database_url, redis_url, pgvector_offered):
    code, output = await check(
        DATABASE_URL=with_password(database_url), REDIS_URL=redis_url, PAGE_TOKEN_SECRET=PASSWORD * 2
    )
    assert PASSWORD not in output
    assert "max_connections" in output and "migrations: schema at 7, this build ships 7" in output
    assert "PONG in" in output and "DATABASE_URL = postgresql://postgres:***@" in output
    assert "PAGE_TOKEN_SECRET = (set, not shown)" in output
    if pgvector_offered:
        assert "pgvector 0." in output
        assert (code, output.splitlines()[-1]) == (0, "ok: nothing to fix"), output
    else:  # the machine's PostgreSQL 15: the one problem is pgvector's absence, and it says what to do
        problems = [line for line in output.splitlines() if line.startswith("PROBLEM")]
        assert code == 1 and len(problems) == 1 and "install pgvector" in problems[0], output


@pytest.mark.parametrize(
    ("env", "advice"),
    [
        ({"REDIS_URL": "redis://127.0.0.1:{port}/0"}, "check REDIS_URL"),
        (
            {"DB_POOL_MAX_SIZE": "5000", "DB_POOL_MIN_SIZE": "1"},
            "one replica holds up to 5000 connections (WORKERS=1 pools of 5000, within DB_CONNECTION_BUDGET=5000)",
        ),
        # 100 pools of 10 each (the default DB_POOL_MAX_SIZE, under the budget's 50 a worker): the replica's
        # 1,000 connections are over max_connections (100 on both servers under test), though one pool is not
        (
            {"WORKERS": "100", "CACHE_BACKEND": "none", "DB_CONNECTION_BUDGET": "5000"},
            "one replica holds up to 1000 connections (WORKERS=100 pools of 10, within DB_CONNECTION_BUDGET=5000)",
        ),
    ],
    ids=["Redis unreachable", "one pool over max_connections", "WORKERS pools together over max_connections"],
)
async def test_each_problem_is_said_with_what_to_do_and_fails_the_check(app, database_url, env, advice):
    env = {name: value.format(port=free_port()) for name, value in env.items()}
    code, output = await check(DATABASE_URL=database_url, **env)
    assert code == 1 and any(advice in line for line in output.splitlines() if line.startswith("PROBLEM")), output


async def test_an_unreachable_database_and_a_schema_behind_are_problems(new_database):
    code, output = await check(DATABASE_URL=f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/nowhere")
    assert code == 1 and "cannot connect to PostgreSQL" in output and "check DATABASE_URL" in output
    assert PASSWORD not in output
    code, output = await check(DATABASE_URL=await new_database())
    assert code == 1 and "run `python -m server migrate up`" in output, output
