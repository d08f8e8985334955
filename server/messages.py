"""Conversions between the domain dataclasses and the protobuf messages.

Shared by the API layer (responses) and the cache (whose stored values are serialized messages, so an
entry written by one replica is read by any other).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from dataservice.v1 import user_service_pb2 as user_pb
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from server.domain import User


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    """An aware datetime as a Timestamp; plain arithmetic, several times cheaper than ``FromDatetime``."""
    delta = value - _EPOCH
    return timestamp_pb2.Timestamp(seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def struct_to_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def json_text(value: dict[str, Any]) -> str:
    """``value`` as compact JSON: what the documented size limits of JSON fields measure."""
    return json.dumps(value, separators=(",", ":"))


def user_message(user: User) -> user_pb.User:
    return user_pb.User(
        id=str(user.id),
        email=user.email,
        display_name=user.display_name,
        preferences=struct(user.preferences),
        create_time=timestamp(user.created_at),
        update_time=timestamp(user.updated_at),
        etag=str(user.version),
    )


def user_from_message(message: user_pb.User) -> User:
    return User(
        id=UUID(message.id),
        email=message.email,
        display_name=message.display_name,
        preferences=struct_to_dict(message.preferences),
        created_at=message.create_time.ToDatetime(tzinfo=UTC),
        updated_at=message.update_time.ToDatetime(tzinfo=UTC),
        version=int(message.etag),
    )
