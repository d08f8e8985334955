"""The background purge of ended sessions, so that revoked and expired rows do not pile up in the table.

Every SESSION_PURGE_INTERVAL_SECONDS one pass runs: batches of at most SESSION_PURGE_BATCH_SIZE rows, each in a
short transaction of its own, until a batch comes back short. Each batch first takes a transaction-level
advisory lock (server.store.sessions.PURGE_LOCK_KEY) without waiting: while another replica purges, this one
skips the round, so replicas never compete for the same rows. Sessions are deleted once they have been over
for ENDED_RETENTION: until then a CreateSession retry still finds the session it made, and answers that it has
ended instead of making a new one.

A failing pass never ends the task: while PostgreSQL is away its failures join the database outage log (one
line when the outage begins, one when it ends), and the next pass comes an interval later as usual.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta


from server.db.database import Database
from server.errors import is_outage
from server.outage import OutageLog
from server.store import sessions as store

log = logging.getLogger(__name__)

ENDED_RETENTION = timedelta(days=1)


class SessionPurge:
    """Deletes sessions that ended more than ENDED_RETENTION ago; ``run()`` is the background task's body,
    ``run_once()`` one pass."""

    def __init__(self, db: Database, *, batch_size: int, outage: OutageLog) -> None:
        if batch_size <= 0:
            raise ValueError("batch_size is expected to be greater than zero")
        self._db = db
        self._batch_size = batch_size
        self._outage = outage

    async def run(self, interval_seconds: float) -> None:
        """Purges every ``interval_seconds`` until cancelled; the first pass an interval after start, which is
        busy enough without it."""
        if interval_seconds <= 0:
            raise ValueError("interval_seconds is expected to be greater than zero")
        while True:
            await asyncio.sleep(interval_seconds)
            await self.run_logged()

    async def run_logged(self) -> None:
        """One pass whose failure is logged instead of raised: what ``run`` does every interval."""
        try:
            purged = await self.run_once()
        except Exception as exc:
            if is_outage(exc):
                self._outage.failed("session purge", exc)
            else:
                log.exception("session purge failed")
            return
        self._outage.succeeded()
        if purged:
            log.info("purged ended sessions", extra={"sessions": purged})

    async def run_once(self) -> int | None:
        """One pass: the number of sessions deleted, or None when another replica held the lock from the start."""
        total = 0
        while True:
            purged = await store.purge_ended_sessions(
                self._db, ended_before=ENDED_RETENTION, limit=self._batch_size
            )
            if purged is None:  # another replica purges: it takes this round, or the rest of it
                return None if total == 0 else total
            total += purged
            if purged < self._batch_size:
                return total
