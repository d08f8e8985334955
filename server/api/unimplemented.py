"""The servicer of a declared service that this server does not serve: every method answers UNIMPLEMENTED
with details, through the same per-call rules (metrics, logs) as the served ones."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from server.errors import Unimplemented


class UnimplementedServicer:
    """Answers each method of ``service`` with UNIMPLEMENTED, a message naming the method, and ``reason``."""

    def __init__(self, service: ServiceDescriptor, reason: str) -> None:
        self._service = service.full_name
        self._reason = reason

    def __getattr__(self, method_name: str) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]]:
        message = f"{self._service}.{method_name} is declared but not served: {self._reason}"

        async def unimplemented(request: Any, context: grpc.aio.ServicerContext) -> None:
            raise Unimplemented(message)

        return unimplemented
