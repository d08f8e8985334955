"""Channels to dataservice with the transport settings its servers expect.

The servers accept a client's keepalive pings no more often than every 20 s (GRPC_MIN_CLIENT_PING_INTERVAL_SECONDS)
and end the connection of a client that pings faster (GOAWAY ``too_many_pings``); these options ping every
30 s, with or without calls, so that a dead server or a silently dropped connection is noticed within 40 s.
Messages may be up to 16 MiB each way, the servers' limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)


def connect(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """An asyncio channel to ``target`` (TLS when ``credentials`` are given) with the shipped keepalive and
    message size options; ``options`` replace those of the same name. (grpc takes the first of two options of
    one name, so they are merged here rather than appended.)"""
    merged = list({**dict(KEEPALIVE_OPTIONS), **dict(options)}.items())
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=merged)
    return grpc.aio.secure_channel(target, credentials, options=merged)
