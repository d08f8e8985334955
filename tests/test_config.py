"""Configuration from the environment: defaults, DSN assembly, and one clear line for each bad value."""

from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import pytest

from server.config import CacheBackend, ConfigError, Settings
from server.cpus import usable_cpu_count
from server.secret import Secret
from tests.harness import REPO


def test_defaults_serve_on_50051_over_the_embedded_database_with_an_in_process_cache():
    settings = Settings.from_env({})
    assert settings.grpc_address == "[::]:50051"
    assert settings.database_url is None and settings.cache_backend is CacheBackend.MEMORY
    assert settings.metrics_port is None


def test_db_parts_build_a_quoted_dsn_and_redis_url_selects_redis():
    settings = Settings.from_env(
        {"DB_HOST": "db.internal", "DB_USER": "svc", "DB_PASSWORD": "p@ss:/w", "DB_NAME": "main",
         "DB_SSLMODE": "require", "REDIS_URL": "redis://cache:6379/0"}
    )
    assert settings.database_url.reveal() == "postgresql://svc:p%40ss%3A%2Fw@db.internal:5432/main?sslmode=require"
    assert settings.cache_backend is CacheBackend.REDIS


def test_secrets_never_show_in_repr():
    settings = Settings.from_env({"DATABASE_URL": "postgresql://u:hunter2@h/d", "REDIS_URL": "redis://:hunter3@r/0"})
    assert "hunter2" not in repr(settings) and "hunter3" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DB_HOST": "h", "DB_PORT": "five"}, "DB_PORT"),
        ({"DB_HOST": "h", "DB_PORT": "70000"}, "DB_PORT"),
        ({"DB_HOST": "h", "DB_SSLMODE": "sometimes"}, "DB_SSLMODE"),
        ({"DB_USER": "u"}, "DB_HOST"),
        ({"DATABASE_URL": "postgresql://h/d", "DB_HOST": "h"}, "DATABASE_URL"),
        ({"DATABASE_URL": "mysql://h/d"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h:notaport/d"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h1:5432,h2:99999/d"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@h/d?sslmode=bogus"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://u@/d?host=/run/pg&port=x"}, "DATABASE_URL"),
        ({"PAGE_TOKEN_SECRET": "short"}, "PAGE_TOKEN_SECRET"),
        ({"REDIS_URL": "http://r"}, "REDIS_URL"),
        ({"CACHE_BACKEND": "redis"}, "CACHE_BACKEND"),
        ({"CACHE_BACKEND": "disk"}, "CACHE_BACKEND"),
        ({"DB_POOL_MAX_SIZE": "0"}, "DB_POOL_MAX_SIZE"),
        ({"DB_POOL_MIN_SIZE": "20"}, "DB_POOL_MIN_SIZE"),
        ({"MIGRATE_ON_START": "yes"}, "MIGRATE_ON_START"),
        ({"GRPC_ADDRESS": "50051"}, "GRPC_ADDRESS"),
        ({"METRICS_PORT": "0"}, "METRICS_PORT"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
        ({"EMBEDDING_EF_SEARCH": "1001"}, "EMBEDDING_EF_SEARCH"),
        ({"EMBEDDING_SCAN_BUDGET": "0"}, "EMBEDDING_SCAN_BUDGET"),
        ({"EMBEDDING_INDEX_BUILD_MEMORY": "512 MB; DROP TABLE x"}, "EMBEDDING_INDEX_BUILD_MEMORY"),
        ({"RECOMMENDATION_COLLECTION": "Content"}, "RECOMMENDATION_COLLECTION"),
        ({"RECOMMENDATION_WEIGHTS": "view=1,like=3"}, "RECOMMENDATION_WEIGHTS"),
        ({"RECOMMENDATION_WEIGHTS": "view=1,like=-3,share=5,bookmark=4"}, "RECOMMENDATION_WEIGHTS"),
        ({"RECOMMENDATION_WEIGHTS": "view=1,like=nan,share=5,bookmark=4"}, "RECOMMENDATION_WEIGHTS"),
        ({"RECOMMENDATION_FEED_SIZE": "1001"}, "RECOMMENDATION_FEED_SIZE"),
    ],
)
def test_each_bad_value_names_its_variable(env, variable):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert str(raised.value).startswith(f"{variable}:")


@pytest.mark.parametrize(
    "env",
    [
        {"DATABASE_URL": "mysql://admin:hunter2@h/d"},
        {"DATABASE_URL": "postgresql://app:hunter2#x@db:5432/app"},  # '#' ends the authority: unmaskable
        {"DATABASE_URL": "postgresql://app:hunter2/x@db:5432/app"},
        {"REDIS_URL": "http://:hunter2@r:6379/0"},
    ],
)
def test_a_bad_url_never_shows_its_password(env):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert "hunter2" not in str(raised.value)
    assert str(raised.value).startswith(f"{next(iter(env))}:")


def test_a_url_may_leave_the_port_to_its_default():
    for url in ("postgresql://u@db/app", "postgresql://u@db:/app", "postgresql://u@[::1]/app", "postgresql://u@a,b:6432/app"):
        assert Settings.from_env({"DATABASE_URL": url}).database_url == Secret(url)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DB_HOST": "h", "DB_PORT": "five"}, "DB_PORT"),
        ({"DATABASE_URL": "postgresql://postgres@127.0.0.1:notaport/test"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://postgres@127.0.0.1/test?sslmode=bogus"}, "DATABASE_URL"),
    ],
)
def test_the_server_refuses_to_start_on_bad_config_with_one_line(env, variable):
    result = subprocess.run(
        [sys.executable, "-m", "server"],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"configuration error: {variable}:")


def test_a_page_token_secret_is_never_echoed():
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"PAGE_TOKEN_SECRET": "hunter2"})
    assert "hunter2" not in str(raised.value)


def test_db_host_given_a_socket_directory_connects_through_that_socket():
    dsn = Settings.from_env({"DB_HOST": "/run/pg sockets", "DB_PORT": "6432", "DB_NAME": "app"}).database_url
    assert dsn is not None
    parts = urlsplit(dsn.reveal())
    assert (parts.path, parse_qs(parts.query)) == (
        "/app", {"host": ["/run/pg sockets"], "port": ["6432"], "sslmode": ["prefer"]}
    )


def test_recommendation_weights_are_read_in_any_order():
    settings = Settings.from_env({"RECOMMENDATION_WEIGHTS": " bookmark=2, view=0.5,share=0,like=3"})
    assert dict(settings.recommendation_weights) == {"view": 0.5, "like": 3.0, "share": 0.0, "bookmark": 2.0}


def test_workers_default_to_the_usable_cpus_only_when_the_cache_can_be_shared(monkeypatch):
    monkeypatch.setattr("server.config.usable_cpu_count", lambda: 4)
    assert Settings.from_env({}).workers == 1  # the in-process cache: one process
    assert Settings.from_env({"CACHE_BACKEND": "none"}).workers == 4
    assert Settings.from_env({"REDIS_URL": "redis://cache:6379/0"}).workers == 4
    assert Settings.from_env({"CACHE_BACKEND": "none", "GRPC_ADDRESS": "127.0.0.1:0"}).workers == 1


def test_default_workers_leave_each_two_connections_of_the_budget(monkeypatch):
    monkeypatch.setattr("server.config.usable_cpu_count", lambda: 32)
    crowded = Settings.from_env({"CACHE_BACKEND": "none"})
    assert (crowded.workers, crowded.db_pool_max_size) == (5, 2)  # the default budget of 10
    roomy = Settings.from_env({"CACHE_BACKEND": "none", "DB_CONNECTION_BUDGET": "200"})
    assert (roomy.workers, roomy.db_pool_max_size) == (32, 6)


def test_the_connection_budget_is_split_between_the_workers():
    one = Settings.from_env({"CACHE_BACKEND": "none", "WORKERS": "1"})
    assert (one.db_connection_budget, one.db_pool_max_size) == (10, 10)
    split = Settings.from_env({"CACHE_BACKEND": "none", "WORKERS": "4", "DB_CONNECTION_BUDGET": "22"})
    assert (split.db_pool_max_size, split.db_pool_min_size) == (5, 2)  # 22 // 4, under DB_POOL_MAX_SIZE 10
    capped = Settings.from_env({"CACHE_BACKEND": "none", "WORKERS": "2", "DB_CONNECTION_BUDGET": "100"})
    assert capped.db_pool_max_size == 10


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORKERS": "2"}, "cannot share the in-process cache"),
        ({"WORKERS": "2", "CACHE_BACKEND": "none", "GRPC_ADDRESS": "127.0.0.1:0"}, "cannot share port 0"),
        ({"WORKERS": "3", "CACHE_BACKEND": "none", "DB_CONNECTION_BUDGET": "2"}, "each needs at least one"),
        ({"WORKERS": "0"}, "WORKERS"),
    ],
)
def test_workers_that_cannot_work_are_refused(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(("cpu_max", "cpus"), [("max 100000\n", 64), ("200000 100000\n", 2), ("50000 100000\n", 1),
                                               ("250000 100000\n", 3), (None, 64)])
def test_usable_cpus_follow_the_cgroup_quota(tmp_path, monkeypatch, cpu_max, cpus):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    assert usable_cpu_count(path) == cpus
