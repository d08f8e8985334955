"""Domain errors, and the one table that turns them (and driver exceptions) into gRPC statuses.

    DomainError
     ├── InvalidArgument      INVALID_ARGUMENT   + google.rpc.BadRequest naming each field
     ├── NotFound             NOT_FOUND          + google.rpc.ResourceInfo
     ├── AlreadyExists        ALREADY_EXISTS     + google.rpc.ResourceInfo
     ├── Conflict             ABORTED            (stale etag, concurrent change)
     ├── Unauthenticated      UNAUTHENTICATED
     └── Unavailable          UNAVAILABLE        (a dependency is down; the caller may retry)

Stores and services raise these; they never build statuses. ``to_status`` looks an exception up along its
MRO in one explicit table, so the most specific entry wins and asyncpg/redis connection failures become
UNAVAILABLE rather than UNKNOWN. Anything not in the table is a bug: INTERNAL, with an error id in the log.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from server.deadline import DeadlineExpired

ERROR_DOMAIN = "dataservice.v1"


class DomainError(Exception):
    """Base of the errors a caller can act on; ``message`` is safe to show to the caller."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (``user.email``) and what is wrong with it."""

    field: str
    description: str


class InvalidArgument(DomainError):
    def __init__(self, violations: list[FieldViolation]) -> None:
        fields = ", ".join(violation.field for violation in violations)
        super().__init__(f"invalid argument: {fields}")
        self.violations = violations

    @classmethod
    def of(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class NotFound(DomainError):
    def __init__(self, resource_type: str, name: str) -> None:
        super().__init__(f"{resource_type} {name!r} not found")
        self.resource_type = resource_type
        self.name = name


class AlreadyExists(DomainError):
    def __init__(self, resource_type: str, name: str, message: str) -> None:
        super().__init__(message)
        self.resource_type = resource_type
        self.name = name


class Conflict(DomainError):
    """The resource changed since the caller read it (stale etag) or under a concurrent write."""


class Unauthenticated(DomainError):
    pass


class Unavailable(DomainError):
    pass


# Driver exceptions that mean "PostgreSQL or Redis cannot be reached right now": transient, retryable.
_UNAVAILABLE_MESSAGE = "a backing store is unavailable; retry with backoff"

_CODES: dict[type[BaseException], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    Conflict: grpc.StatusCode.ABORTED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExpired: grpc.StatusCode.DEADLINE_EXCEEDED,
    asyncpg.exceptions.QueryCanceledError: grpc.StatusCode.DEADLINE_EXCEEDED,
    asyncpg.exceptions.SerializationError: grpc.StatusCode.ABORTED,
    asyncpg.exceptions.DeadlockDetectedError: grpc.StatusCode.ABORTED,
    asyncpg.exceptions.PostgresConnectionError: grpc.StatusCode.UNAVAILABLE,
    asyncpg.exceptions.ConnectionDoesNotExistError: grpc.StatusCode.UNAVAILABLE,
    asyncpg.exceptions.CannotConnectNowError: grpc.StatusCode.UNAVAILABLE,
    asyncpg.exceptions.OperatorInterventionError: grpc.StatusCode.UNAVAILABLE,
    asyncpg.exceptions.TooManyConnectionsError: grpc.StatusCode.UNAVAILABLE,
    asyncpg.exceptions.InsufficientResourcesError: grpc.StatusCode.UNAVAILABLE,
    asyncpg.exceptions.UndefinedTableError: grpc.StatusCode.UNAVAILABLE,  # schema not migrated yet
    asyncpg.exceptions.ReadOnlySQLTransactionError: grpc.StatusCode.UNAVAILABLE,  # a standby after failover
    asyncpg.exceptions.InvalidAuthorizationSpecificationError: grpc.StatusCode.UNAVAILABLE,  # rotated credentials
    asyncpg.exceptions.InvalidCatalogNameError: grpc.StatusCode.UNAVAILABLE,  # the database is gone
    ConnectionError: grpc.StatusCode.UNAVAILABLE,
    OSError: grpc.StatusCode.UNAVAILABLE,
    TimeoutError: grpc.StatusCode.UNAVAILABLE,
}


def code_for(exc: BaseException) -> grpc.StatusCode | None:
    """The status code for ``exc``, most specific class first; None when it is not a known error."""
    for kind in type(exc).__mro__:
        code = _CODES.get(kind)
        if code is not None:
            return code
    return None


def to_status(exc: BaseException, code: grpc.StatusCode) -> status_pb2.Status:
    """Builds the google.rpc.Status for a known exception, with the details a caller can act on."""
    if isinstance(exc, DomainError):
        message = exc.message
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
        message = "deadline exceeded before the work finished"
    elif code is grpc.StatusCode.ABORTED:
        message = "concurrent modification; retry the whole operation"
    else:
        message = _UNAVAILABLE_MESSAGE
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in _details(exc, code):
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return status


def _details(exc: BaseException, code: grpc.StatusCode) -> list:
    if isinstance(exc, InvalidArgument):
        return [
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in exc.violations
                ]
            )
        ]
    if isinstance(exc, NotFound | AlreadyExists):
        return [
            error_details_pb2.ResourceInfo(
                resource_type=f"{ERROR_DOMAIN}.{exc.resource_type}", resource_name=exc.name, description=exc.message
            )
        ]
    if code is grpc.StatusCode.UNAVAILABLE:
        return [
            error_details_pb2.ErrorInfo(reason="BACKEND_UNAVAILABLE", domain=ERROR_DOMAIN),
            error_details_pb2.RetryInfo(retry_delay={"nanos": 200_000_000}),
        ]
    return []


def internal_status(error_id: str) -> status_pb2.Status:
    """The status of an unexpected failure: no internals, only an id to find the log line."""
    return status_pb2.Status(code=code_pb2.INTERNAL, message=f"internal error (error id {error_id})")
