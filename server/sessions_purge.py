"""The background purge of ended sessions, so that revoked and expired rows do not pile up in the table.

Every SESSION_PURGE_INTERVAL_SECONDS one pass runs (server/background.py): batches of at most
SESSION_PURGE_BATCH_SIZE rows, each in a short transaction of its own, until a batch comes back short. Each
batch first takes a transaction-level advisory lock (server.store.sessions.PURGE_LOCK_KEY) without waiting:
while another replica purges, this one skips the round, so replicas never compete for the same rows. Sessions
are deleted once they have been over for ENDED_RETENTION: until then a CreateSession retry still finds the
session it made, and answers that it has ended instead of making a new one.
"""

from __future__ import annotations

from datetime import timedelta

from server.db.database import Database
from server.outage import OutageLog
from server.background import BackgroundPass
from server.store import sessions as store

ENDED_RETENTION = timedelta(days=1)


class SessionPurge(BackgroundPass):
    """Deletes sessions that ended more than ENDED_RETENTION ago."""

    operation = "purge of ended sessions"
    done = "purged ended sessions"

    def __init__(self, db: Database, *, batch_size: int, outage: OutageLog) -> None:
        if batch_size <= 0:
            raise ValueError("batch_size is expected to be greater than zero")
        super().__init__(outage)
        self._db = db
        self._batch_size = batch_size

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
