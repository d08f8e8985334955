"""Shutdown of a real server process under load: NOT_SERVING first, serving through the drain, then new calls
refused with UNAVAILABLE (which callers retry elsewhere) and none cancelled; open Watch streams end cleanly."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import sys
import time

import grpc
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.backends import free_port
from tests.harness import REPO, unique_email

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CLIENTS = 12
LOAD_SECONDS = 30.0  # the bound of each client's loop; the test ends long before unless the server hangs


async def wait_serving(health: health_pb2_grpc.HealthStub, within: float = 60.0) -> None:
    give_up = time.monotonic() + within
    while True:
        try:
            if (await health.Check(health_pb2.HealthCheckRequest(), timeout=2)).status == SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        assert time.monotonic() < give_up, "the server never reported SERVING"
        await asyncio.sleep(0.1)


async def client(port: int, user_id: str, codes: collections.Counter[str]) -> None:
    """Calls GetUser in a loop; like a caller with a second replica to go to, it leaves at the first refusal."""
    give_up = time.monotonic() + LOAD_SECONDS
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        while time.monotonic() < give_up:
            try:
                await users.GetUser(pb.GetUserRequest(id=user_id), timeout=5)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as error:
                codes[error.code().name] += 1
                if error.code() is grpc.StatusCode.UNAVAILABLE:
                    return


async def test_sigterm_under_load_drains_refuses_with_unavailable_and_cancels_nothing(database_url):
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GRPC_ADDRESS": f"127.0.0.1:{port}",
        "CACHE_BACKEND": "none",
        "SHUTDOWN_DRAIN_SECONDS": "3",  # ample for the checks made during the drain, on a loaded machine
        # Long on purpose: a Watch stream holding the server until the grace ran out would end CANCELLED.
        "SHUTDOWN_GRACE_SECONDS": "20",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("REDIS_URL", None)
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "server", cwd=REPO, env=env)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            await wait_serving(health)
            users = user_service_pb2_grpc.UserServiceStub(channel)
            user = (await users.CreateUser(pb.CreateUserRequest(
                user=pb.User(email=unique_email("shutdown"), display_name="S"), password="long enough"))).user
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await watch.read()).status == SERVING

            codes: collections.Counter[str] = collections.Counter()
            clients = [asyncio.create_task(client(port, user.id, codes)) for _ in range(CLIENTS)]
            while codes["OK"] < 100 and not all(task.done() for task in clients):
                await asyncio.sleep(0.02)
            process.send_signal(signal.SIGTERM)

            assert (await watch.read()).status == NOT_SERVING, "watchers learn of the shutdown first"
            # Still serving during the drain: health says NOT_SERVING while calls succeed.
            assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status == NOT_SERVING
            await users.GetUser(pb.GetUserRequest(id=user.id), timeout=5)

            await asyncio.gather(*clients)
            assert await watch.read() == grpc.aio.EOF
            assert await watch.code() is grpc.StatusCode.OK, "the server ended the Watch stream itself"
        assert await asyncio.wait_for(process.wait(), timeout=60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
    assert codes["UNAVAILABLE"] == CLIENTS, "each client was refused once, with UNAVAILABLE, and left"
