"""The README's health truth table, row by row, as Watch streams see it: one server over a PostgreSQL and a Redis
of the test's own, taken through Redis paused, Redis stopped, PostgreSQL stopped, and shutdown. Every name's
stream must show exactly the transitions the table promises, in order (the rows about pgvector and migrations
are in test_embeddings*.py and test_health.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.app import CACHE_HEALTH_NAME, SERVICE_NAMES
from tests.backends import EmbeddedPostgres, RedisServer
from tests.conftest import stopped
from tests.harness import settings_for

pytestmark = pytest.mark.pgvector  # EmbeddingService is SERVING only where pgvector is

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
WITHIN = 30.0


@pytest.fixture
def private_postgres() -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres()
    yield server
    server.close()


class Watches:
    """A Watch stream per health name, each recording the statuses it was sent (repeats dropped)."""

    def __init__(self, channel: grpc.aio.Channel, names: list[str]) -> None:
        self._health = health_pb2_grpc.HealthStub(channel)
        self.seen: dict[str, list[int]] = {name: [] for name in names}
        self._tasks = [asyncio.create_task(self._follow(name)) for name in names]

    async def _follow(self, name: str) -> None:
        async for response in self._health.Watch(health_pb2.HealthCheckRequest(service=name)):
            if not self.seen[name] or self.seen[name][-1] != response.status:
                self.seen[name].append(response.status)

    async def until(self, expected: dict[str, int]) -> None:
        """Waits until each named stream's latest status is the expected one."""
        async with asyncio.timeout(WITHIN):
            while any(self.seen[name][-1:] != [status] for name, status in expected.items()):
                await asyncio.sleep(0.02)

    async def ended(self) -> None:
        """Waits for every stream to end (the server ends them when it stops)."""
        async with asyncio.timeout(WITHIN):
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def test_each_row_of_the_truth_table_reaches_every_watch_stream(private_postgres, start_app):
    redis_server = RedisServer()
    try:
        app = await start_app(settings_for(
            private_postgres.url, REDIS_URL=redis_server.url, CACHE_BACKEND="redis", REDIS_TIMEOUT_SECONDS="0.2",
        ))
        names = ["", *SERVICE_NAMES]
        everything = [*names, CACHE_HEALTH_NAME]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            watches = Watches(channel, everything)
            await watches.until(dict.fromkeys(everything, SERVING))

            # Redis paused, then stopped: the cache is bypassed, the replica still answers correctly.
            for outage, recovery in ((redis_server.pause, redis_server.resume), (redis_server.stop, redis_server.start)):
                outage()
                await watches.until({**dict.fromkeys(names, SERVING), CACHE_HEALTH_NAME: NOT_SERVING})
                recovery()
                await watches.until(dict.fromkeys(everything, SERVING))

            # PostgreSQL stopped: nothing can be answered.
            await asyncio.to_thread(private_postgres.stop)
            await watches.until(dict.fromkeys(names, NOT_SERVING))
            await asyncio.to_thread(private_postgres.start)
            await watches.until(dict.fromkeys(everything, SERVING))

            # Shutdown: every name NOT_SERVING at once, then the streams end.
            await stopped(app)
            await watches.ended()

        for name in names:
            assert watches.seen[name] == [SERVING, NOT_SERVING, SERVING, NOT_SERVING], name
        assert watches.seen[CACHE_HEALTH_NAME] == [SERVING, NOT_SERVING, SERVING, NOT_SERVING, SERVING, NOT_SERVING]
    finally:
        redis_server.close()
