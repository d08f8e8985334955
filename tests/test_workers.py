"""Multi-process serving as a caller and an operator see it: ``python -m server`` with WORKERS=2 is a
supervisor of two serving processes on one port. Connections spread over both, a write through one is never
read stale through the other, the connection budget is split between their pools, the supervisor's metrics
endpoint shows both, a killed worker is started again, SIGTERM stops them all with status 0, a worker
follows its supervisor when that is killed, and a taken port or a worker's configuration error stops
everything with status 2 instead of a restart loop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2_grpc

from tests.backends import free_port, with_database
from tests.harness import REPO, new_user
from tests.test_metrics import scrape
from tests.test_shutdown import wait_serving

CONNECTIONS = 24  # fresh connections, each placed on a worker by the kernel: all on one has odds of 2 ** -23


@dataclass
class Supervised:
    """A running ``python -m server`` with WORKERS=2: its process, ports and log records so far."""

    process: asyncio.subprocess.Process
    port: int
    metrics_port: int
    records: list[dict] = field(default_factory=list)
    plain_lines: list[str] = field(default_factory=list)  # what is not a log record: a start's last error

    def worker_pids(self) -> dict[int, int]:
        """The latest pid of each worker, from the supervisor's "worker started" records."""
        return {r["worker"]: r["pid"] for r in self.records if r["message"] == "worker started"}

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        return scrape(self.metrics_port)


async def _collect(process: asyncio.subprocess.Process, running: Supervised) -> None:
    assert process.stderr is not None
    async for line in process.stderr:
        if line.startswith(b"{"):
            running.records.append(json.loads(line))
        else:
            running.plain_lines.append(line.decode())


@asynccontextmanager
async def supervised(database_url: str, redis_url: str, **extra: str) -> AsyncIterator[Supervised]:
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "WORKERS": "2",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CACHE_BACKEND": "redis",
        "GRPC_ADDRESS": f"127.0.0.1:{port}",
        "METRICS_PORT": str(metrics_port),
        "SHUTDOWN_DRAIN_SECONDS": "0",
        "PASSWORD_HASH_TIME_COST": "1",
        "PASSWORD_HASH_MEMORY_KIB": "1024",
        "LOG_LEVEL": "INFO",
        **extra,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", cwd=REPO, env=env, stderr=asyncio.subprocess.PIPE
    )
    running = Supervised(process, port, metrics_port)
    reader = asyncio.create_task(_collect(process, running))
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for pid in running.worker_pids().values():  # never leave a worker behind, whatever failed
            if not gone(pid) and "server worker" in _command_line(pid):  # not a pid reused since
                os.kill(pid, signal.SIGKILL)
        await reader


def _command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""


async def until(condition, what: str, within: float = 60.0) -> None:
    """Waits for ``condition()`` to hold: a bound against hanging, not a timing assertion."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + within
    while not condition():
        assert loop.time() < give_up, f"never happened: {what}"
        await asyncio.sleep(0.1)


async def both_serving(running: Supervised) -> None:
    """Both workers report serving (each writes its "serving" record once it has started)."""
    await until(lambda: {r.get("worker") for r in running.records if r["message"] == "serving"} >= {0, 1},
                "both workers serving")


def fresh_channel(port: int) -> grpc.aio.Channel:
    # A private subchannel pool: a new connection, not one shared with the test's other channels.
    return grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (reaped, or a zombie waiting for whoever inherited it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_two_workers_share_the_port_the_budget_and_fresh_reads(database_url, redis_url):
    # The shared Redis cache without near copies: a write's invalidation is done before its answer, so a read
    # through either worker after it is fresh at once (with CACHE_NEAR a worker's copy may lag by the bound
    # the README gives).
    async with supervised(
        database_url, redis_url, CACHE_NEAR="false", DB_POOL_MAX_SIZE="10", DB_CONNECTION_BUDGET="6"
    ) as running:
        async with fresh_channel(running.port) as channel:
            await wait_serving(health_pb2_grpc.HealthStub(channel))
            await both_serving(running)
            users = user_service_pb2_grpc.UserServiceStub(channel)
            user_id = await new_user(users)
            for name in ("first", "second"):
                # Each read on a new connection, so on either worker; each worker cached the user after the
                # first round: the update through one worker must reach the other's reads at once.
                for _ in range(CONNECTIONS):
                    async with fresh_channel(running.port) as other:
                        read = await user_service_pb2_grpc.UserServiceStub(other).GetUser(
                            pb.GetUserRequest(id=user_id), timeout=10
                        )
                    if name == "second":
                        assert read.user.display_name == "renamed"
                if name == "first":
                    await users.UpdateUser(pb.UpdateUserRequest(
                        user=pb.User(id=user_id, display_name="renamed", etag=read.user.etag),
                        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                    ), timeout=10)

        metrics = running.metrics()
        get_user = {"grpc_type": "unary", "grpc_service": "dataservice.v1.UserService", "grpc_method": "GetUser",
                    "grpc_code": "OK"}
        for worker in ("0", "1"):
            served = metrics.get(("grpc_server_handled_total", frozenset({**get_user, "worker": worker}.items())))
            assert served, f"worker {worker} served no GetUser: {CONNECTIONS * 2} connections all went to the other"
            pool_limit = metrics[("dataservice_db_pool_max_connections", frozenset({("worker", worker)}))]
            assert pool_limit == 3  # DB_CONNECTION_BUDGET 6 over two workers, under DB_POOL_MAX_SIZE 10
        assert metrics[("dataservice_workers", frozenset())] == 2

        running.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(running.process.wait(), 60) == 0
        assert all(gone(pid) for pid in running.worker_pids().values())


async def test_a_killed_worker_is_started_again_and_the_port_keeps_serving(database_url, redis_url):
    async with supervised(database_url, redis_url) as running:
        async with fresh_channel(running.port) as channel:
            await wait_serving(health_pb2_grpc.HealthStub(channel))
            await both_serving(running)
            killed = running.worker_pids()[1]
            os.kill(killed, signal.SIGKILL)
            await until(lambda: running.worker_pids()[1] != killed, "worker 1 started again")
            await until(lambda: sum(r["message"] == "serving" and r.get("worker") == 1 for r in running.records) == 2,
                        "the new worker 1 serving")
            died = [r for r in running.records if r["message"] == "worker died; starting it again"]
            assert [(r["worker"], r["pid"], r["exit_status"]) for r in died] == [(1, killed, -signal.SIGKILL)]
            assert running.metrics()[("dataservice_worker_restarts_total", frozenset())] == 1
            for _ in range(CONNECTIONS):  # every connection answered: none landed on a dead socket
                async with fresh_channel(running.port) as other:
                    await wait_serving(health_pb2_grpc.HealthStub(other), within=10)

        running.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(running.process.wait(), 60) == 0


async def test_workers_stop_when_their_supervisor_is_killed(database_url, redis_url):
    async with supervised(database_url, redis_url) as running:
        async with fresh_channel(running.port) as channel:
            await wait_serving(health_pb2_grpc.HealthStub(channel))
        await both_serving(running)
        pids = running.worker_pids()
        running.process.kill()  # SIGKILL: no chance to pass anything on
        await running.process.wait()
        await until(lambda: all(gone(pid) for pid in pids.values()), "every worker exited after its supervisor")


async def test_a_taken_port_stops_the_supervisor_before_any_worker_starts(database_url, redis_url):
    with socket.socket() as taken:  # bound without SO_REUSEPORT, as another server's would be
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with supervised(database_url, redis_url, GRPC_ADDRESS=f"127.0.0.1:{port}") as running:
            assert await asyncio.wait_for(running.process.wait(), 60) == 2
    assert any("configuration error: GRPC_ADDRESS: cannot bind" in line for line in running.plain_lines)
    assert running.worker_pids() == {}


async def test_workers_that_fail_their_start_for_configuration_stop_the_supervisor_with_status_2(
    postgres_admin_url, redis_url
):
    missing = with_database(postgres_admin_url, "dataservice_no_such_database")
    async with supervised(missing, redis_url) as running:
        assert await asyncio.wait_for(running.process.wait(), 60) == 2
    assert any("configuration error:" in line and "dataservice_no_such_database" in line
               for line in running.plain_lines), running.plain_lines
    assert not [r for r in running.records if r["message"] == "worker died; starting it again"]


async def test_a_worker_that_hangs_in_its_stop_is_killed_and_the_supervisor_says_so(database_url, redis_url):
    async with supervised(database_url, redis_url, SHUTDOWN_GRACE_SECONDS="1") as running:
        async with fresh_channel(running.port) as channel:
            await wait_serving(health_pb2_grpc.HealthStub(channel))
        await both_serving(running)
        hung = running.worker_pids()[0]
        os.kill(hung, signal.SIGSTOP)  # frozen: it will never act on the SIGTERM it is passed
        running.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(running.process.wait(), 60) == 1
        assert gone(hung)
    assert any(r["message"] == "workers did not stop in time: killing them" for r in running.records)
    [unclean] = [r for r in running.records if r["message"] == "workers did not stop cleanly"]
    assert sorted(unclean["exit_statuses"]) == [-signal.SIGKILL, 0]
