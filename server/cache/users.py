"""Users as the servicer sees them: point reads through the cache, writes to the store, then invalidation.

Reads answer the serialized User, which is what the cache holds: a hit is handed out as it is, for the servicer
to parse once, straight into its response.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

from dataservice.v1 import user_service_pb2 as user_pb

from server.cache import keys
from server.cache.base import MISSING
from server.cache.readthrough import Loaded, ReadThrough
from server.db.database import Database
from server.domain.common import CreateRequest, PageCursor
from server.domain.users import Created, Credentials, User, UserChanges, email_key
from server.errors import NotFound
from server.messages.users import user_message
from server.store import users as store


class Users:
    """The one object UserService calls; whether a read came from the cache is invisible to it."""

    def __init__(self, db: Database, reads: ReadThrough) -> None:
        self._db = db
        self._reads = reads

    async def get(self, user_id: UUID) -> bytes:
        """The user as a serialized dataservice.v1.User."""
        value = await self._reads.read(keys.user(user_id), lambda: self._load(user_id))
        if value is None:
            raise NotFound("User", str(user_id))
        return value

    async def _load(self, user_id: UUID) -> Loaded:
        try:
            user = await store.get_user(self._db, user_id)
        except NotFound:
            return Loaded(None)
        return Loaded(user_message(user).SerializeToString())

    async def get_by_email(self, email: str) -> bytes:
        """The user with ``email``, as a serialized dataservice.v1.User.

        The email's entry links to the user's id and is trusted only if that user still has the email (an email
        change leaves the old link behind). On a hit, the link and the user come in one round trip.
        """
        link_key = keys.user_email(email)
        link, value = await self._reads.read_linked(link_key, keys.USER_PREFIX)
        if link == MISSING:
            raise NotFound("User", email)
        if link is not None:
            if value is None:
                value = await self._get_or_none(UUID(link.decode()))
            if value is not None and _has_email(value, email):
                return value
            await self._reads.invalidate(link_key)  # a link left behind by an email change or a deletion
        found: list[bytes] = []
        user_id = await self._reads.read(link_key, lambda: self._load_link(email, found))
        if found:  # this read loaded the user from the database along with the link
            return found[0]
        if user_id is None:
            raise NotFound("User", email)
        value = await self._get_or_none(UUID(user_id.decode()))
        if value is None or not _has_email(value, email):
            # The email moved between the link's read and the user's: the database decides.
            return user_message(await store.get_user_by_email(self._db, email)).SerializeToString()
        return value

    async def _get_or_none(self, user_id: UUID) -> bytes | None:
        try:
            return await self.get(user_id)
        except NotFound:
            return None

    async def _load_link(self, email: str, found: list[bytes]) -> Loaded:
        try:
            user = await store.get_user_by_email(self._db, email)
        except NotFound:
            return Loaded(None)
        found.append(user_message(user).SerializeToString())
        return Loaded(str(user.id).encode())

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
        # The email's entry may say "no such user" (a lookup before the email was taken).
        async with self._invalidating(keys.user_email(email)):
            return await store.create_user(
                self._db,
                email=email,
                display_name=display_name,
                preferences=preferences,
                password_hash=password_hash,
                request=request,
            )

    async def update(self, user_id: UUID, changes: UserChanges, *, expected_version: int | None) -> User:
        async with self._invalidating(keys.user(user_id)) as stale:
            user = await store.update_user(self._db, user_id, changes, expected_version=expected_version)
            if changes.email is not None:
                stale.append(keys.user_email(user.email))  # it may say "no such user"
            return user

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
        still commit on the server), and a needless invalidation costs one miss. The write's transaction
        recorded them in the outbox too (server/cache/outbox.py), for when this process cannot."""
        stale = list(cache_keys)
        try:
            yield stale
        finally:
            await asyncio.shield(self._reads.invalidate(*stale))


def _has_email(value: bytes, email: str) -> bool:
    return email_key(user_pb.User.FromString(value).email) == email_key(email)
