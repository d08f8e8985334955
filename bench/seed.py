"""Seed the users the benchmark reads, through the service's own CreateUser.

Going through the API (not SQL) keeps the bench independent of the schema and seeds
exactly what a client would. The emails are fixed (``bench-user-000001@example.com``
…), so a rerun on the same database looks them up instead of creating more:
CreateUser hashes the password with argon2, which is the slow part of seeding.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import grpc
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc as pb_grpc

PASSWORD = "bench-password-not-a-secret"


@dataclass(frozen=True)
class SeededUser:
    id: str
    email: str


def email_of(index: int) -> str:
    return f"bench-user-{index:06d}@example.com"


async def _ensure_user(stub: pb_grpc.UserServiceStub, index: int, timeout_s: float) -> SeededUser:
    email = email_of(index)
    try:
        found = await stub.LookupUser(pb.LookupUserRequest(email=email), timeout=timeout_s)
        return SeededUser(id=found.user.id, email=found.user.email)
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
    request = pb.CreateUserRequest(
        user=pb.User(email=email, display_name=f"Bench User {index}"),
        password=PASSWORD,
    )
    created = await stub.CreateUser(request, timeout=timeout_s)
    return SeededUser(id=created.user.id, email=created.user.email)


async def seed_users(
    channel: grpc.aio.Channel, count: int, *, concurrency: int = 8, timeout_s: float = 30.0
) -> list[SeededUser]:
    """Make sure users 1..count exist and return them in order.

    A few calls at a time: the server hashes in threads on two cores, so more
    concurrency only queues.
    """
    stub = pb_grpc.UserServiceStub(channel)
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> SeededUser:
        async with gate:
            return await _ensure_user(stub, index, timeout_s)

    return list(await asyncio.gather(*(one(index) for index in range(1, count + 1))))
