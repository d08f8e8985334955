"""Conversions between the Session dataclass and its protobuf message, for the API layer and the cache."""

from __future__ import annotations

from datetime import UTC
from ipaddress import ip_address
from uuid import UUID

from dataservice.v1 import session_service_pb2 as session_pb

from server.domain.sessions import Session
from server.messages.common import timestamp


def session_message(session: Session) -> session_pb.Session:
    return session_pb.Session(
        id=str(session.id),
        user_id=str(session.user_id),
        create_time=timestamp(session.created_at),
        expire_time=timestamp(session.expires_at),
        last_seen_time=timestamp(session.last_seen_at),
        user_agent=session.user_agent,
        ip_address=str(session.ip_address) if session.ip_address is not None else "",
    )


def session_from_message(message: session_pb.Session) -> Session:
    return Session(
        id=UUID(message.id),
        user_id=UUID(message.user_id),
        created_at=message.create_time.ToDatetime(tzinfo=UTC),
        expires_at=message.expire_time.ToDatetime(tzinfo=UTC),
        last_seen_at=message.last_seen_time.ToDatetime(tzinfo=UTC),
        user_agent=message.user_agent,
        ip_address=ip_address(message.ip_address) if message.ip_address else None,
    )
