"""The pool's connection settings, seen from outside the process: PostgreSQL's pg_stat_activity shows the
connections' application_name, their replacement after DB_POOL_MAX_QUERIES and their close after
DB_POOL_MAX_IDLE_SECONDS idle; the kernel's own table of TCP sockets (/proc/net/tcp) shows the keepalive timer
DB_TCP_KEEPALIVE_SECONDS arms on each pooled connection."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import asyncpg
import grpc
import pytest
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc

from server.config import ConfigError, Settings
from tests.backends import unique_name
from tests.grpc_errors import fails
from tests.harness import quiet_settings_for

async def backends_of(admin_url: str, application_name: str) -> set[int]:
    """The PostgreSQL backends serving connections that call themselves ``application_name``."""
    conn = await asyncpg.connect(admin_url)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", application_name)
    finally:
        await conn.close()
    return {row["pid"] for row in rows}


async def get_nobody(port: int) -> None:
    """One GetUser that reaches PostgreSQL (and finds nobody)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        error = await fails(users.GetUser(pb.GetUserRequest(id=str(uuid.uuid4())), timeout=10))
    assert error.code() is grpc.StatusCode.NOT_FOUND, error.details()


async def keepalive_timers(remote_port: int) -> list[float | None]:
    """For each established TCP connection to 127.0.0.1:``remote_port``, the seconds its keepalive timer has
    left, or None when it has none, as the kernel reports them in /proc/net/tcp (timer kind 2: keepalive, 0:
    none). While a connection's data awaits its acknowledgement, the kernel reports that timer (kind 1)
    instead: the report is read again until no connection has one."""
    ticks = os.sysconf("SC_CLK_TCK")
    while True:
        timers = []
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            _, _, remote, state, _, timer, *_ = line.split()
            if remote == f"0100007F:{remote_port:04X}" and state == "01":  # 01: established
                kind, left = timer.split(":")
                timers.append((kind, int(left, 16) / ticks))
        if all(kind in ("00", "02") for kind, _ in timers):
            return [left if kind == "02" else None for kind, left in timers]
        await asyncio.sleep(0.01)


async def test_connections_carry_db_application_name_and_are_replaced_after_db_pool_max_queries(
    new_database, start_app, postgres_admin_url
):
    name = unique_name("pool_recycling")
    app = await start_app(quiet_settings_for(
        await new_database(), DB_APPLICATION_NAME=name, DB_POOL_MAX_QUERIES="10", DB_POOL_MAX_SIZE="1",
        DB_POOL_MIN_SIZE="1",
    ))
    seen: set[int] = set()
    for _ in range(40):  # one connection at a time, each replaced after 10 queries, its setup's included
        await get_nobody(app.port)
        seen |= await backends_of(postgres_admin_url, name)
    assert len(seen) >= 3, seen


async def test_an_idle_connection_closes_after_db_pool_max_idle_seconds(new_database, start_app, postgres_admin_url):
    name = unique_name("pool_idle")
    app = await start_app(quiet_settings_for(
        await new_database(), DB_APPLICATION_NAME=name, DB_POOL_MAX_IDLE_SECONDS="0.2", DB_POOL_MIN_SIZE="2"
    ))
    await get_nobody(app.port)
    async with asyncio.timeout(30):  # the default, 300 s, would keep them open well past this
        while await backends_of(postgres_admin_url, name):
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("keepalive", [37, 0])
async def test_pooled_tcp_connections_probe_a_silent_peer_after_db_tcp_keepalive_seconds(
    proxy, new_database, start_app, keepalive
):
    app = await start_app(quiet_settings_for(
        proxy.url(await new_database()), DB_TCP_KEEPALIVE_SECONDS=str(keepalive), DB_POOL_MIN_SIZE="3"
    ))
    await get_nobody(app.port)
    async with asyncio.timeout(10):
        timers = await keepalive_timers(proxy.port)
    assert len(timers) == app.pool.get_size() >= 3, timers
    if keepalive:
        assert all(timer is not None and 0 < timer <= keepalive for timer in timers), timers
    else:  # left to the OS, whose default is no keepalive at all
        assert timers == [None] * len(timers)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DB_POOL_MAX_QUERIES", "0"),
        ("DB_POOL_MAX_IDLE_SECONDS", "-1"),
        ("DB_TCP_KEEPALIVE_SECONDS", "32768"),
        ("DB_TCP_KEEPALIVE_SECONDS", "1.5"),
        ("DB_APPLICATION_NAME", " "),
    ],
)
def test_each_bad_pool_setting_names_its_variable(variable, value):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({variable: value})
    assert str(raised.value).startswith(f"{variable}:")


def test_pool_settings_default_to_recycling_closing_idle_and_keepalive():
    settings = Settings.from_env({})
    assert (settings.db_pool_max_queries, settings.db_pool_max_idle_seconds, settings.db_tcp_keepalive_seconds) == (
        50000, 300.0, 60
    )
    assert settings.db_application_name == "dataservice"
