"""The standard grpc.health.v1.Health service: Check, Watch and List, with an end for Watch streams.

grpc's stock servicer leaves List unimplemented (an UNIMPLEMENTED answer and an error traceback in the log)
and keeps every Watch stream open until the server cancels it, so that one open Watch makes each shutdown
wait the whole grace period. This one answers List, and ``end_watches()`` closes the streams when the
server stops accepting calls.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
_END = None  # what a Watch stream's queue receives when the stream must end


class HealthServicer(health_pb2_grpc.HealthServicer):
    """Holds the status of ``""`` and of each service; ``set`` changes one and tells its watchers."""

    def __init__(self) -> None:
        self._statuses: dict[str, int] = {}
        self._watchers: defaultdict[str, set[asyncio.Queue[int | None]]] = defaultdict(set)
        self._shutting_down = False
        self._watches_ended = False

    def set(self, service: str, status: int) -> None:
        """Sets the status of ``service``; ignored once shutdown began, which keeps every status NOT_SERVING."""
        if not self._shutting_down:
            self._publish(service, status)

    def enter_graceful_shutdown(self) -> None:
        """Turns every status NOT_SERVING for good; watchers see it at once."""
        for service in list(self._statuses):
            self._publish(service, NOT_SERVING)
        self._shutting_down = True

    def end_watches(self) -> None:
        """Ends every Watch stream (after its last status), and those that start later at once."""
        self._watches_ended = True
        for queues in self._watchers.values():
            for queue in queues:
                queue.put_nowait(_END)

    def _publish(self, service: str, status: int) -> None:
        self._statuses[service] = status
        for queue in self._watchers.get(service, ()):
            queue.put_nowait(status)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._statuses.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service[:200]!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=status) for name, status in self._statuses.items()}
        )

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        """Sends the current status, then each change, until the server ends the watches or the caller leaves."""
        queue: asyncio.Queue[int | None] = asyncio.Queue()
        watchers = self._watchers[request.service]
        watchers.add(queue)
        try:
            sent = None
            status: int | None = self._statuses.get(request.service, _UNKNOWN)
            while status is not _END:
                if status != sent:
                    await context.write(health_pb2.HealthCheckResponse(status=status))
                    sent = status
                if self._watches_ended:
                    return
                status = await queue.get()
        finally:
            watchers.discard(queue)
            if not watchers and self._watchers.get(request.service) is watchers:
                del self._watchers[request.service]
