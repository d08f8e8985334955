"""Login sessions as plain dataclasses, and the token rules shared by the store, the cache and the API layer."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from ipaddress import IPv4Address, IPv6Address
from uuid import UUID

IPAddress = IPv4Address | IPv6Address

DEFAULT_TTL = timedelta(hours=24)
MIN_TTL = timedelta(minutes=1)
MAX_LIFETIME = timedelta(days=30)
"""The absolute lifetime: no refresh moves expires_at past created_at + MAX_LIFETIME (the table checks it
too, as ``interval '30 days'``; asyncpg sends this timedelta as that same interval). Also the longest ttl."""
LAST_SEEN_INTERVAL = timedelta(minutes=1)
"""last_seen_at is written at most this often per session, so that checking a token is rarely a write."""
TOKEN_BYTES = 32  # 256 random bits; token_urlsafe makes 43 characters of them


def new_token() -> str:
    """A fresh bearer token: opaque, URL-safe, unguessable."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> bytes:
    """What the table stores and the cache keys on instead of the token: its SHA-256 digest. Any text hashes,
    so a malformed token is looked up like an unknown one and refused alike. A plain digest (no salt, no
    slow hash) is enough: tokens are 256 random bits, not guessable passwords, and the digest must be
    computable from the token alone to find its row."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Session:
    """A login session as callers see it: never its token or the token's hash."""

    id: UUID
    user_id: UUID
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime
    user_agent: str
    ip_address: IPAddress | None

    def is_live(self, now: datetime) -> bool:
        """Not yet expired at ``now`` (revoked sessions are never handed out, so expiry is all there is to check)."""
        return self.expires_at > now

    def needs_last_seen(self, now: datetime) -> bool:
        """Whether presenting the token at ``now`` should record last_seen_at (it is a minute old)."""
        return now - self.last_seen_at >= LAST_SEEN_INTERVAL


@dataclass(frozen=True)
class NewSession:
    """What CreateSession asks for."""

    user_id: UUID
    ttl: timedelta
    user_agent: str
    ip_address: IPAddress | None


@dataclass(frozen=True)
class Issued:
    """A session with the token just issued for it: the only time the token is known to the service."""

    session: Session
    token: str


@dataclass(frozen=True)
class Reissued:
    """The session a retried CreateSession had made, now under a new token, and the hash of the token it
    replaced (whose cache entry must go)."""

    session: Session
    replaced_token_hash: bytes
