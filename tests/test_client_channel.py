"""The shipped channel (dataservice.channel.connect) as a server sees it: a read refused UNAVAILABLE comes
again (grpc's retry policy, up to five attempts), a write does not (it may have committed), and both go only
to a server whose health says SERVING. The server here is a stand-in that refuses every call and counts the
attempts, so that the channel's own behaviour is what is measured."""

from __future__ import annotations

import collections

import grpc
import pytest
from dataservice.channel import connect
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


class Refusing(grpc.GenericRpcHandler):
    """Answers every dataservice call UNAVAILABLE and counts the attempts per method."""

    def __init__(self) -> None:
        self.attempts: collections.Counter[str] = collections.Counter()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if not details.method.startswith("/dataservice.v1."):
            return None

        async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self.attempts[details.method.rsplit("/", 1)[1]] += 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "refused")

        return grpc.unary_unary_rpc_method_handler(refuse)


@pytest.fixture
async def refusing_server():
    handler = Refusing()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([handler])
    status = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(status, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port, handler, status
    await server.stop(0)


async def test_reads_are_retried_and_writes_are_not(refusing_server):
    port, handler, status = refusing_server
    await status.set("", health_pb2.HealthCheckResponse.SERVING)
    async with connect(f"127.0.0.1:{port}") as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        for call, request in ((users.GetUser, pb.GetUserRequest(id="x")),
                              (users.CreateUser, pb.CreateUserRequest(user=pb.User(email="a@example.com")))):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call(request, timeout=30)
            assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert handler.attempts == {"GetUser": 5, "CreateUser": 1}


async def test_a_server_not_serving_gets_no_calls(refusing_server):
    port, handler, status = refusing_server
    await status.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    async with connect(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await user_service_pb2_grpc.UserServiceStub(channel).GetUser(pb.GetUserRequest(id="x"), timeout=30)
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert handler.attempts == {}
