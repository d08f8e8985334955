"""The per-call rules of the service — deadline budget, call context for logs, error mapping, metrics —
applied around every servicer method once, when the servicer is registered.

This is deliberately not a ``grpc.aio.ServerInterceptor``: grpc runs interceptors on every call (handler
lookup, call-details object, an extra coroutine), which cost a measurable share of a point read (see
bench/README.md). Wrapping the servicer's methods at registration gives the same behaviour for one extra
coroutine frame per call.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass
from grpc_status import rpc_status

from server import deadline
from server.errors import ShuttingDown, UndecodableRequest, code_for, internal_status, to_status
from server.logs import current_call
from server.metrics import RpcMetrics
from server.outage import OutageLog

log = logging.getLogger("server.rpc")

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class CallInfo:
    """What log lines need to know about the call being served; the request id is read only when logged."""

    __slots__ = ("method", "_context", "_request_id")

    def __init__(self, method: str, context: grpc.aio.ServicerContext) -> None:
        self.method = method
        self._context = context
        self._request_id: str | None = None

    @property
    def request_id(self) -> str:
        """The caller's ``x-request-id`` metadata, or an id generated once for this call."""
        if self._request_id is None:
            given = dict(self._context.invocation_metadata() or ()).get("x-request-id")
            self._request_id = str(given)[:128] if given else uuid.uuid4().hex
        return self._request_id


# How long no call may have arrived before a stopping server stops accepting: longer than grpc takes to hand
# over the calls it holds (also on a loaded machine), short enough not to delay a shutdown noticeably.
_QUIET_SECONDS = 0.25


class MalformedRequest:
    """Stands in for a request whose bytes do not parse as its message, so that the per-call rules answer it
    INVALID_ARGUMENT (counted, one status with details) instead of grpc's own bare UNKNOWN."""

    __slots__ = ("message_name",)

    def __init__(self, message_name: str) -> None:
        self.message_name = message_name


def _tolerant_parser(message_class: type[Message]) -> Callable[[bytes], Message | MalformedRequest]:
    parse = message_class.FromString
    name = message_class.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> Message | MalformedRequest:
        try:
            return parse(data)
        except DecodeError:  # invalid UTF-8 in a string, nesting deeper than the parser allows, bad wire data
            return MalformedRequest(name)

    return deserialize


def _passing_serialized(message_class: type[Message]) -> Callable[[Message | bytes], bytes]:
    """The response serializer: a message is serialized; bytes are a response the servicer built serialized
    (server.messages.common.embedded), from cached entries, and go out as they are. Parsing a cached entry only
    for grpc to serialize it again costs a cached read of a few KB more than the rest of the call."""
    serialize = message_class.SerializeToString

    def serialize_response(response: Message | bytes) -> bytes:
        return response if response.__class__ is bytes else serialize(response)

    return serialize_response


def _parsed_stream(behavior: Behavior) -> Behavior:
    """A client-streaming servicer method whose request stream raises INVALID_ARGUMENT at the first message
    that does not parse, instead of handing it on."""

    async def call(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        async def parsed() -> AsyncIterator[Message]:
            async for request in requests:
                if request.__class__ is MalformedRequest:
                    raise UndecodableRequest(request.message_name)
                yield request

        return await behavior(parsed(), context)

    return call


class RpcPolicy:
    """Registers servicers with the per-call rules wrapped around each of their methods."""

    def __init__(self, metrics: RpcMetrics, default_timeout_seconds: float, database_outage: OutageLog) -> None:
        self._metrics = metrics
        self._default_timeout = default_timeout_seconds
        self._accepting = True
        self._in_flight = 0
        self._last_arrival = 0.0
        self._refused = 0
        # While PostgreSQL is away every call fails alike: the outage log writes one line when that starts and a
        # summary a minute, instead of a line per call (the health monitor reports its end).
        self._database_outage = database_outage

    async def refuse_new_calls(self, within_seconds: float) -> int:
        """From now on answers new calls UNAVAILABLE (callers retry them on another replica); returns once the
        calls already accepted have finished and no call has arrived for a moment, or after ``within_seconds``,
        with the number of calls refused so far (none when every caller balanced away during the drain).

        Under load grpc holds calls it has received but not yet handed to the application; the server's own
        stop cancels those (CANCELLED, which callers do not retry). Waiting for arrivals to cease lets every
        such call reach this refusal instead.
        """
        self._accepting = False
        give_up = time.perf_counter() + within_seconds
        while time.perf_counter() < give_up:
            if not self._in_flight and time.perf_counter() - self._last_arrival >= _QUIET_SECONDS:
                break
            await asyncio.sleep(_QUIET_SECONDS / 4)
        return self._refused

    def register(
        self,
        server: grpc.aio.Server,
        servicer: object,
        service: ServiceDescriptor,
        *,
        timeouts: Mapping[str, float] | None = None,
    ) -> None:
        """Serves every method of ``service`` from the same-named method of ``servicer``, wrapped.

        The handlers are built here rather than by the generated ``add_*_to_server`` so that the request
        parser is ours: it turns undecodable bytes into INVALID_ARGUMENT. Unary and client-streaming methods
        are served; ``timeouts`` gives a method a longer budget than DB_COMMAND_TIMEOUT_SECONDS (a bulk load).
        """
        handlers = {}
        for method in service.methods:
            if method.server_streaming:
                raise TypeError(f"{method.full_name}: server-streaming methods are not supported")
            timeout = (timeouts or {}).get(method.name, self._default_timeout)
            servicer_method = getattr(servicer, method.name)
            if method.client_streaming:
                servicer_method = _parsed_stream(servicer_method)
            behavior = self.wrap(f"/{service.full_name}/{method.name}", servicer_method, default_timeout=timeout)
            make_handler = (
                grpc.stream_unary_rpc_method_handler if method.client_streaming else grpc.unary_unary_rpc_method_handler
            )
            handlers[method.name] = make_handler(
                behavior,
                request_deserializer=_tolerant_parser(GetMessageClass(method.input_type)),
                response_serializer=_passing_serialized(GetMessageClass(method.output_type)),
            )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
        server.add_registered_method_handlers(service.full_name, handlers)

    def wrap(self, method: str, behavior: Behavior, *, default_timeout: float | None = None) -> Behavior:
        """``behavior`` (a servicer method serving ``method``, as ``/package.Service/Method``) with the rules;
        ``default_timeout`` bounds a call whose caller set no shorter deadline (DB_COMMAND_TIMEOUT_SECONDS)."""
        metrics = self._metrics
        default_timeout = self._default_timeout if default_timeout is None else default_timeout
        debug = log.isEnabledFor(logging.DEBUG)  # read once: the level is fixed at start
        policy = self
        database_outage = self._database_outage

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            deadline.set_deadline(context.time_remaining(), default_timeout)
            current_call.set(CallInfo(method, context))
            code = grpc.StatusCode.OK
            policy._in_flight += 1
            policy._last_arrival = started
            try:
                if not policy._accepting:
                    policy._refused += 1
                    raise ShuttingDown()
                if request.__class__ is MalformedRequest:
                    raise UndecodableRequest(request.message_name)
                return await behavior(request, context)
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED  # the caller went away or its deadline passed
                raise
            except Exception as exc:
                code = code_for(exc) or grpc.StatusCode.INTERNAL
                if code is grpc.StatusCode.INTERNAL:
                    error_id = uuid.uuid4().hex
                    log.exception("unexpected error", extra={"error_id": error_id})
                    status = internal_status(error_id)
                else:
                    if code is grpc.StatusCode.UNAVAILABLE and not isinstance(exc, ShuttingDown):
                        database_outage.failed(method, exc)
                    status = to_status(exc, code)
                await context.abort(
                    code, status.message, trailing_metadata=rpc_status.to_status(status).trailing_metadata
                )
            finally:
                policy._in_flight -= 1
                elapsed = time.perf_counter() - started
                metrics.observe(method, code, elapsed)
                if debug:
                    log.debug("rpc", extra={"code": code.name, "duration_ms": round(elapsed * 1000, 3)})

        return call
