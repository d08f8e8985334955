"""The loop shared by the background passes (the purges of ended sessions and expired embeddings, the refresh of
content popularity): one pass per interval, and a failing pass never ends the task. While PostgreSQL is away the failures join the database outage log (one
line when the outage begins, one when it ends), and the next pass comes an interval later as usual."""

from __future__ import annotations

import abc
import asyncio
import logging

from server.errors import is_outage
from server.outage import OutageLog

log = logging.getLogger(__name__)


class BackgroundPass(abc.ABC):
    """Work repeated in the background; ``run()`` is the task's body, ``run_once()`` one pass, returning how
    many rows it changed (None when another replica took the pass)."""

    #: What a pass does, for the logs ("purge of ended sessions").
    operation: str
    #: The log line of a pass that changed rows ("purged ended sessions").
    done: str

    def __init__(self, outage: OutageLog) -> None:
        self._outage = outage

    async def run(self, interval_seconds: float) -> None:
        """Runs a pass every ``interval_seconds`` until cancelled; the first pass an interval after start, which is
        busy enough without it."""
        if interval_seconds <= 0:
            raise ValueError("interval_seconds is expected to be greater than zero")
        while True:
            await asyncio.sleep(interval_seconds)
            await self.run_logged()

    async def run_logged(self) -> None:
        """One pass whose failure is logged instead of raised: what ``run`` does every interval."""
        operation = self.operation
        try:
            changed = await self.run_once()
        except Exception as exc:
            if is_outage(exc):
                self._outage.failed(operation, exc)
            else:
                log.exception("%s failed", operation)
            return
        self._outage.succeeded()
        if changed:
            log.info(self.done, extra={"rows": changed})

    @abc.abstractmethod
    async def run_once(self) -> int | None: ...
