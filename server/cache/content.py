"""Content as the servicer sees it: point reads through the cache, writes to the store, then invalidation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import UUID

from dataservice.v1 import content_service_pb2 as content_pb

from server.cache import keys
from server.cache.readthrough import Loaded, ReadThrough
from server.db.database import Database
from server.domain.common import CreateRequest, PageCursor
from server.domain.content import (
    Content,
    ContentChanges,
    ContentFilter,
    ContentOrder,
    NewContent,
    RankCursor,
    SearchHit,
)
from server.domain.embeddings import Collection, SearchParams
from server.errors import NotFound
from server.messages.content import fill_content
from server.store import content as store


class Contents:
    """The one object ContentService calls; whether a read came from the cache is invisible to it.

    Point reads answer the serialized Content message, which is what the cache stores: a hit is handed out
    as it is, for the servicer to parse once, straight into its response, with no trip through the
    dataclass and back.
    """

    def __init__(self, db: Database, reads: ReadThrough) -> None:
        self._db = db
        self._reads = reads

    async def get(self, content_id: UUID) -> bytes:
        """The content as a serialized dataservice.v1.Content."""
        value = await self._reads.read(keys.content(content_id), lambda: self._load(content_id))
        if value is None:
            raise NotFound("Content", str(content_id))
        return value

    async def _load(self, content_id: UUID) -> Loaded:
        try:
            content = await store.get_content(self._db, content_id)
        except NotFound:
            return Loaded(None)
        return Loaded(_serialized(content))

    async def get_many(self, content_ids: list[UUID]) -> dict[UUID, bytes]:
        """The serialized content of each id that has some: one cache round trip for the batch, one query to
        PostgreSQL for the misses, one round trip for their fills."""
        unique = list(dict.fromkeys(content_ids))

        async def load(missed: list[int]) -> list[Loaded]:
            found = await store.get_contents(self._db, [unique[index] for index in missed])
            return [
                Loaded(_serialized(content) if (content := found.get(unique[index])) is not None else None)
                for index in missed
            ]

        values = await self._reads.read_many([keys.content(content_id) for content_id in unique], load)
        return {content_id: value for content_id, value in zip(unique, values, strict=True) if value is not None}

    async def list(
        self, where: ContentFilter, order: ContentOrder, *, after: PageCursor | None, limit: int
    ) -> list[Content]:
        return await store.list_contents(self._db, where, order, after=after, limit=limit)

    async def search(
        self, query: str, where: ContentFilter, *, after: RankCursor | None, limit: int
    ) -> list[SearchHit]:
        return await store.search_contents(self._db, query, where, after=after, limit=limit)

    async def hybrid_search(
        self,
        collection: Collection,
        query: str,
        vector: list[float],
        where: ContentFilter,
        params: SearchParams,
        *,
        after: RankCursor | None,
        limit: int,
    ) -> list[SearchHit]:
        return await store.hybrid_search(self._db, collection, query, vector, where, params, after=after, limit=limit)

    async def create(self, new: NewContent, request: CreateRequest | None) -> Content:
        # Nothing to invalidate: the id is new, so no reader can have cached "no such content" for it.
        return await store.create_content(self._db, new, request)

    async def update(self, content_id: UUID, changes: ContentChanges, *, expected_version: int | None) -> Content:
        async with self._invalidating(keys.content(content_id)):
            return await store.update_content(self._db, content_id, changes, expected_version=expected_version)

    async def delete(self, content_id: UUID, *, expected_version: int | None) -> None:
        async with self._invalidating(keys.content(content_id)):
            await store.delete_content(self._db, content_id, expected_version=expected_version)

    @asynccontextmanager
    async def _invalidating(self, key: str) -> AsyncIterator[None]:
        """Invalidates ``key`` after the write, also when it failed or was cancelled: it may have committed
        anyway (a cancelled statement can still commit on the server), and a needless invalidation costs a miss."""
        try:
            yield
        finally:
            await asyncio.shield(self._reads.invalidate(key))


def _serialized(content: Content) -> bytes:
    return fill_content(content_pb.Content(), content).SerializeToString()
