"""Cache key format, written down once (format version in the prefix).

    dataservice:v1:user:<uuid>                 serialized dataservice.v1.User
    dataservice:v1:user-email:<email_key>      the user's id (ASCII), checked against the user on read
    <key>:lease                                the lease token of a reader filling <key>

Bump ``FORMAT`` when a stored message changes incompatibly: old entries are then simply never read.
"""

from __future__ import annotations

from uuid import UUID

from server.domain import email_key

FORMAT = "v1"
PREFIX = f"dataservice:{FORMAT}"


def user(user_id: UUID) -> str:
    return f"{PREFIX}:user:{user_id}"


def user_email(email: str) -> str:
    return f"{PREFIX}:user-email:{email_key(email)}"
