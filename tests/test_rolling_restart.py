"""A rolling restart as callers live it: two replicas behind one channel of the shipped client
(``dataservice.channel.connect``: round robin over the replicas that report SERVING, grpc's retry of
UNAVAILABLE), one of them a real process sent SIGTERM in the middle of the load. It turns NOT_SERVING, keeps
serving through its drain while the channel moves away, refuses what still reaches it with UNAVAILABLE (reason
SHUTTING_DOWN), finishes every call it accepted and exits 0: no accepted call fails. A refused call is the
caller's to send elsewhere: grpc's retries do, and a call whose five attempts all met the stopping replica is
sent to the other one by the caller, as an application would."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import sys

import grpc
from dataservice.channel import connect
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc
from grpc_health.v1 import health_pb2_grpc

from tests.backends import free_port
from tests.grpc_errors import error_info
from tests.harness import REPO, new_user, settings_for
from tests.test_shutdown import wait_serving

CLIENTS = 8
CALLS_AFTER_EXIT = 200


def refused(error: grpc.aio.AioRpcError) -> bool:
    """Whether the call was refused by a stopping replica before it started (ErrorInfo reason SHUTTING_DOWN)."""
    return error.code() is grpc.StatusCode.UNAVAILABLE and error_info(error).reason == "SHUTTING_DOWN"


async def test_sigterm_to_one_of_two_replicas_under_load_fails_no_call(database_url, start_app):
    steady = await start_app(settings_for(database_url, CACHE_BACKEND="none"))
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "GRPC_ADDRESS": f"127.0.0.1:{port}",
        "CACHE_BACKEND": "none",
        "SHUTDOWN_DRAIN_SECONDS": "2",
        "SHUTDOWN_GRACE_SECONDS": "10",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        "LOG_LEVEL": "INFO",
    }
    env.pop("REDIS_URL", None)
    stopping = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", cwd=REPO, env=env, stderr=asyncio.subprocess.PIPE
    )
    assert stopping.stderr is not None
    log_lines = asyncio.create_task(stopping.stderr.read())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as direct:
            await wait_serving(health_pb2_grpc.HealthStub(direct))
        target = f"ipv4:127.0.0.1:{port},127.0.0.1:{steady.port}"
        async with (
            connect(target) as channel,
            grpc.aio.insecure_channel(f"127.0.0.1:{steady.port}") as steady_channel,
        ):
            users = user_service_pb2_grpc.UserServiceStub(channel)
            elsewhere = user_service_pb2_grpc.UserServiceStub(steady_channel)
            sent_elsewhere: list[int] = []
            user_id = await new_user(users)
            outcomes: collections.Counter[str] = collections.Counter()
            exited = asyncio.Event()

            async def caller() -> None:
                after_exit = 0
                while after_exit < CALLS_AFTER_EXIT // CLIENTS:
                    request = pb.GetUserRequest(id=user_id)
                    try:
                        await users.GetUser(request, timeout=10)
                        outcomes["OK"] += 1
                    except grpc.aio.AioRpcError as error:
                        if not refused(error):
                            outcomes[f"{error.code().name}: {error.details()}"] += 1
                        else:  # refused, so never started: sent to the replica that stays, it must succeed
                            await elsewhere.GetUser(request, timeout=10)
                            outcomes["OK"] += 1
                            sent_elsewhere.append(1)
                    if exited.is_set():
                        after_exit += 1

            callers = [asyncio.create_task(caller()) for _ in range(CLIENTS)]
            while outcomes["OK"] < 200:
                await asyncio.sleep(0.02)
            stopping.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(stopping.wait(), timeout=60) == 0
            exited.set()
            await asyncio.wait_for(asyncio.gather(*callers), timeout=60)
    finally:
        if stopping.returncode is None:
            stopping.kill()
            await stopping.wait()
    assert set(outcomes) == {"OK"}, outcomes  # every accepted call answered; nothing CANCELLED or lost
    assert len(sent_elsewhere) < 10, "grpc's retries sent nearly every refused call elsewhere"
    records = [json.loads(line) for line in (await log_lines).decode().splitlines() if line.startswith("{")]
    stopped_accepting = [record for record in records if record["message"] == "stopped accepting calls"]
    # The channel watched the replica's health and had moved away during the drain: nothing reached the refusal.
    assert [record["refused_calls"] for record in stopped_accepting] == [0], stopped_accepting
    served_by_steady = steady.metrics_registry.get_sample_value(
        "grpc_server_handled_total",
        {"grpc_type": "unary", "grpc_service": "dataservice.v1.UserService", "grpc_method": "GetUser", "grpc_code": "OK"},
    )
    assert served_by_steady is not None and 0 < served_by_steady < outcomes["OK"], "both replicas served calls"
