"""Users as the servicer sees them: point reads through the cache, writes to the store, then invalidation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

from dataservice.v1 import user_service_pb2 as user_pb

from server.cache import keys
from server.cache.base import Cache, jittered
from server.db.database import Database
from server.domain.common import CreateRequest, PageCursor
from server.domain.users import Created, Credentials, User, UserChanges, email_key
from server.errors import NotFound
from server.messages.users import user_from_message, user_message
from server.store import users as store


class Users:
    """The one object UserService calls; whether a read came from the cache is invisible to it."""

    def __init__(self, db: Database, cache: Cache, *, ttl_seconds: float) -> None:
        self._db = db
        self._cache = cache
        self._ttl = ttl_seconds

    async def get(self, user_id: UUID) -> User:
        key = keys.user(user_id)
        cached = await self._cache.get_or_lease(key)
        if cached.value is not None:
            return user_from_message(user_pb.User.FromString(cached.value))
        user = await store.get_user(self._db, user_id)
        if cached.lease is not None:
            await self._cache.fill(key, cached.lease, user_message(user).SerializeToString(), jittered(self._ttl))
        return user

    async def get_by_email(self, email: str) -> User:
        """The user with ``email``; the cached email→id link is trusted only if that user still has the email."""
        key = keys.user_email(email)
        cached = await self._cache.get_or_lease(key)
        if cached.value is not None:
            try:
                user = await self.get(UUID(cached.value.decode()))
            except NotFound:
                user = None
            if user is not None and email_key(user.email) == email_key(email):
                return user
            await self._cache.invalidate(key)
            cached = await self._cache.get_or_lease(key)
        user = await store.get_user_by_email(self._db, email)
        if cached.lease is not None:
            await self._cache.fill(key, cached.lease, str(user.id).encode(), jittered(self._ttl))
        return user

    async def list(self, *, after: PageCursor | None, limit: int) -> list[User]:
        return await store.list_users(self._db, after=after, limit=limit)

    async def credentials_by_email(self, email: str) -> Credentials | None:
        return await store.get_credentials_by_email(self._db, email)

    async def credentials(self, user_id: UUID) -> Credentials:
        return await store.get_credentials(self._db, user_id)

    async def create(
        self,
        *,
        email: str,
        display_name: str,
        preferences: dict[str, Any],
        password_hash: str,
        request: CreateRequest | None,
    ) -> Created:
        # Nothing to invalidate: an email link left by a deleted user fails its check on read.
        return await store.create_user(
            self._db,
            email=email,
            display_name=display_name,
            preferences=preferences,
            password_hash=password_hash,
            request=request,
        )

    async def update(self, user_id: UUID, changes: UserChanges, *, expected_version: int | None) -> User:
        async with self._invalidating(keys.user(user_id)):
            return await store.update_user(self._db, user_id, changes, expected_version=expected_version)

    async def set_password_hash(self, user_id: UUID, *, new_hash: str, old_hash: str) -> User:
        async with self._invalidating(keys.user(user_id)):  # the row's version (etag) and update time move
            return await store.set_password_hash(self._db, user_id, new_hash=new_hash, old_hash=old_hash)

    async def delete(self, user_id: UUID, *, expected_version: int | None) -> None:
        async with self._invalidating(keys.user(user_id)) as stale:
            deleted = await store.delete_user(self._db, user_id, expected_version=expected_version)
            stale.extend(keys.session(token_hash) for token_hash in deleted.session_token_hashes)
            stale.extend(keys.content(content_id) for content_id in deleted.content_ids)

    @asynccontextmanager
    async def _invalidating(self, *cache_keys: str) -> AsyncIterator[list[str]]:
        """Invalidates ``cache_keys``, and the keys the block adds to the list it is given, after the block —
        also when it failed or was cancelled: the write may have committed anyway (a cancelled statement can
        still commit on the server), and a needless invalidation costs one miss."""
        stale = list(cache_keys)
        try:
            yield stale
        finally:
            await asyncio.shield(self._cache.invalidate(*stale))
