"""Domain errors, and the one table that turns them (and driver exceptions) into gRPC statuses.

    DomainError               code               details (every status also carries an ErrorInfo)
     ├── InvalidArgument      INVALID_ARGUMENT   google.rpc.BadRequest naming each field
     ├── UndecodableRequest   INVALID_ARGUMENT   (the bytes do not parse: no field to name)
     ├── NotFound             NOT_FOUND          google.rpc.ResourceInfo
     ├── AlreadyExists        ALREADY_EXISTS     google.rpc.ResourceInfo
     ├── Conflict             ABORTED            (stale etag, concurrent change)
     ├── FailedPrecondition   FAILED_PRECONDITION (the resource's state does not allow the change)
     ├── Unauthenticated      UNAUTHENTICATED
     ├── ResourceExhausted    RESOURCE_EXHAUSTED google.rpc.RetryInfo (when a limit lets the caller in again)
     └── Unavailable          UNAVAILABLE        google.rpc.RetryInfo (a dependency is down; retry)

Stores and services raise these; they never build statuses. ``to_status`` looks an exception up along its
MRO in one explicit table, so the most specific entry wins and asyncpg/redis connection failures become
UNAVAILABLE rather than UNKNOWN. Anything not in the table is a bug: INTERNAL, with an error id in the log.

A status travels in the response trailers, which clients cap (16 KiB by default in grpc), so everything a
caller's input can lengthen is bounded here: at most ``MAX_VIOLATIONS`` field violations, and each echoed
text clipped to a few hundred characters. A too-long error would otherwise reach the caller as
RESOURCE_EXHAUSTED instead of the status meant for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import asyncpg
import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from server.deadline import DeadlineExpired

ERROR_DOMAIN = "dataservice.v1"
MAX_VIOLATIONS = 10
_MAX_FIELD_CHARS = 100
_MAX_DESCRIPTION_CHARS = 200
_MAX_MESSAGE_CHARS = 400


def clip(text: str, limit: int = 64) -> str:
    """``text`` cut to ``limit`` characters, marked when cut: for echoing caller input in an error."""
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


class DomainError(Exception):
    """Base of the errors a caller can act on; ``message`` is safe to show to the caller.

    ``reason`` is the ErrorInfo reason (AIP-193: UPPER_SNAKE_CASE, stable, for programs to branch on).
    """

    reason = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (``user.email``) and what is wrong with it."""

    field: str
    description: str


class InvalidArgument(DomainError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], *, reason: str | None = None) -> None:
        shown = [
            FieldViolation(clip(v.field, _MAX_FIELD_CHARS), clip(v.description, _MAX_DESCRIPTION_CHARS))
            for v in violations[:MAX_VIOLATIONS]
        ]
        if len(violations) > MAX_VIOLATIONS:
            omitted = len(violations) - MAX_VIOLATIONS
            shown[-1] = FieldViolation(shown[-1].field, f"{shown[-1].description} (and {omitted} more problems)")
        fields = ", ".join(dict.fromkeys(violation.field for violation in shown))
        super().__init__(f"invalid argument: {fields}", reason=reason)
        self.violations = shown

    @classmethod
    def of(cls, field: str, description: str, *, reason: str | None = None) -> InvalidArgument:
        return cls([FieldViolation(field, description)], reason=reason)


class UndecodableRequest(DomainError):
    """The request's bytes do not parse as its message (INVALID_ARGUMENT): no field to name."""

    reason = "MALFORMED_REQUEST"

    def __init__(self, message_name: str) -> None:
        super().__init__(f"the request body is not a valid {message_name}")


class RequestIdReused(InvalidArgument):
    """A create's request_id came again with a different request: neither a retry nor a new request."""

    def __init__(self) -> None:
        description = "was already used by a different request; use a new request_id for a new request"
        super().__init__([FieldViolation("request_id", description)], reason="REQUEST_ID_REUSED")


class NotFound(DomainError):
    reason = "RESOURCE_NOT_FOUND"

    def __init__(self, resource_type: str, name: str) -> None:
        super().__init__(f"{resource_type} {clip(name, 260)!r} not found")
        self.resource_type = resource_type
        self.name = clip(name, 260)


class AlreadyExists(DomainError):
    reason = "RESOURCE_ALREADY_EXISTS"

    def __init__(self, resource_type: str, name: str, message: str) -> None:
        super().__init__(message)
        self.resource_type = resource_type
        self.name = clip(name, 260)


class Conflict(DomainError):
    """The resource changed since the caller read it (stale etag) or under a concurrent write."""

    reason = "CONCURRENT_MODIFICATION"


class FailedPrecondition(DomainError):
    """The request is well formed, but the resource's current state does not allow it; retrying won't help."""

    reason = "FAILED_PRECONDITION"


class Unauthenticated(DomainError):
    reason = "INVALID_CREDENTIALS"


class ResourceExhausted(DomainError):
    """A limit on the caller was reached; ``retry_after_seconds`` says when it lets the caller in again."""

    reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, retry_after_seconds: float, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after_seconds = retry_after_seconds


class PoolExhausted(ResourceExhausted):
    """Every pooled database connection stayed busy for as long as a call may wait for one
    (DB_POOL_ACQUIRE_TIMEOUT_SECONDS): this replica has more work than connections.

    RESOURCE_EXHAUSTED, not UNAVAILABLE: PostgreSQL answers, and this replica is out of one of its own
    resources. UNAVAILABLE would be taken for an outage: it joins the database outage log, and callers retry
    it at once (the shipped channel does, with backoff from 50 ms), adding load where there is too much.
    RESOURCE_EXHAUSTED is retried by no client on its own; its RetryInfo asks for a pause as long as the
    wait that just failed, the time the pool stayed full. Another replica may serve the call at once.
    """

    reason = "DB_POOL_EXHAUSTED"

    def __init__(self, waited_seconds: float) -> None:
        super().__init__(
            f"every database connection of this replica stayed busy for {waited_seconds:g} s; retry later, or on "
            "another replica",
            retry_after_seconds=waited_seconds,
        )


class Unavailable(DomainError):
    reason = "BACKEND_UNAVAILABLE"


class ShuttingDown(Unavailable):
    """The server is stopping and takes no new calls; another replica can serve this one."""

    reason = "SHUTTING_DOWN"

    def __init__(self) -> None:
        super().__init__("this server is shutting down; retry on another replica")


# Driver exceptions that mean "PostgreSQL or Redis cannot be reached right now": transient, retryable.
_UNAVAILABLE_MESSAGE = "a backing store is unavailable; retry with backoff"


class ConnectionLost(Unavailable):
    """A statement's connection to PostgreSQL was lost, whatever shape the driver gave the failure (a FATAL
    error from a stopping server, a closed socket, a protocol state left broken by either)."""

    def __init__(self) -> None:
        super().__init__(_UNAVAILABLE_MESSAGE)


_CODES: dict[type[BaseException], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    UndecodableRequest: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    Conflict: grpc.StatusCode.ABORTED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
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


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says a dependency cannot answer (down, unreachable, too slow, too busy) rather than that the
    code is wrong: what background passes log as an outage instead of as a bug."""
    return isinstance(exc, PoolExhausted) or code_for(exc) in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )


def code_for(exc: BaseException) -> grpc.StatusCode | None:
    """The status code for ``exc``, most specific class first; None when it is not a known error."""
    for kind in type(exc).__mro__:
        code = _CODES.get(kind)
        if code is not None:
            return code
    return None


# ErrorInfo reasons of the errors that do not come from a DomainError, by the code they map to.
_REASONS = {
    grpc.StatusCode.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
    grpc.StatusCode.ABORTED: "CONCURRENT_MODIFICATION",
    grpc.StatusCode.UNAVAILABLE: Unavailable.reason,
}
_RETRY_DELAY_NANOS = 200_000_000


def to_status(exc: BaseException, code: grpc.StatusCode) -> status_pb2.Status:
    """Builds the google.rpc.Status for a known exception, with the details a caller can act on."""
    if isinstance(exc, DomainError):
        message, reason = exc.message, exc.reason
    else:
        reason = _REASONS.get(code, code.name)
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            message = "deadline exceeded before the work finished"
        elif code is grpc.StatusCode.ABORTED:
            message = "concurrent modification; retry the whole operation"
        else:
            message = _UNAVAILABLE_MESSAGE
    details: list[Message] = [error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN)]
    if isinstance(exc, InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in exc.violations
                ]
            )
        )
    elif isinstance(exc, NotFound | AlreadyExists):
        details.append(
            error_details_pb2.ResourceInfo(
                resource_type=f"{ERROR_DOMAIN}.{exc.resource_type}", resource_name=exc.name, description=exc.message
            )
        )
    retry_nanos = _retry_nanos(exc, code)
    if retry_nanos is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(retry_nanos)
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    return _status(code.value[0], clip(message, _MAX_MESSAGE_CHARS), details)


def _retry_nanos(exc: BaseException, code: grpc.StatusCode) -> int | None:
    """When the caller may retry: after the limit's own delay, or shortly for an outage; None for the rest."""
    if isinstance(exc, ResourceExhausted):
        return max(1, math.ceil(exc.retry_after_seconds * 1e9))
    if code is grpc.StatusCode.UNAVAILABLE:
        return _RETRY_DELAY_NANOS
    return None


def internal_status(error_id: str) -> status_pb2.Status:
    """The status of an unexpected failure: no internals, only an id to find the log line."""
    info = error_details_pb2.ErrorInfo(reason="INTERNAL_ERROR", domain=ERROR_DOMAIN, metadata={"error_id": error_id})
    return _status(code_pb2.INTERNAL, f"internal error (error id {error_id})", [info])


def _status(code: int, text: str, details: list[Message]) -> status_pb2.Status:
    status = status_pb2.Status(code=code, message=text)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return status
