"""Page tokens as callers meet them (AIP-158): opaque, tamper-evident, valid on every replica that shares the
secret and only for the method and parameters that issued them."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import grpc
import pytest
from dataservice.v1 import user_service_pb2 as pb
from dataservice.v1 import user_service_pb2_grpc

from server.api.paging import PageTokens
from server.domain.common import PageCursor
from server.errors import InvalidArgument
from tests.grpc_errors import bad_request_fields
from tests.harness import settings_for, unique_email

SECRET = "a page token secret shared by replicas"


async def first_page_token(users) -> tuple[str, pb.User]:
    for _ in range(2):
        await users.CreateUser(pb.CreateUserRequest(
            user=pb.User(email=unique_email("page"), display_name="P"), password="long enough"))
    page = await users.ListUsers(pb.ListUsersRequest(page_size=1))
    assert page.next_page_token
    return page.next_page_token, page.users[-1]


async def test_a_page_token_reveals_nothing_of_the_position(users):
    token, last = await first_page_token(users)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    last_id = uuid.UUID(last.id)
    for revealing in (last_id.bytes, last_id.hex.encode(), last.id.encode(), str(last.create_time.seconds).encode()):
        assert revealing not in raw
    assert len(token) <= 100


async def test_an_altered_or_forged_page_token_is_invalid_argument(users):
    token, _ = await first_page_token(users)
    # Every position, the last included (whose low bits carry no data and must not be a second spelling).
    flipped = [token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:] for i in range(len(token))]
    forged = base64.urlsafe_b64encode(b'{"v":1,"k":"users","t":"2026-01-01T00:00:00+00:00","i":"x"}').decode()
    for bad in [*flipped, token[:-4], token + "AAAA", forged, "ü" * 20]:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await users.ListUsers(pb.ListUsersRequest(page_token=bad))
        assert bad_request_fields(raised.value) == {"page_token"}, bad


async def test_replicas_sharing_the_secret_continue_each_others_listings_and_others_refuse(database_url, start_app):
    first = await start_app(settings_for(database_url, PAGE_TOKEN_SECRET=SECRET))
    second = await start_app(settings_for(database_url, PAGE_TOKEN_SECRET=SECRET))
    stranger = await start_app(settings_for(database_url, PAGE_TOKEN_SECRET="some other secret entirely"))
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") for app in (first, second, stranger)]
    try:
        one, two, other = (user_service_pb2_grpc.UserServiceStub(channel) for channel in channels)
        token, last = await first_page_token(one)
        following = await two.ListUsers(pb.ListUsersRequest(page_size=1, page_token=token))
        assert following.users and following.users[0].id != last.id
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await other.ListUsers(pb.ListUsersRequest(page_size=1, page_token=token))
        assert bad_request_fields(raised.value) == {"page_token"}
    finally:
        for channel in channels:
            await channel.close()


def test_a_token_is_bound_to_its_method_and_request_parameters():
    tokens = PageTokens(SECRET.encode())
    cursor = PageCursor(datetime(2026, 11, 28, 12, 30, 1, 123456, tzinfo=UTC), uuid.uuid4())
    token = tokens.encode("ListContents", b"filter=published;order=newest", cursor)
    assert tokens.decode("ListContents", b"filter=published;order=newest", token) == cursor
    for method, parameters in [("ListContents", b"filter=draft;order=newest"), ("ListUsers", b"filter=published;order=newest")]:
        with pytest.raises(InvalidArgument):
            tokens.decode(method, parameters, token)
