"""Connecting to PostgreSQL, by cause: what no retry can fix (a refused password, an unknown role or database, TLS
the server does not offer) stops the start with one plain line naming the cause and the setting, and under a
running server is logged as an ERROR with every health status NOT_SERVING until PostgreSQL accepts the server
again; what passes (the server down, refusing connections for a while, a proxy in front of it closing connections
during a failover) is retried until it serves.

The server down at start and back later is tests/test_health.py's. Passwords are checked by a private PostgreSQL
the tests switch to scram-sha-256: the shared ones trust every local client.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc

from server.app import StartupError
from tests.backends import EmbeddedPostgres, PrivatePostgres, free_port, with_database
from tests.certs import Authority
from tests.grpc_errors import error_info, fails
from tests.harness import MIGRATIONS, REPO, settings_for
from tests.tcp_proxy import TcpProxy, tcp_opener
from tests.test_check import check
from tests.test_db_ssl import create_database_on
from tests.test_health import NOT_SERVING, SERVING, wait_for_status

PASSWORD = "right-horse-battery"
OTHER_PASSWORD = "rotated-horse-battery"
SCRAM_ONLY = "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n"


def with_user(url: str, user: str, password: str = "") -> str:
    """``url`` (TCP or Unix socket) logging in as ``user`` with ``password``."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


@dataclass
class PasswordPostgres:
    """A private PostgreSQL that checks passwords, and a connection of the test's own to change them."""

    url: str  # with the right password
    admin: asyncpg.Connection

    async def set_password(self, password: str) -> None:
        await self.admin.execute(f"ALTER ROLE postgres PASSWORD '{password}'")

    async def end_other_sessions(self) -> None:
        """Ends every session but the test's own, as a restart of PostgreSQL would."""
        await self.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )


@pytest.fixture
async def password_postgres() -> AsyncIterator[PasswordPostgres]:
    server = EmbeddedPostgres()
    try:
        conn = await asyncpg.connect(server.url)
        await conn.execute(f"ALTER ROLE postgres PASSWORD '{PASSWORD}'")
        hba_file = await conn.fetchval("SHOW hba_file")
        with open(hba_file, "w") as hba:
            hba.write(SCRAM_ONLY)
        await conn.execute("SELECT pg_reload_conf()")
        url = with_user(server.url, "postgres", PASSWORD)
        yield PasswordPostgres(url, conn)
        await conn.close()
    finally:
        await asyncio.to_thread(server.close)


async def serve_process(database_url: str) -> tuple[int | None, str]:
    """Runs ``python -m server`` on ``database_url`` until it exits (at most a minute): its status and stderr."""
    env = {
        "PATH": os.environ["PATH"],
        "DATABASE_URL": database_url,
        "GRPC_ADDRESS": f"127.0.0.1:{free_port()}",
        "MIGRATIONS_DIR": str(MIGRATIONS),
        "WORKERS": "1",
        "DB_CONNECT_TIMEOUT_SECONDS": "3",
        "LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", cwd=REPO, env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode, stderr.decode()


async def test_a_refused_password_stops_the_server_at_start_with_one_plain_line(password_postgres):
    code, stderr = await serve_process(with_user(password_postgres.url, "postgres", "wrong-password"))
    assert code == 2, stderr
    assert stderr.splitlines()[-1] == (
        "configuration error: PostgreSQL refused the password for role 'postgres': check the password in "
        "DATABASE_URL (or DB_PASSWORD)"
    )
    assert "wrong-password" not in stderr


def unknown_role(admin_url: str, proxy: TcpProxy) -> str:
    return with_user(admin_url, "no_such_role")


def unknown_database(admin_url: str, proxy: TcpProxy) -> str:
    return with_database(admin_url, "no_such_database")


def tls_required_where_not_offered(admin_url: str, proxy: TcpProxy) -> str:
    """sslmode=require, where neither the machine's PostgreSQL nor the embedded one turns ssl on."""
    return f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres?sslmode=require"


@pytest.mark.parametrize(
    ("make_url", "said"),
    [
        (unknown_role, "PostgreSQL refused role 'no_such_role' (role \"no_such_role\" does not exist): check the user"),
        (unknown_database, "PostgreSQL has no database 'no_such_database': check the database in DATABASE_URL"),
        (tls_required_where_not_offered, "PostgreSQL does not accept TLS, which sslmode=require requires"),
    ],
)
async def test_a_configuration_postgresql_refuses_stops_the_start_and_check_says_the_same(
    postgres_admin_url, proxy, start_app, make_url, said
):
    url = make_url(postgres_admin_url, proxy)
    with pytest.raises(StartupError) as raised:
        await start_app(settings_for(url))
    assert str(raised.value).startswith(said), raised.value

    code, output = await check(DATABASE_URL=url)
    problems = [line for line in output.splitlines() if line.startswith("PROBLEM")]
    assert code == 1 and problems[0] == f"PROBLEM: {raised.value}", output


async def health_errors_once_logged(caplog: pytest.LogCaptureFixture, within: float = 30.0) -> list[str]:
    """The health monitor's ERROR lines, once there is one; the test fails after ``within`` seconds without."""
    give_up = time.monotonic() + within
    while True:
        errors = [
            record.getMessage()
            for record in caplog.records
            if record.name == "server.health" and record.levelno == logging.ERROR
        ]
        if errors:
            return errors
        assert time.monotonic() < give_up, f"no ERROR from the health monitor within {within} s"
        await asyncio.sleep(0.05)


async def test_a_password_rotated_under_a_running_server_is_an_error_not_serving_and_unavailable_until_it_is_back(
    password_postgres, start_app, caplog
):
    caplog.set_level(logging.INFO, logger="server.health")
    app = await start_app(settings_for(password_postgres.url))
    await wait_for_status(app.port, SERVING)

    await password_postgres.set_password(OTHER_PASSWORD)
    await password_postgres.end_other_sessions()  # the pool must connect anew, and is refused
    await wait_for_status(app.port, NOT_SERVING)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        error = await fails(users.GetUser(pb.GetUserRequest(id="00000000-0000-0000-0000-000000000000"), timeout=10))
        assert error.code() is grpc.StatusCode.UNAVAILABLE
        assert error_info(error).reason == "BACKEND_UNAVAILABLE"

        # NOT_SERVING may come first from a check that was mid-query when the sessions ended (PostgreSQL
        # unreachable, for that check): the refusal is logged by the check after it.
        errors = await health_errors_once_logged(caplog)
        assert errors == [
            "PostgreSQL refused the password for role 'postgres': check the password in DATABASE_URL "
            "(or DB_PASSWORD) (checking again every 0.2 s)"
        ], "one line when the refusal begins, not one per check"

        await password_postgres.set_password(PASSWORD)
        await wait_for_status(app.port, SERVING)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await users.GetUser(pb.GetUserRequest(id="00000000-0000-0000-0000-000000000000"), timeout=10)
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND, "queries work again"
    assert "PostgreSQL accepts this server's connections again" in caplog.messages


async def test_a_database_refusing_connections_for_a_while_is_retried_until_the_server_serves(new_database, start_app):
    url = await new_database()
    name = urlsplit(url).path.lstrip("/")
    admin = await asyncpg.connect(with_database(url, "postgres"))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        app = await start_app(settings_for(url))  # starts, NOT_SERVING: maintenance passes
        await wait_for_status(app.port, NOT_SERVING)
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await wait_for_status(app.port, SERVING)
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def tls_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL of the module's own with TLS on (sslmode=require encrypts without verifying its certificate)."""
    issued = Authority("postgres test CA").issue("localhost", server=True)
    server = PrivatePostgres(
        settings={"ssl": "on", "ssl_cert_file": "server.crt", "ssl_key_file": "server.key"},
        files={"server.crt": issued.cert, "server.key": issued.key},
    )
    yield server
    server.close()


def error_response(sqlstate: str, message: str) -> bytes:
    """A PostgreSQL ErrorResponse (FATAL), as a server answers a connection it cannot serve."""
    fields = {b"S": "FATAL", b"V": "FATAL", b"C": sqlstate, b"M": message}
    body = b"".join(kind + value.encode() + b"\0" for kind, value in fields.items()) + b"\0"
    return b"E" + (4 + len(body)).to_bytes(4, "big") + body


@pytest.mark.parametrize(
    "answer",
    [b"", error_response("53000", "could not fork new process for connection: Resource temporarily unavailable")],
    ids=["closed without a word", "an error response"],
)
async def test_a_tls_request_failing_in_passing_under_sslmode_require_is_retried_until_the_server_serves(
    tls_postgres, start_app, answer
):
    """In front of a PostgreSQL with TLS on, a proxy that turns connections away, as PgBouncer or a cloud proxy
    does while its server fails over: it reads the TLS request and closes the connection, or answers it with
    an error. asyncpg raises a bare ConnectionError for either, as for a server that declines TLS; unlike that
    refusal, no setting is wrong: the server starts NOT_SERVING, keeps trying, and serves once connections
    reach PostgreSQL again."""
    database = await create_database_on(tls_postgres)
    proxy = TcpProxy(tcp_opener("127.0.0.1", tls_postgres.port))
    await proxy.start()
    try:
        proxy.refusing = answer
        app = await start_app(settings_for(f"postgresql://postgres@127.0.0.1:{proxy.port}/{database}?sslmode=require"))
        await wait_for_status(app.port, NOT_SERVING)
        refused = proxy.refused
        async with asyncio.timeout(30):  # backoff from 0.1 s, at most HEALTH_CHECK_INTERVAL_SECONDS (0.2 s)
            while proxy.refused == refused:
                await asyncio.sleep(0.02)
        proxy.refusing = None
        await wait_for_status(app.port, SERVING)
    finally:
        await proxy.close()
