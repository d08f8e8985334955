"""RPC metrics on the Prometheus endpoint: every call counted by method and status code, and timed."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid

import grpc
import pytest
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.backends import free_port
from tests.harness import settings_for, unique_email


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def handled(samples, method: str, code: str) -> float:
    labels = frozenset({"grpc_type": "unary", "grpc_service": "dataservice.v1.UserService",
                        "grpc_method": method, "grpc_code": code}.items())
    return samples.get(("grpc_server_handled_total", labels), 0.0)


async def test_rpcs_are_counted_by_method_and_code_and_timed(database_url, start_app):
    port = free_port()
    app = await start_app(settings_for(database_url, METRICS_PORT=str(port)))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        users = user_service_pb2_grpc.UserServiceStub(channel)
        user = (await users.CreateUser(pb.CreateUserRequest(
            user=pb.User(email=unique_email("metrics"), display_name="M"), password="long enough"))).user
        for _ in range(3):
            await users.GetUser(pb.GetUserRequest(id=user.id))
        for bad in (str(uuid.uuid4()), "not-a-uuid"):
            with pytest.raises(grpc.aio.AioRpcError):
                await users.GetUser(pb.GetUserRequest(id=bad))
    samples = await asyncio.to_thread(scrape, port)
    assert handled(samples, "GetUser", "OK") == 3
    assert handled(samples, "GetUser", "NOT_FOUND") == 1
    assert handled(samples, "GetUser", "INVALID_ARGUMENT") == 1
    assert handled(samples, "CreateUser", "OK") == 1
    timed = frozenset({"grpc_type": "unary", "grpc_service": "dataservice.v1.UserService", "grpc_method": "GetUser"}.items())
    assert samples[("grpc_server_handling_seconds_count", timed)] == 5
