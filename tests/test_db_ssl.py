"""TLS between the service and PostgreSQL, over the wire: a private PostgreSQL serving TLS under a certificate the
test's own CA issued for localhost and 127.0.0.1 (tests/certs.py), the service verifying it with
DB_SSLMODE=verify-full and DB_SSLROOTCERT (or the same as DATABASE_URL query parameters), and the refusals an
operator must see as what they are: a certificate the CA did not sign, a name the certificate does not cover,
TLS required of a server without it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.config import ConfigError, Settings
from tests.backends import PrivatePostgres, unique_name
from tests.certs import Authority, write
from tests.harness import settings_for, unique_email
from tests.test_check import check


@pytest.fixture(scope="module")
def authority() -> Authority:
    return Authority("postgres test CA")


@pytest.fixture(scope="module")
def tls_postgres(authority: Authority) -> Iterator[PrivatePostgres]:
    """TLS on, on 127.0.0.1 (in its certificate) and 127.0.0.2 (not in it)."""
    issued = authority.issue("localhost", server=True)
    server = PrivatePostgres(
        settings={
            "ssl": "on",
            "ssl_cert_file": "server.crt",
            "ssl_key_file": "server.key",
            "listen_addresses": "127.0.0.1,127.0.0.2",
        },
        files={"server.crt": issued.cert, "server.key": issued.key},
    )
    yield server
    server.close()


@pytest.fixture(scope="module")
def plain_postgres() -> Iterator[PrivatePostgres]:
    """TLS off, as PostgreSQL is by default."""
    server = PrivatePostgres()
    yield server
    server.close()


@pytest.fixture
def ca_file(authority: Authority, tmp_path: Path) -> str:
    return write(tmp_path, "ca.pem", authority.pem)


async def create_database_on(server: PrivatePostgres) -> str:
    name = unique_name("tls")
    conn = await asyncpg.connect(server.url, ssl=False)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


@pytest.mark.parametrize("form", ["DB_* parts", "DATABASE_URL"])
async def test_the_service_serves_over_verified_tls_and_all_its_connections_use_it(
    tls_postgres, ca_file, start_app, form
):
    database = await create_database_on(tls_postgres)
    if form == "DATABASE_URL":
        settings = settings_for(
            f"postgresql://postgres@localhost:{tls_postgres.port}/{database}?sslmode=verify-full&sslrootcert={ca_file}"
        )
    else:
        settings = settings_for(  # no DATABASE_URL: its parts instead
            "", DB_HOST="127.0.0.1", DB_PORT=str(tls_postgres.port), DB_NAME=database,
            DB_SSLMODE="verify-full", DB_SSLROOTCERT=ca_file,
        )
    app = await start_app(settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        users = user_service_pb2_grpc.UserServiceStub(channel)
        created = await users.CreateUser(
            pb.CreateUserRequest(user=pb.User(email=unique_email("tls"), display_name="Ada"), password="long enough"),
            timeout=10,
        )
        assert (await users.GetUser(pb.GetUserRequest(id=created.user.id), timeout=5)).user == created.user

    conn = await asyncpg.connect(tls_postgres.url, ssl=False)
    try:
        connections = await conn.fetch(
            "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
            " WHERE a.datname = $1",  # the service's own database: whatever of the service is connected to it
            database,
        )
    finally:
        await conn.close()
    assert connections and all(row["ssl"] and row["version"].startswith("TLS") for row in connections), connections


@pytest.mark.parametrize(
    ("host", "sslmode", "other_ca", "refusal"),
    [
        ("127.0.0.1", "verify-full", True, "unable to get local issuer certificate"),
        ("127.0.0.2", "verify-full", False, "certificate is not valid for '127.0.0.2'"),
        ("127.0.0.2", "verify-ca", False, None),
    ],
    ids=["a CA that did not sign it", "a name it does not cover", "verify-ca checks the CA, not the name"],
)
async def test_a_certificate_that_does_not_verify_is_refused_as_such(
    tls_postgres, ca_file, tmp_path, host, sslmode, other_ca, refusal
):
    root = write(tmp_path, "other-ca.pem", Authority("another CA").pem) if other_ca else ca_file
    code, output = await check(
        DB_HOST=host, DB_PORT=str(tls_postgres.port), DB_SSLMODE=sslmode, DB_SSLROOTCERT=root
    )
    problems = [line for line in output.splitlines() if line.startswith("PROBLEM")]
    if refusal is None:
        assert "cannot connect" not in output and "max_connections" in output, output
    else:
        assert code == 1 and "certificate verify failed" in problems[0] and refusal in problems[0], output


async def test_tls_required_of_a_server_without_it_fails_plainly(plain_postgres):
    code, output = await check(DB_HOST="127.0.0.1", DB_PORT=str(plain_postgres.port), DB_SSLMODE="require")
    problems = [line for line in output.splitlines() if line.startswith("PROBLEM")]
    assert code == 1 and "rejected SSL upgrade" in problems[0], output


def test_a_ca_file_is_checked_at_start_and_needs_a_verifying_mode(ca_file):
    dsn = Settings.from_env({"DB_HOST": "db", "DB_SSLMODE": "verify-full", "DB_SSLROOTCERT": ca_file}).database_url
    assert dsn.reveal().endswith(f"?sslmode=verify-full&sslrootcert={ca_file.replace('/', '%2F')}")
    missing = f"/nonexistent/{uuid.uuid4().hex}.pem"
    verify_missing = {"DB_HOST": "db", "DB_SSLMODE": "verify-full", "DB_SSLROOTCERT": missing}
    for env, message in [
        (verify_missing, "DB_SSLROOTCERT: expected a readable"),
        ({"DB_HOST": "db", "DB_SSLROOTCERT": ca_file}, "DB_SSLROOTCERT: a CA file is used with DB_SSLMODE verify-full"),
        ({"DATABASE_URL": f"postgresql://db/app?sslmode=verify-ca&sslrootcert={missing}"}, "DATABASE_URL: sslrootcert"),
        ({"DATABASE_URL": "postgresql://db/app", "DB_SSLROOTCERT": ca_file}, "DATABASE_URL: set together with"),
        ({"DATABASE_URL": "postgresql://db/app", "DB_SSLMODE": "require"}, "DATABASE_URL: set together with"),
    ]:
        with pytest.raises(ConfigError) as raised:
            Settings.from_env(env)
        assert str(raised.value).startswith(message), raised.value
