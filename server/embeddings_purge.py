"""The background purge of expired embeddings (EMBEDDING_PURGE_*).

Expired embeddings are never returned (every read checks expire_time); this only gives their space back. A
pass visits every collection and deletes its expired rows in statements of at most EMBEDDING_PURGE_BATCH_SIZE,
skipping rows that a write holds: replicas purging at the same time share the work instead of waiting.
"""

from __future__ import annotations

from server.db.database import Database
from server.db.pgvector import VectorSupport
from server.outage import OutageLog
from server.background import BackgroundPass
from server.store import embeddings as store


class EmbeddingPurge(BackgroundPass):
    operation = "purge of expired embeddings"
    done = "purged expired embeddings"

    def __init__(self, db: Database, vectors: VectorSupport, *, batch_size: int, outage: OutageLog) -> None:
        if batch_size <= 0:
            raise ValueError("batch_size is expected to be greater than zero")
        super().__init__(outage)
        self._db = db
        self._vectors = vectors
        self._batch_size = batch_size

    async def run_once(self) -> int:
        """One pass over every collection: the number of embeddings deleted."""
        if self._vectors.known_missing:
            return 0  # no pgvector, no collection tables
        total = 0
        for collection in await store.all_collections(self._db):
            while True:
                purged = await store.purge_expired(self._db, collection, limit=self._batch_size)
                total += purged
                if purged < self._batch_size:
                    break
        return total
