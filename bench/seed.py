"""Seed the users and sessions the benchmark reads, through the service's own API.

Going through the API (not SQL) keeps the bench independent of the schema and seeds
exactly what a client would. The emails are fixed (``bench-user-000001@example.com``
…), so a rerun on the same database looks them up instead of creating more:
CreateUser hashes the password with argon2, which is the slow part of seeding.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta

import grpc
from dataservice.v1 import session_service_pb2 as session_pb
from dataservice.v1 import session_service_pb2_grpc as session_pb_grpc
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc as pb_grpc
from google.protobuf import duration_pb2

PASSWORD = "bench-password-not-a-secret"
SESSION_TTL = timedelta(days=30)  # the longest allowed: reruns within it reuse the sessions
_SESSION_REQUESTS = uuid.UUID("6f1d0c52-3b7e-4a55-9b8e-0d5a1c2e9f10")  # namespace of their request ids


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


async def seed_sessions(
    channel: grpc.aio.Channel, users: list[SeededUser], count: int, *, concurrency: int = 8, timeout_s: float = 30.0
) -> list[str]:
    """Logs the seeded users in ``count`` times in turn and returns the tokens.

    Tokens are returned only by CreateSession and stored only as hashes, so every run
    must ask for them. Each session has a fixed request_id (from its user and index), so
    a rerun gets the same sessions back with new tokens (AIP-155) instead of adding a
    thousand rows; one that has ended since (ABORTED) logs in anew under a new request_id.
    """
    stub = session_pb_grpc.SessionServiceStub(channel)
    gate = asyncio.Semaphore(concurrency)
    ttl = duration_pb2.Duration(seconds=int(SESSION_TTL.total_seconds()))

    async def create(session: session_pb.Session, request_id: uuid.UUID) -> str:
        request = session_pb.CreateSessionRequest(session=session, ttl=ttl, request_id=str(request_id))
        return (await stub.CreateSession(request, timeout=timeout_s)).token

    async def one(index: int) -> str:
        user_id = users[index % len(users)].id
        session = session_pb.Session(user_id=user_id, user_agent="bench", ip_address="192.0.2.1")
        async with gate:
            try:
                return await create(session, uuid.uuid5(_SESSION_REQUESTS, f"{user_id}/{index}"))
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.ABORTED:
                    raise
            return await create(session, uuid.uuid4())

    return list(await asyncio.gather(*(one(index) for index in range(count))))
