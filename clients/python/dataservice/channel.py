"""Channels to dataservice with the transport settings and balancing its servers expect.

The servers accept a client's keepalive pings no more often than every 20 s (GRPC_MIN_CLIENT_PING_INTERVAL_SECONDS)
and end the connection of a client that pings faster (GOAWAY ``too_many_pings``); these options ping every
30 s, with or without calls, so that a dead server or a silently dropped connection is noticed within 40 s.
Messages may be up to 16 MiB each way, the servers' limit.

Calls are spread over every address the target resolves to (round robin; a Kubernetes headless Service gives
one per replica) and sent only to replicas whose health (the ``""`` name) is SERVING: a replica that is
stopping says NOT_SERVING at once and keeps serving for its drain, so this channel has moved away before it
stops. A call refused UNAVAILABLE (a replica stopping, a dependency down for a moment) is retried with backoff;
every write that creates something takes a ``request_id``, so a retried create cannot create twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
KEEPALIVE_TIME_MS = 30_000
SERVICE_CONFIG: dict[str, Any] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": ""},
    "methodConfig": [{
        "name": [{}],  # every method of every service
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
