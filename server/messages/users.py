"""Conversions between the User dataclass and its protobuf message, for the API layer and the cache."""

from __future__ import annotations

from datetime import UTC
from uuid import UUID

from dataservice.v1 import user_service_pb2 as user_pb

from server.domain.users import User
from server.messages.common import struct, struct_to_dict, timestamp


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
