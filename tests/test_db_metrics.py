"""Database metrics and the slow-statement log as an operator scrapes and reads them: statements named by the
store function that ran them, the pool's state, and the build's versions."""

from __future__ import annotations

import logging
import uuid

import grpc
import pytest
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc
from prometheus_client import generate_latest

from tests.harness import new_user, settings_for


async def test_statements_are_counted_and_timed_by_store_function_and_the_pool_is_described(app, users):
    registry = app.metrics_registry

    def calls(statement: str) -> float:
        return registry.get_sample_value(
            "dataservice_db_statement_duration_seconds_count", {"statement": statement}
        ) or 0.0

    before = calls("get_user")
    user_id = await new_user(users)
    with pytest.raises(grpc.aio.AioRpcError):  # NOT_FOUND, read from PostgreSQL (a cache miss)
        await users.GetUser(pb.GetUserRequest(id=str(uuid.uuid4())))
    assert calls("get_user") == before + 1
    assert user_id and calls("create_user") >= 1
    purges = calls("purge_ended_sessions")
    await app.session_purge.run_once()  # a transaction: named by the function that opened it
    assert calls("purge_ended_sessions") >= purges + 1
    limit = registry.get_sample_value("dataservice_db_pool_max_connections")
    in_use = registry.get_sample_value("dataservice_db_pool_in_use_connections")
    assert limit == app.settings.db_pool_max_size and 0 <= in_use <= limit
    assert registry.get_sample_value("dataservice_db_pool_utilization") == in_use / limit
    assert registry.get_sample_value("dataservice_db_pool_waiting_calls") == 0
    exposition = generate_latest(registry).decode()
    assert 'dataservice_build_info{' in exposition and 'grpcio="' in exposition


async def test_a_slow_statement_is_logged_with_its_name_and_duration_never_its_parameters(
    database_url, start_app, caplog
):
    app = await start_app(settings_for(database_url, DB_SLOW_QUERY_SECONDS="0.000001"))
    caplog.set_level(logging.WARNING, logger="server.db")
    secret_id = str(uuid.uuid4())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = user_service_pb2_grpc.UserServiceStub(channel)
        try:
            await stub.GetUser(pb.GetUserRequest(id=secret_id))
        except grpc.aio.AioRpcError:
            pass
    slow = [record for record in caplog.records if record.getMessage() == "slow statement"]
    assert any(record.statement == "get_user" and record.duration_ms >= 0 for record in slow)
    assert not any(secret_id in repr(record.__dict__) for record in slow)
