"""The loop shared by the background purges (ended sessions, expired embeddings): one pass per interval, and a
failing pass never ends the task. While PostgreSQL is away the failures join the database outage log (one
line when the outage begins, one when it ends), and the next pass comes an interval later as usual."""

from __future__ import annotations

import abc
import asyncio
import logging

from server.errors import is_outage
from server.outage import OutageLog

log = logging.getLogger(__name__)


class Purge(abc.ABC):
    """A background deletion of rows that have had their time; ``run()`` is the task's body, ``run_once()`` one
    pass, returning the rows deleted (None when another replica took the pass)."""

    #: What a pass deletes, for the logs ("ended sessions").
    rows_name: str

    def __init__(self, outage: OutageLog) -> None:
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
        operation = f"purge of {self.rows_name}"
        try:
            purged = await self.run_once()
        except Exception as exc:
            if is_outage(exc):
                self._outage.failed(operation, exc)
            else:
                log.exception("%s failed", operation)
            return
        self._outage.succeeded()
        if purged:
            log.info(f"purged {self.rows_name}", extra={"rows": purged})

    @abc.abstractmethod
    async def run_once(self) -> int | None: ...
