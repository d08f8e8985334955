"""The outbox sweep: the cache invalidations that writers recorded but may not have made, made by any replica.

Every write of a cached row records the entries it makes stale in ``cache_outbox``, in its own transaction
(triggers, migrations/0005). The writer invalidates them itself right after its commit; when it cannot — it
was killed in between, or Redis did not answer and the process died before its retry landed — the records
remain. Every CACHE_OUTBOX_SWEEP_SECONDS each replica takes the records older than CACHE_OUTBOX_GRACE_SECONDS
(``FOR UPDATE SKIP LOCKED``: replicas never take the same rows), invalidates their entries, and deletes them in
the same transaction only once the cache confirms: while Redis is unreachable the records stay. So an entry made
stale by a committed write lives at most grace + interval (plus one sweep's run) after the commit, once any
replica runs and reaches Redis; with near caches, plus their own reporting bound (server/cache/near.py).

The records of writers that did invalidate are swept too, a grace period later: a second, needless invalidation
of each key written, which costs each a miss. That is the price of knowing nothing about the writer.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import asyncpg

from server.cache import keys
from server.cache.base import Cache, NotConfirmed
from server.cache.metrics import CacheMetrics
from server.db.database import Database
from server.errors import is_outage
from server.outage import OutageLog
from server.store import cache_outbox as store

log = logging.getLogger(__name__)



class OutboxSweep:
    """``run()`` is the background task's body, ``run_once()`` one sweep."""

    def __init__(
        self,
        db: Database,
        cache: Cache,
        metrics: CacheMetrics,
        *,
        grace_seconds: float,
        batch_size: int = 1000,
        outage: OutageLog,
    ) -> None:
        self._db = db
        self._cache = cache
        self._invalidations = metrics.invalidations.labels("outbox")
        self._grace = timedelta(seconds=grace_seconds)
        self._batch_size = batch_size
        self._outage = outage

    async def recover(self) -> None:
        """Every recorded invalidation, however recent: what a cache makes after an outage before it serves
        entries again. Raises NotConfirmed when the cache does not confirm them (its outage goes on)."""
        await self.run_once(grace_seconds=0)

    async def run(self, interval_seconds: float) -> None:
        if interval_seconds <= 0:
            raise ValueError("interval_seconds is expected to be greater than zero")
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                swept = await self.run_once()
            except NotConfirmed:
                continue  # the cache is failing, and says so; the records wait for the next sweep
            except asyncpg.UndefinedTableError:
                continue  # the schema is not migrated yet: no write can have recorded anything
            except Exception as exc:
                if is_outage(exc):
                    self._outage.failed("cache outbox sweep", exc)
                else:
                    log.exception("cache outbox sweep failed")
                continue
            self._outage.succeeded()
            if swept:
                log.debug("swept recorded cache invalidations", extra={"keys": swept})

    async def run_once(self, *, grace_seconds: float | None = None) -> int:
        """Invalidates and deletes the records older than ``grace_seconds`` (default: the configured grace);
        returns how many it took. Raises NotConfirmed, leaving the records of the batch, when the cache does not
        confirm."""
        older_than = self._grace if grace_seconds is None else timedelta(seconds=grace_seconds)
        total = 0
        while True:
            async with self._db.transaction() as conn:  # NotConfirmed rolls it back
                records = await store.take_recorded(conn, older_than=older_than, limit=self._batch_size)
                stale = {keys.of_outbox(entity, ident) for entity, ident in records}
                if stale and not await self._cache.invalidate(*stale):
                    raise NotConfirmed(f"{len(stale)} recorded cache invalidations")
            self._invalidations.inc(len(stale))
            total += len(records)
            if len(records) < self._batch_size:
                return total
