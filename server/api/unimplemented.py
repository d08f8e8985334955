"""Handlers for the declared RPCs that are not built yet: a clear UNIMPLEMENTED instead of a silent gap."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor


def unimplemented_service(service: ServiceDescriptor, reason: str) -> grpc.GenericRpcHandler:
    """A handler answering every method of ``service`` with UNIMPLEMENTED and ``reason``."""

    def handler_for(method_name: str) -> grpc.RpcMethodHandler:
        message = f"{service.full_name}.{method_name} is declared but not implemented yet: {reason}"

        async def unimplemented(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

        # The request is never read, so it is kept as raw bytes rather than parsed.
        return grpc.unary_unary_rpc_method_handler(unimplemented)

    return grpc.method_handlers_generic_handler(
        service.full_name, {method.name: handler_for(method.name) for method in service.methods}
    )
