"""The background refresh of the content popularity summary (RECOMMENDATION_POPULARITY_REFRESH_SECONDS).

REFRESH MATERIALIZED VIEW CONCURRENTLY rebuilds the summary beside the old one, so feeds computed meanwhile read
the old one and never wait. One replica refreshes per round, under a transaction-level advisory lock that the
others try and skip.
"""

from __future__ import annotations

from server.background import BackgroundPass
from server.db.database import Database
from server.outage import OutageLog
from server.store import recommendations as store


class PopularityRefresh(BackgroundPass):
    operation = "refresh of content popularity"
    done = "refreshed content popularity"

    def __init__(self, db: Database, *, outage: OutageLog) -> None:
        super().__init__(outage)
        self._db = db

    async def run_once(self) -> int | None:
        """One refresh: 0 rows reported (a refresh is routine, not news), None when another replica held it."""
        return 0 if await store.refresh_popularity(self._db) else None
