"""Reading the google.rpc details of a failed call, as a caller would."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2


def status_of(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    raise AssertionError(f"no google.rpc.Status in the trailers of {error.code()}: {error.details()}")


def bad_request_fields(error: grpc.aio.AioRpcError) -> set[str]:
    """The fields named by the BadRequest detail of an INVALID_ARGUMENT error."""
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    for detail in status_of(error).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            return {violation.field for violation in bad_request.field_violations}
    raise AssertionError("INVALID_ARGUMENT without a google.rpc.BadRequest detail")


async def fails(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """The error a call ends with; the test fails if it succeeds."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo detail of a failed call."""
    for detail in status_of(error).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"{error.code()} without a google.rpc.ErrorInfo detail")
