"""Cache key format, written down once (format version in the prefix).

    dataservice:v2:user:<uuid>                 serialized dataservice.v1.User
    dataservice:v2:user-email:<email_key>      the user's id (ASCII), checked against the user on read
    dataservice:v2:session:<token hash hex>    serialized dataservice.v1.Session of the live session whose
                                               token has this SHA-256 (the token itself is never a key)
    dataservice:v2:content:<uuid>              serialized dataservice.v1.Content
    <key>:lease                                the lease token of a reader filling <key>
    dataservice:v2:epoch                       Redis only: the run_id of the Redis server the entries are valid on

In Redis every value and lease token is stored as ``<epoch>|<bytes>``, the epoch it was written under
(server/cache/redis.py). Bump ``FORMAT`` when a stored value changes incompatibly: old entries are then
simply never read.
"""

from __future__ import annotations

from uuid import UUID

from server.domain.users import email_key

FORMAT = "v2"
PREFIX = f"dataservice:{FORMAT}"
EPOCH = f"{PREFIX}:epoch"


def user(user_id: UUID) -> str:
    return f"{PREFIX}:user:{user_id}"


def user_email(email: str) -> str:
    return f"{PREFIX}:user-email:{email_key(email)}"


def session(token_hash: bytes) -> str:
    """The key of a session, by the SHA-256 of its token (server.domain.sessions.token_hash)."""
    return f"{PREFIX}:session:{token_hash.hex()}"


def content(content_id: UUID) -> str:
    return f"{PREFIX}:content:{content_id}"
