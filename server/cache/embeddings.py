"""Embeddings as EmbeddingService sees them: collections resolved by name through an in-process catalogue.

Every embedding call names its collection, and needs its id, dimension and metric before the statement can be
written. A collection never changes once created, so its row is kept in the process after the first read and
the call makes one round trip instead of two. A collection dropped or replaced elsewhere cannot be served
from a stale entry: its table is named by the old id, which no longer exists, so the statement fails
(``CollectionGone``) and the call runs again on the row read afresh. A request refused for not fitting a
stale entry (a vector of the new dimension) is likewise checked against a fresh read before it fails.

Embeddings themselves are not cached: searches are answered by PostgreSQL's index, and items are read by id
rarely enough that a shared cache would cost more round trips than it saves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar
from uuid import UUID

from server.db.database import Database
from server.db.pgvector import VectorSupport
from server.domain.common import CreateRequest
from server.domain.embeddings import Collection, Embedding, NewCollection, NewEmbedding, Query, SearchResult
from server.errors import InvalidArgument
from server.store import embeddings as store
from server.store.embeddings import CollectionGone

T = TypeVar("T")


class Embeddings:
    """The one object EmbeddingService calls; every method answers FAILED_PRECONDITION while pgvector is
    known to be missing."""

    def __init__(self, db: Database, vectors: VectorSupport) -> None:
        self._db = db
        self._vectors = vectors
        self._collections: dict[str, Collection] = {}

    async def create_collection(self, new: NewCollection, request: CreateRequest | None) -> Collection:
        self._vectors.require()
        collection = await store.create_collection(self._db, new, request)
        self._collections[collection.name] = collection
        return collection

    async def get_collection(self, name: str) -> Collection:
        self._vectors.require()
        return await self._load(name)

    async def list_collections(self, *, after: str | None, limit: int) -> list[Collection]:
        self._vectors.require()
        return await store.list_collections(self._db, after=after, limit=limit)

    async def delete_collection(self, name: str, *, expected_id: int | None) -> None:
        self._vectors.require()
        self._collections.pop(name, None)
        await store.delete_collection(self._db, name, expected_id=expected_id)

    async def upsert(self, name: str, prepare: Callable[[Collection], list[NewEmbedding]]) -> int:
        """Writes the items ``prepare`` validates against the collection (raising InvalidArgument)."""
        return await self.with_collection(name, lambda collection: store.upsert_embeddings(self._db, collection, prepare(collection)))

    async def import_embeddings(
        self, name: str, batches: Callable[[Collection], AsyncIterator[list[NewEmbedding]]], *, index_memory: str
    ) -> store.Imported:
        """Loads the batches ``batches`` validates against the collection. A stream cannot be replayed, so the
        collection is read afresh rather than from the catalogue, and a drop meanwhile fails NOT_FOUND."""
        self._vectors.require()
        collection = await self._load(name)
        return await store.import_embeddings(self._db, collection, batches(collection), index_memory=index_memory)

    async def get_many(self, name: str, ids: list[UUID]) -> dict[UUID, Embedding]:
        return await self.with_collection(name, lambda collection: store.get_embeddings(self._db, collection, ids))

    async def delete(self, name: str, ids: list[UUID]) -> int:
        return await self.with_collection(name, lambda collection: store.delete_embeddings(self._db, collection, ids))

    async def search(self, name: str, prepare: Callable[[Collection], Awaitable[Query]]) -> SearchResult:
        """Runs the search that ``prepare`` builds for the collection (validating, and reading stored examples)."""

        async def run(collection: Collection) -> SearchResult:
            return await store.search(self._db, collection, await prepare(collection))

        return await self.with_collection(name, run)

    async def vectors(self, collection: Collection, ids: list[UUID]) -> dict[UUID, list[float]]:
        """The vectors of the live embeddings of ``ids``: the examples of a search by id or by examples."""
        found = await store.get_embeddings(self._db, collection, ids)
        return {embedding_id: embedding.vector for embedding_id, embedding in found.items()}

    async def with_collection(self, name: str, operation: Callable[[Collection], Awaitable[T]]) -> T:
        """Runs ``operation`` on the named collection, from the catalogue when it is there; once more on a
        fresh read when the entry turns out stale."""
        self._vectors.require()
        cached = self._collections.get(name)
        if cached is None:
            return await operation(await self._load(name))
        try:
            return await operation(cached)
        except (CollectionGone, InvalidArgument):
            self._collections.pop(name, None)
            fresh = await self._load(name)
            if fresh.id == cached.id:
                raise  # the entry was current: the error is the request's own
        return await operation(fresh)

    async def _load(self, name: str) -> Collection:
        collection = await store.get_collection(self._db, name)
        self._collections[name] = collection
        return collection
