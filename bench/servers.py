"""Start, wait for and stop the measured servers (echo, reference, service), each as its own process.

All run from the repo root with the runner's interpreter (the venv's), so they share grpcio, protobuf and
uvloop. Their output goes to a log file in the work directory, whose tail is shown when one fails to start.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import echo_server
from server.db.embedded import start_embedded_postgres

REPO_ROOT = Path(__file__).resolve().parent.parent
# What the service reads to find its database (server/config.py); the reference gets DATABASE_URL alone.
_DATABASE_VARIABLES = ("DATABASE_URL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD", "DB_SSLMODE")


class ServerError(RuntimeError):
    """A server did not start or become ready; the message holds its log tail."""


def free_port() -> int:
    """A port the kernel just had free on 127.0.0.1 (it may be taken again: rare, and it fails loudly)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the runner dies, so a killed run leaves no servers behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class ServerProcess:
    """One running server: its process, its ports and its log."""

    name: str
    process: asyncio.subprocess.Process
    grpc_port: int
    metrics_port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def url(self, method: str) -> str:
        return f"http://{self.target}{method}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def stop(self, grace_s: float = 30.0) -> None:
        await _stop(self.process, grace_s)


async def _stop(process: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM, then SIGKILL after grace_s; safe to call twice or after the process died."""
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace_s)
    except TimeoutError:
        process.kill()
        await process.wait()


@dataclass
class RedisProcess:
    """The run's private redis-server, which the Redis cache modes share."""

    process: asyncio.subprocess.Process
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def stop(self, grace_s: float = 10.0) -> None:
        await _stop(self.process, grace_s)


async def _spawn(
    name: str, args: list[str], env: Mapping[str, str], workdir: Path, grpc_port: int, metrics_port: int
) -> ServerProcess:
    log_path = workdir / f"{name}.log"
    process = await _spawn_logged(args, env, log_path)
    return ServerProcess(name, process, grpc_port, metrics_port, log_path)


async def _spawn_logged(args: list[str], env: Mapping[str, str], log_path: Path) -> asyncio.subprocess.Process:
    """args from the repo root, its output in log_path, ended with the runner."""
    with log_path.open("wb") as log:
        return await asyncio.create_subprocess_exec(
            *args,
            cwd=REPO_ROOT,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )


async def _wait_ready(
    server: ServerProcess, probe: Callable[[grpc.aio.Channel], Awaitable[bool]], timeout_s: float
) -> None:
    """Poll probe until it says ready, the process exits, or timeout_s passes."""
    deadline = time.monotonic() + timeout_s
    last_error = "no answer yet"
    async with grpc.aio.insecure_channel(server.target) as channel:
        while time.monotonic() < deadline:
            if server.process.returncode is not None:
                raise ServerError(
                    f"{server.name} exited with {server.process.returncode} while starting:\n{server.log_tail()}"
                )
            try:
                if await probe(channel):
                    return
                last_error = "not serving yet"
            except grpc.aio.AioRpcError as error:
                last_error = f"{error.code().name}: {error.details()}"
            await asyncio.sleep(0.25)
    await server.stop(grace_s=5)
    raise ServerError(
        f"{server.name} was not ready within {timeout_s:g}s ({last_error}):\n{server.log_tail()}"
    )


async def start_echo(workdir: Path, timeout_s: float = 30.0) -> ServerProcess:
    """The bare echo of bench/echo_server.py, ready when an echo call answers."""
    grpc_port, metrics_port = free_port(), free_port()
    address = f"127.0.0.1:{grpc_port}"
    args = [
        sys.executable,
        "-m",
        "bench.echo_server",
        "--address",
        address,
        "--metrics-port",
        str(metrics_port),
    ]
    server = await _spawn("echo", args, os.environ, workdir, grpc_port, metrics_port)

    async def answers(channel: grpc.aio.Channel) -> bool:
        await channel.unary_unary(echo_server.PATH)(b"ping", timeout=2.0)
        return True

    await _wait_ready(server, answers, timeout_s)
    return server


async def start_reference(
    workdir: Path, *, database_url: str, extra_env: Mapping[str, str], timeout_s: float = 30.0
) -> ServerProcess:
    """The reference GetUser of bench/reference_server.py, ready when it listens (it connects its pool first).

    Its environment is the service's extra environment (so pool settings apply to both) with the service's
    DSN as DATABASE_URL, in the environment rather than on the command line, where ``ps`` would show it.
    """
    grpc_port, metrics_port = free_port(), free_port()
    args = [
        sys.executable,
        "-m",
        "bench.reference_server",
        "--address",
        f"127.0.0.1:{grpc_port}",
        "--metrics-port",
        str(metrics_port),
    ]
    env = {key: value for key, value in {**os.environ, **extra_env}.items() if key not in _DATABASE_VARIABLES}
    env["DATABASE_URL"] = database_url
    server = await _spawn("reference", args, env, workdir, grpc_port, metrics_port)

    async def listens(channel: grpc.aio.Channel) -> bool:
        try:
            await asyncio.wait_for(channel.channel_ready(), 1.0)
        except TimeoutError:
            return False
        return True

    await _wait_ready(server, listens, timeout_s)
    return server


def service_env(
    base: Mapping[str, str],
    *,
    grpc_port: int,
    metrics_port: int,
    database_url: str | None,
    cache: Mapping[str, str],
    extra: Mapping[str, str],
) -> dict[str, str]:
    """The service's environment: ours, its ports, its cache mode's settings, and the database choice.

    Without a database URL, DATABASE_URL and DB_HOST are removed so the server starts
    its embedded PostgreSQL, as ``make run`` does. The drain delay is 0: the runner stops
    its services with SIGTERM when no client is left, and would otherwise wait it out.
    The mode's settings come after extra (``--server-env``): a row named uncached reads
    uncached, and no Redis but the run's own is used, whatever extra says.
    """
    env = {key: value for key, value in base.items() if key not in ("DATABASE_URL", "DB_HOST")}
    env.update(
        GRPC_ADDRESS=f"127.0.0.1:{grpc_port}",
        METRICS_PORT=str(metrics_port),
        LOG_LEVEL="WARNING",
        SHUTDOWN_DRAIN_SECONDS="0",
        WORKERS="1",  # one process unless the mode says otherwise (2-workers)
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(extra)
    env.update(cache)
    return env


async def start_service(
    workdir: Path,
    name: str,
    *,
    database_url: str | None,
    cache_env: Mapping[str, str],
    extra_env: Mapping[str, str],
    timeout_s: float,
) -> ServerProcess:
    """``python -m server`` named name (its log's name), ready when the standard health check says SERVING."""
    grpc_port, metrics_port = free_port(), free_port()
    env = service_env(
        os.environ,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        database_url=database_url,
        cache=cache_env,
        extra=extra_env,
    )
    server = await _spawn(name, [sys.executable, "-m", "server"], env, workdir, grpc_port, metrics_port)

    async def serving(channel: grpc.aio.Channel) -> bool:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=2.0
        )
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    await _wait_ready(server, serving, timeout_s)
    return server


async def start_redis(workdir: Path, timeout_s: float = 15.0) -> RedisProcess:
    """A private redis-server on a free port of 127.0.0.1, nothing saved to disk, ready when it answers PING.

    Private so the Redis modes start empty and nothing else on the machine (the Redis on 6379) is touched.
    """
    port = free_port()
    # fmt: off
    args = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(workdir), "--logfile", "",
    ]
    # fmt: on
    log_path = workdir / "redis.log"
    server = RedisProcess(await _spawn_logged(args, os.environ, log_path), port, log_path)
    deadline = time.monotonic() + timeout_s
    client = aioredis.Redis(host="127.0.0.1", port=port, socket_timeout=1.0)
    try:
        while time.monotonic() < deadline and server.process.returncode is None:
            try:
                if await client.ping():
                    return server
            except RedisError:
                await asyncio.sleep(0.1)
    finally:
        await client.aclose()
    await server.stop(grace_s=5)
    raise ServerError(f"redis-server on port {port} did not answer PING within {timeout_s:g}s; see {server.log_path}")


async def database_dsn(database_url: str | None, pgdata: Path | None) -> str:
    """The DSN of the service's database: the URL it was given, else the embedded PostgreSQL's in pgdata.

    Joining the embedded server (started by the service, or by this call when none runs) registers this
    process as one more handle on it; the last handle to exit stops it.
    """
    if database_url:
        return database_url
    if pgdata is None:
        raise ServerError("no database URL and no embedded PostgreSQL data directory")
    return await asyncio.to_thread(start_embedded_postgres, pgdata)


def embedded_pgdata(database_url: str | None, extra_env: Mapping[str, str]) -> Path | None:
    """The embedded PostgreSQL's data directory when the service runs one, else None."""
    if database_url:
        return None
    configured = extra_env.get("EMBEDDED_PG_DIR") or os.environ.get("EMBEDDED_PG_DIR") or ".data/postgres"
    return (REPO_ROOT / configured).resolve()
