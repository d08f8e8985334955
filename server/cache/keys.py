"""Cache key format, written down once (format version in the prefix).

    dataservice:v3:user:<uuid>                 serialized dataservice.v1.User
    dataservice:v3:user-email:<email_key>      the user's id (ASCII), checked against the user on read
    dataservice:v3:session:<token hash hex>    serialized dataservice.v1.Session of the live session whose
                                               token has this SHA-256 (the token itself is never a key)
    dataservice:v3:content:<uuid>              serialized dataservice.v1.Content
    dataservice:v3:recommendations:<uuid>      a user's feed: the id of the precomputed list it starts with (16
                                               bytes, zeros for none), then a serialized GetRecommendationsResponse
    dataservice:v3:lease:<entity>:<id>         the lease token of a reader filling the entry of that name
    dataservice:v3:heartbeat:<process>         Redis only: a near cache's probe of its invalidation stream
    dataservice:v3:epoch                       Redis only: the run_id of the Redis server the entries are valid on

Any entry may hold ``MISSING`` (server/cache/base.py) instead: the database had no such row when it was read.
In Redis every value and lease token is stored as ``<epoch>|<bytes>``, the epoch it was written under
(server/cache/redis.py). Leases live under a prefix of their own so that taking one is not reported as a
change of the entry to the near caches of other replicas (server/cache/near.py). Bump ``FORMAT`` when a stored
value changes incompatibly: old entries are then simply never read.
"""

from __future__ import annotations

from uuid import UUID

from server.domain.users import email_key

FORMAT = "v3"
PREFIX = f"dataservice:{FORMAT}"
EPOCH = f"{PREFIX}:epoch"
USER_PREFIX = f"{PREFIX}:user:"
LEASE_PREFIX = f"{PREFIX}:lease:"
HEARTBEAT_PREFIX = f"{PREFIX}:heartbeat:"
# Every prefix whose entries a near cache may hold, plus its heartbeat: what Redis reports changes of.
TRACKED_PREFIXES = (
    USER_PREFIX,
    f"{PREFIX}:user-email:",
    f"{PREFIX}:session:",
    f"{PREFIX}:content:",
    f"{PREFIX}:recommendations:",
    HEARTBEAT_PREFIX,
)


def user(user_id: UUID) -> str:
    return f"{USER_PREFIX}{user_id}"


def user_email(email: str) -> str:
    return f"{PREFIX}:user-email:{email_key(email)}"


def session(token_hash: bytes) -> str:
    """The key of a session, by the SHA-256 of its token (server.domain.sessions.token_hash)."""
    return f"{PREFIX}:session:{token_hash.hex()}"


def content(content_id: UUID) -> str:
    return f"{PREFIX}:content:{content_id}"


def recommendations(user_id: UUID) -> str:
    return f"{PREFIX}:recommendations:{user_id}"


def lease(key: str) -> str:
    """The key of the lease on the entry ``key``."""
    return LEASE_PREFIX + key[len(PREFIX) + 1 :]


_ENTITY_START = len(PREFIX) + 1


def entity(key: str) -> str:
    """The entity an entry's key names (``user``, ``user-email``, ``session``, ``content``, ``recommendations``),
    for metrics."""
    return key[_ENTITY_START : key.index(":", _ENTITY_START)]


def of_outbox(entity_name: str, ident: str) -> str:
    """The key of a row of the outbox (migrations/0005): the triggers name entries by entity and identity,
    and the key format stays here, in one place."""
    if entity_name == "user":
        return user(UUID(ident))
    if entity_name == "user-email":
        return user_email(ident)
    if entity_name == "session":
        return session(bytes.fromhex(ident))
    if entity_name == "content":
        return content(UUID(ident))
    if entity_name == "recommendations":
        return recommendations(UUID(ident))
    raise ValueError(f"unknown cache entity {entity_name!r} in the outbox")
