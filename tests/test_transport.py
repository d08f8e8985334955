"""The gRPC port's transport over the wire: TLS and mutual TLS from configuration (with certificates the test
makes), and the keepalive policy: a client pinging more often than the server allows is cut off with
``too_many_pings``, while the shipped client's pings keep within it."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from dataservice.channel import KEEPALIVE_TIME_MS, connect
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.config import ConfigError, Settings
from tests.certs import Authority, write
from tests.harness import settings_for


async def get_user(channel: grpc.aio.Channel) -> grpc.StatusCode:
    """The status of a GetUser for nobody: NOT_FOUND means the call reached the service."""
    try:
        await user_service_pb2_grpc.UserServiceStub(channel).GetUser(pb.GetUserRequest(id=str(uuid.uuid4())), timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture
def authority() -> Authority:
    return Authority("dataservice test CA")


async def test_tls_serves_callers_that_trust_its_ca_and_refuses_plaintext(database_url, start_app, authority, tmp_path):
    server = authority.issue("localhost", server=True)
    app = await start_app(settings_for(
        database_url,
        GRPC_TLS_CERT_FILE=write(tmp_path, "server.pem", server.cert),
        GRPC_TLS_KEY_FILE=write(tmp_path, "server.key", server.key),
    ))
    trusting = grpc.ssl_channel_credentials(root_certificates=authority.pem)
    async with connect(f"localhost:{app.port}", credentials=trusting) as channel:
        assert await get_user(channel) is grpc.StatusCode.NOT_FOUND
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as plaintext:
        assert await get_user(plaintext) is grpc.StatusCode.UNAVAILABLE
    stranger = grpc.ssl_channel_credentials(root_certificates=Authority("another CA").pem)
    async with connect(f"localhost:{app.port}", credentials=stranger) as channel:
        assert await get_user(channel) is grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_serves_only_callers_with_a_certificate_of_its_client_ca(
    database_url, start_app, authority, tmp_path
):
    server = authority.issue("localhost", server=True)
    clients = Authority("client CA")
    app = await start_app(settings_for(
        database_url,
        GRPC_TLS_CERT_FILE=write(tmp_path, "server.pem", server.cert),
        GRPC_TLS_KEY_FILE=write(tmp_path, "server.key", server.key),
        GRPC_TLS_CLIENT_CA_FILE=write(tmp_path, "clients.pem", clients.pem),
    ))
    target = f"localhost:{app.port}"
    known = clients.issue("billing-service", server=False)
    unknown = Authority("elsewhere").issue("intruder", server=False)
    with_known = grpc.ssl_channel_credentials(authority.pem, private_key=known.key, certificate_chain=known.cert)
    with_unknown = grpc.ssl_channel_credentials(authority.pem, private_key=unknown.key, certificate_chain=unknown.cert)
    without = grpc.ssl_channel_credentials(authority.pem)
    for credentials, expected in (
        (with_known, grpc.StatusCode.NOT_FOUND),
        (with_unknown, grpc.StatusCode.UNAVAILABLE),
        (without, grpc.StatusCode.UNAVAILABLE),
    ):
        async with connect(target, credentials=credentials) as channel:
            assert await get_user(channel) is expected


def test_tls_files_are_checked_at_start(tmp_path, authority):
    server = authority.issue("localhost", server=True)
    cert = write(tmp_path, "server.pem", server.cert)
    for env, variable in (
        ({"GRPC_TLS_CERT_FILE": cert}, "GRPC_TLS_CERT_FILE"),
        ({"GRPC_TLS_CERT_FILE": cert, "GRPC_TLS_KEY_FILE": str(tmp_path / "missing.key")}, "GRPC_TLS_KEY_FILE"),
        ({"GRPC_TLS_CLIENT_CA_FILE": cert}, "GRPC_TLS_CLIENT_CA_FILE"),
    ):
        with pytest.raises(ConfigError) as raised:
            Settings.from_env(env)
        assert str(raised.value).startswith(f"{variable}:")


async def test_a_client_pinging_faster_than_the_server_allows_is_cut_off_with_too_many_pings(database_url, start_app):
    app = await start_app(settings_for(database_url, GRPC_MIN_CLIENT_PING_INTERVAL_SECONDS="10"))
    eager = [  # every 100 ms, and lift the client's own floor between pings (5 minutes without data)
        ("grpc.keepalive_time_ms", 100),
        ("grpc.http2.min_time_between_pings_ms", 100),
    ]
    async with connect(f"127.0.0.1:{app.port}", options=eager) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async with asyncio.timeout(30):
                async for _ in watch:
                    pass
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "too_many_pings" in raised.value.debug_error_string().lower().replace(" ", "_")


def test_the_shipped_client_pings_no_faster_than_the_server_allows():
    assert KEEPALIVE_TIME_MS >= Settings().grpc_min_client_ping_interval_seconds * 1000


async def test_a_client_pinging_within_the_servers_allowance_keeps_its_connection(database_url, start_app):
    """The allowance is the server's setting, not grpc's default (5 minutes, which would cut this client off)."""
    app = await start_app(settings_for(database_url, GRPC_MIN_CLIENT_PING_INTERVAL_SECONDS="0.2"))
    polite = [("grpc.keepalive_time_ms", 500), ("grpc.http2.min_time_between_pings_ms", 500)]
    async with connect(f"127.0.0.1:{app.port}", options=polite) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
        with pytest.raises(TimeoutError):  # the stream outlives a dozen pings, and is then left by the test
            async with asyncio.timeout(6):
                async for _ in watch:
                    pass
        watch.cancel()
