"""Every failure as a caller meets it: a specific status, google.rpc details with an ErrorInfo, and trailers
small enough for any client — also for hostile or undecodable requests."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid

import grpc
import pytest
from dataservice.v1 import user_service_pb2 as pb
from google.protobuf import field_mask_pb2

from tests.backends import free_port
from tests.grpc_errors import bad_request_fields, error_info, fails
from tests.harness import settings_for, unique_email
from tests.test_metrics import handled, scrape

PASSWORD = "correct horse battery"
CLIENT_METADATA_LIMIT = 16 * 1024  # grpc's default grpc.max_metadata_size on the client


def trailer_bytes(error: grpc.aio.AioRpcError) -> int:
    return sum(len(key) + len(value) for key, value in error.trailing_metadata() or ()) + len(error.details() or "")


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        out.append(low | 0x80 if number else low)
        if not number:
            return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (tag byte already holding the field number and wire type 2)."""
    return bytes([tag]) + _varint(len(payload)) + payload


def deeply_nested_create_request(depth: int) -> bytes:
    """A CreateUserRequest whose preferences nest ``depth`` Structs: valid wire format, deeper than the
    server's parser accepts (written by hand: the Python runtime itself refuses to build it)."""
    struct = b""
    for _ in range(depth):
        value = _field(0x2A, struct)  # Value.struct_value
        struct = _field(0x0A, _field(0x0A, b"a") + _field(0x12, value))  # Struct.fields{"a": value}
    user = _field(0x12, b"deep@example.com") + _field(0x1A, b"Deep") + _field(0x22, struct)
    return _field(0x0A, user) + _field(0x12, PASSWORD.encode())


# --- requests that do not parse ---------------------------------------------------------------------------------


async def test_undecodable_requests_are_invalid_argument_counted_and_not_logged(database_url, start_app, caplog):
    port = free_port()
    app = await start_app(settings_for(database_url, METRICS_PORT=str(port)))
    malformed = {
        "GetUser": b"\x0a\x02\xc3\x28",  # field 1 (id) holding invalid UTF-8
        "CreateUser": deeply_nested_create_request(200),
    }
    caplog.set_level(logging.WARNING)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        for method, body in malformed.items():
            error = await fails(channel.unary_unary(f"/dataservice.v1.UserService/{method}")(body, timeout=5))
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (method, error.details())
            assert f"dataservice.v1.{method}Request" in error.details()
            assert error_info(error).reason == "MALFORMED_REQUEST"
    samples = await asyncio.to_thread(scrape, port)
    assert handled(samples, "GetUser", "INVALID_ARGUMENT") == 1
    assert handled(samples, "CreateUser", "INVALID_ARGUMENT") == 1
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_random_bytes_never_answer_unknown_or_internal(channel):
    """A bounded, seeded fuzz of every UserService method: each answer is a status the caller can act on."""
    rng = random.Random(1234)
    methods = [method.name for method in pb.DESCRIPTOR.services_by_name["UserService"].methods]
    codes = set()
    for _ in range(120):
        body = rng.randbytes(rng.randrange(1, 64))
        call = channel.unary_unary(f"/dataservice.v1.UserService/{rng.choice(methods)}")
        try:
            await call(body, timeout=5)
        except grpc.aio.AioRpcError as error:
            codes.add(error.code())
    assert not codes & {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}, codes


# --- bounded details ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "paths",
    [[f"no_such_field_{i}" for i in range(200)], ["x" * 16_000], [f"{'y' * 2000}{i}" for i in range(50)]],
    ids=["200 unknown paths", "one 16k path", "50 long paths"],
)
async def test_a_huge_invalid_update_mask_is_invalid_argument_with_bounded_details(users, paths):
    user = (await users.CreateUser(pb.CreateUserRequest(
        user=pb.User(email=unique_email("mask"), display_name="M"), password=PASSWORD))).user
    request = pb.UpdateUserRequest(user=pb.User(id=user.id), update_mask=field_mask_pb2.FieldMask(paths=paths))
    error = await fails(users.UpdateUser(request))
    assert bad_request_fields(error) == {"update_mask"}
    assert trailer_bytes(error) < 4096, trailer_bytes(error)


# --- every failure carries an ErrorInfo ----------------------------------------------------------------------


async def test_aborted_unauthenticated_and_unimplemented_carry_an_error_info(users, channel):
    email = unique_email("info")
    user = (await users.CreateUser(pb.CreateUserRequest(
        user=pb.User(email=email, display_name="I"), password=PASSWORD))).user
    await users.UpdateUser(pb.UpdateUserRequest(
        user=pb.User(id=user.id, display_name="J"), update_mask=field_mask_pb2.FieldMask(paths=["display_name"])))
    stale = await fails(users.DeleteUser(pb.DeleteUserRequest(id=user.id, etag=user.etag)))
    wrong_password = await fails(users.AuthenticateUser(pb.AuthenticateUserRequest(email=email, password="wrong one")))
    expected = {
        grpc.StatusCode.ABORTED: (stale, "CONCURRENT_MODIFICATION"),
        grpc.StatusCode.UNAUTHENTICATED: (wrong_password, "INVALID_CREDENTIALS"),
    }
    for code, (error, reason) in expected.items():
        assert error.code() is code
        info = error_info(error)
        assert (info.reason, info.domain) == (reason, "dataservice.v1")


async def test_not_found_and_invalid_argument_carry_an_error_info_beside_their_details(users):
    missing = await fails(users.GetUser(pb.GetUserRequest(id=str(uuid.uuid4()))))
    invalid = await fails(users.GetUser(pb.GetUserRequest(id="nope")))
    assert error_info(missing).reason == "RESOURCE_NOT_FOUND"
    assert error_info(invalid).reason == "INVALID_ARGUMENT"
    assert bad_request_fields(invalid) == {"id"}

