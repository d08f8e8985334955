"""Channels to dataservice with the transport settings and balancing its servers expect.

The servers accept a client's keepalive pings no more often than every 20 s (GRPC_MIN_CLIENT_PING_INTERVAL_SECONDS)
and end the connection of a client that pings faster (GOAWAY ``too_many_pings``); these options ping every
30 s, with or without calls, so that a dead server or a silently dropped connection is noticed within 40 s.
Messages may be up to 16 MiB each way, the servers' limit.

Calls are spread over every address the target resolves to (round robin; a Kubernetes headless Service gives
one per replica) and sent only to replicas whose health (the ``""`` name) is SERVING: a replica that is
stopping says NOT_SERVING at once and keeps serving for its drain, so this channel has moved away before it
stops. While PostgreSQL is down every replica says NOT_SERVING, and calls fail UNAVAILABLE at once in the
channel, as they would through a Kubernetes Service whose endpoints follow the same health.

Reads (Get…, BatchGet…, List…, Lookup…, Search…, Recommend…) refused UNAVAILABLE are retried with backoff.
Writes are not: an UNAVAILABLE write may have committed before its connection broke, so only the caller knows
whether sending it again is safe (with the same ``request_id`` a create is; an update carries its etag).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc

from dataservice.v1 import (
    content_service_pb2,
    embedding_service_pb2,
    recommendation_service_pb2,
    session_service_pb2,
    user_service_pb2,
)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
KEEPALIVE_TIME_MS = 30_000
SERVICES = (
    content_service_pb2,
    embedding_service_pb2,
    recommendation_service_pb2,
    session_service_pb2,
    user_service_pb2,
)
# The methods that only read (AIP standard Get/BatchGet/List and the read-only custom methods): safe to repeat.
READ_PREFIXES = ("Get", "BatchGet", "List", "Lookup", "Search", "Recommend")
READ_METHODS = tuple(
    (service.full_name, method.name)
    for module in SERVICES
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
    if method.name.startswith(READ_PREFIXES)
)
SERVICE_CONFIG: dict[str, Any] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": ""},
    "methodConfig": [{
        "name": [{"service": service, "method": method} for service, method in READ_METHODS],
        "retryPolicy": {
            "maxAttempts": 5,
            "initialBackoff": "0.05s",
            "maxBackoff": "1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }],
}
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    ("grpc.enable_retries", 1),
)


def connect(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An asyncio channel to ``target`` (TLS when ``credentials`` are given) with the shipped keepalive, message
    size, balancing and retry options; ``options`` replace those of the same name. (grpc takes the first of two
    options of one name, so they are merged here rather than appended.)"""
    merged = list({**dict(CHANNEL_OPTIONS), **dict(options)}.items())
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=merged)
    return grpc.aio.secure_channel(target, credentials, options=merged)
