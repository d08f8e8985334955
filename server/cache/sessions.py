"""Sessions as the servicer sees them: token checks read through the cache, writes go to the store, then the
cached sessions of every token they revoked or replaced are invalidated.

Entries are keyed by the SHA-256 of the token (never the token) and hold the serialized Session. An entry is
never served past its session's expiry: it is filled with a lifetime no longer than the time the session has
left, and a hit is checked against expire_time all the same (an entry that has outlived it goes to the
database, which knows whether a refresh moved it). Revocations and token replacements invalidate the keys
after they commit, and the lease rule (server/cache/base.py) refuses any fill that began before them, so a
revoked token is refused at once. An unknown token is cached as such for a few seconds (it can never become
valid: tokens are random and new). The purge deletes only ended sessions, which no entry can outlive, so it
invalidates nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from uuid import UUID

from dataservice.v1 import session_service_pb2 as session_pb
from google.protobuf import timestamp_pb2

from server.cache import keys
from server.cache.readthrough import Loaded, ReadThrough
from server.db.database import Database
from server.domain.common import CreateRequest, PageCursor
from server.domain.sessions import LAST_SEEN_INTERVAL, Issued, NewSession, Session, new_token, token_hash
from server.messages.sessions import session_from_message, session_message
from server.store import sessions as store

_LAST_SEEN_INTERVAL_SECONDS = LAST_SEEN_INTERVAL.total_seconds()


class Sessions:
    """The one object SessionService calls; whether a token check came from the cache is invisible to it."""

    def __init__(self, db: Database, reads: ReadThrough) -> None:
        self._db = db
        self._reads = reads

    async def create(self, new: NewSession, request: CreateRequest | None) -> Issued:
        """A new session with a new token; for a retried request, the session it made under a new token."""
        token = new_token()
        hashed = token_hash(token)
        session = await store.create_session(self._db, new, hashed, request)
        if session is None:
            assert request is not None, "only create_request_id can conflict"
            session = await self._reissue(request, hashed)
        return Issued(session, token)

    async def _reissue(self, request: CreateRequest, hashed: bytes) -> Session:
        # The hash about to be replaced is read first, so that its entry goes even when the answer of the write
        # is lost after its commit; the write reports the hash it did replace (another retry may have come first).
        known = await store.token_hash_of_request(self._db, request.id)
        async with self._invalidating([known] if known is not None else []) as stale:
            reissued = await store.reissue_token(self._db, request, hashed)
            stale.add(reissued.replaced_token_hash)
        return reissued.session

    async def authenticate(self, token: str) -> bytes | None:
        """The live session of ``token`` as a serialized dataservice.v1.Session, recorded as seen if it was last
        seen a minute ago or more; None when the token is unknown, malformed, revoked or expired.

        A hit is checked on the cached message itself (two timestamps compared as numbers) and answered as it
        is: converting it to the dataclass and back would cost more than the rest of the read.
        """
        hashed = token_hash(token)
        value = await self._reads.read(keys.session(hashed), lambda: self._load(hashed))
        if value is None:
            return None
        message = session_pb.Session.FromString(value)
        now = time.time()
        if _seconds(message.expire_time) <= now:
            # An entry that outlived its session's expiry is not served: the database has the last word (a
            # refresh may have moved the expiry).
            session = await store.get_live_session(self._db, hashed)
            if session is None:
                return None
            if session.needs_last_seen(datetime.now(UTC)):
                session = await self._record_last_seen(hashed, session)
            return session_message(session).SerializeToString()
        if now - _seconds(message.last_seen_time) >= _LAST_SEEN_INTERVAL_SECONDS:
            seen = await self._record_last_seen(hashed, session_from_message(message))
            return session_message(seen).SerializeToString()
        return value

    async def _load(self, hashed: bytes) -> Loaded:
        session = await store.get_live_session(self._db, hashed)
        if session is None:
            return Loaded(None)
        now = datetime.now(UTC)
        # A session about to be recorded as seen is not cached: that write invalidates it anyway.
        time_left = 0.0 if session.needs_last_seen(now) else (session.expires_at - now).total_seconds()
        return Loaded(session_message(session).SerializeToString(), max_ttl_seconds=time_left)

    async def _record_last_seen(self, hashed: bytes, session: Session) -> Session:
        """``session`` with last_seen_at moved to now, written once however many readers try at once; as read
        when another reader wrote it first or the session ended meanwhile."""
        async with self._invalidating([hashed]):
            seen = await store.record_last_seen(self._db, hashed)
        return seen if seen is not None else session

    async def refresh(self, token: str) -> Session | None:
        """The live session of ``token`` with its expiry slid forward; None like ``authenticate``."""
        hashed = token_hash(token)
        async with self._invalidating([hashed]):
            return await store.refresh_session(self._db, hashed)

    async def revoke_by_token(self, token: str, *, user_id: UUID | None) -> None:
        hashed = token_hash(token)
        async with self._invalidating([hashed]):
            await store.revoke_session_by_token(self._db, hashed, user_id=user_id)

    async def revoke_by_id(self, session_id: UUID, *, user_id: UUID | None) -> None:
        # As in _reissue: the hash is read first in case the answer of the revocation is lost.
        known = await store.token_hash_of_session(self._db, session_id)
        async with self._invalidating([known] if known is not None else []) as stale:
            stale.add(await store.revoke_session_by_id(self._db, session_id, user_id=user_id))

    async def revoke_all_of_user(self, user_id: UUID, *, except_session_id: UUID | None) -> int:
        """Revokes the user's live sessions but one; returns how many."""
        known = await store.live_token_hashes_of_user(self._db, user_id, except_session_id=except_session_id)
        async with self._invalidating(known) as stale:
            revoked = await store.revoke_user_sessions(self._db, user_id, except_session_id=except_session_id)
            stale.update(revoked)
        return len(revoked)

    async def list(self, user_id: UUID, *, after: PageCursor | None, limit: int) -> list[Session]:
        return await store.list_live_sessions(self._db, user_id, after=after, limit=limit)

    @asynccontextmanager
    async def _invalidating(self, token_hashes: Iterable[bytes]) -> AsyncIterator[set[bytes]]:
        """Invalidates the entries of ``token_hashes``, and of those the block adds to the set it is given, after
        the block — also when it failed or was cancelled: the write may have committed anyway (a cancelled
        statement can still commit on the server), and a needless invalidation costs one miss."""
        stale = set(token_hashes)
        try:
            yield stale
        finally:
            if stale:
                await asyncio.shield(self._reads.invalidate(*(keys.session(hashed) for hashed in stale)))


def _seconds(stamp: timestamp_pb2.Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9
