"""The limit on failed logins: per email and per client address, shared through Redis, kept per process
without it, and never failing open silently."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc
from google.rpc import error_details_pb2, status_pb2

from server.app import App
from tests.backends import free_port
from tests.grpc_errors import bad_request_fields
from tests.harness import settings_for, unique_email
from tests.test_metrics import scrape

PASSWORD = "correct horse battery"
WRONG = "wrong password!"
LIMITS = {"LOGIN_FAILURES_PER_EMAIL": "3", "LOGIN_FAILURES_PER_IP": "5", "LOGIN_FAILURE_WINDOW_SECONDS": "600"}


@asynccontextmanager
async def stub_for(app: App) -> AsyncIterator[user_service_pb2_grpc.UserServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield user_service_pb2_grpc.UserServiceStub(channel)


@pytest.fixture
async def limited(database_url, redis_url, start_app) -> AsyncIterator[user_service_pb2_grpc.UserServiceStub]:
    app = await start_app(settings_for(database_url, REDIS_URL=redis_url, **LIMITS))
    async with stub_for(app) as users:
        yield users


async def new_account(users) -> str:
    email = unique_email("login")
    await users.CreateUser(pb.CreateUserRequest(user=pb.User(email=email, display_name="L"), password=PASSWORD))
    return email


def login(users, email: str, password: str = WRONG, client_ip: str = ""):
    return users.AuthenticateUser(pb.AuthenticateUserRequest(email=email, password=password, client_ip=client_ip))


async def code_of(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def refused_for(call) -> float:
    """Asserts RESOURCE_EXHAUSTED with a RetryInfo; returns its delay in seconds."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    error = raised.value
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, (error.code(), error.details())
    status = status_pb2.Status.FromString(dict(error.trailing_metadata())["grpc-status-details-bin"])
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToNanoseconds() / 1e9
    raise AssertionError("no RetryInfo")


async def fail_times(users, email: str, count: int, client_ip: str = "") -> None:
    for _ in range(count):
        assert await code_of(login(users, email, client_ip=client_ip)) is grpc.StatusCode.UNAUTHENTICATED


async def test_an_email_is_locked_out_after_its_failures_even_with_the_right_password(limited):
    email, bystander = await new_account(limited), await new_account(limited)
    await fail_times(limited, email, 3)
    delay = await refused_for(login(limited, email, PASSWORD))
    assert 0 < delay <= 600
    await refused_for(login(limited, email.upper(), WRONG))  # the same account however it is spelled
    await limited.AuthenticateUser(pb.AuthenticateUserRequest(email=bystander, password=PASSWORD))


async def test_a_success_below_the_limit_clears_the_emails_failures(limited):
    email = await new_account(limited)
    await fail_times(limited, email, 2)
    await login(limited, email, PASSWORD)
    await fail_times(limited, email, 2)
    await login(limited, email, PASSWORD)


async def test_unknown_emails_count_like_wrong_passwords(limited):
    email = unique_email("nobody")
    await fail_times(limited, email, 3)
    await refused_for(login(limited, email))


async def test_an_address_is_locked_out_across_emails_and_mapped_ipv4_counts_as_ipv4(limited):
    address = f"198.51.100.{uuid.uuid4().int % 250 + 1}"
    for index in range(5):
        spelling = address if index % 2 else f"::ffff:{address}"
        assert await code_of(login(limited, unique_email("spray"), client_ip=spelling)) is grpc.StatusCode.UNAUTHENTICATED
    email = await new_account(limited)
    await refused_for(login(limited, email, PASSWORD, client_ip=address))
    await login(limited, email, PASSWORD)  # without the address only its email's count applies: none


async def test_a_client_ip_that_is_not_an_address_is_invalid_argument(limited):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await login(limited, unique_email(), client_ip="300.1.1.1")
    assert bad_request_fields(raised.value) == {"client_ip"}


async def test_replicas_on_one_redis_share_the_count(database_url, redis_url, start_app):
    first = await start_app(settings_for(database_url, REDIS_URL=redis_url, **LIMITS))
    second = await start_app(settings_for(database_url, REDIS_URL=redis_url, **LIMITS))
    async with stub_for(first) as users_a:
        async with stub_for(second) as users_b:
            email = await new_account(users_a)
            await fail_times(users_a, email, 2)
            await fail_times(users_b, email, 1)
            await refused_for(login(users_a, email, PASSWORD))


async def test_with_redis_stopped_the_limit_holds_per_process_and_says_so(database_url, start_app, private_redis, caplog):
    port = free_port()
    app = await start_app(
        settings_for(
            database_url, REDIS_URL=private_redis.url, REDIS_TIMEOUT_SECONDS="0.2", METRICS_PORT=str(port), **LIMITS
        )
    )
    async with stub_for(app) as users:
        email = await new_account(users)
        await fail_times(users, email, 1)  # recorded in Redis and in the process
        private_redis.stop()
        caplog.set_level(logging.WARNING, logger="server.login_limit")
        await fail_times(users, email, 2)
        await refused_for(login(users, email, PASSWORD))
    assert any("login limit Redis" in record.getMessage() for record in caplog.records), caplog.text
    samples = await asyncio.to_thread(scrape, port)
    assert samples[("dataservice_login_limit_fallback_total", frozenset())] >= 3


async def test_without_redis_the_limit_is_kept_per_process_and_says_so_at_start(database_url, start_app, caplog):
    port = free_port()
    caplog.set_level(logging.WARNING, logger="server.login_limit")
    app = await start_app(settings_for(database_url, METRICS_PORT=str(port), **LIMITS))
    assert any("kept per process" in record.getMessage() for record in caplog.records), caplog.text
    samples = await asyncio.to_thread(scrape, port)
    assert samples[("dataservice_login_limit_backend", frozenset({("backend", "process")}))] == 1
    async with stub_for(app) as users:
        email = await new_account(users)
        await fail_times(users, email, 3)
        await refused_for(login(users, email, PASSWORD))


async def test_a_login_is_let_in_again_once_the_window_has_moved_past_the_failures(database_url, redis_url, start_app):
    app = await start_app(settings_for(database_url, REDIS_URL=redis_url, **{**LIMITS, "LOGIN_FAILURE_WINDOW_SECONDS": "1"}))
    async with stub_for(app) as users:
        email = await new_account(users)
        await fail_times(users, email, 3)
        delay = await refused_for(login(users, email, PASSWORD))
        assert delay <= 1
        await asyncio.sleep(delay + 0.05)
        await login(users, email, PASSWORD)
