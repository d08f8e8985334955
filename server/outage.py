"""Outages of a dependency logged as changes of state, not as one line per failed operation.

While a dependency is down every call fails the same way, and a line per failure floods the log (thousands
a minute) and buries everything else. ``OutageLog`` writes one line when an outage begins ("<dependency>
unavailable", with the error), then while failures go on at most one summary line per interval, counting the
operations that failed since the previous line, and one line when an operation succeeds again.

A dependency that flaps (failing and succeeding in turn) would make two lines per flap, so an outage that
begins less than an interval after the previous line is not announced at once: its failures are counted in
the next line, written an interval after the previous one at the soonest. The end of an outage that was
announced is always logged at once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable


class OutageLog:
    """The log of one dependency's outages, written through ``log`` at WARNING.

    Call ``failed`` after every failed operation and ``succeeded`` after every successful one; while nothing
    is wrong ``succeeded`` only tests two fields, so it is cheap enough for every cache hit.
    """

    def __init__(
        self,
        log: logging.Logger,
        dependency: str,
        *,
        summary_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if summary_seconds <= 0:
            raise ValueError("summary_seconds is expected to be greater than zero")
        self._log = log
        self._dependency = dependency
        self._summary_seconds = summary_seconds
        self._clock = clock
        self._down_since: float | None = None  # start of the outage under way; None while available
        self._announced = False  # the outage under way has had its "unavailable" line
        self._unreported = 0  # failed operations not yet counted in a line
        self._last_line = -math.inf  # when this log last wrote a line
        self._last_operation = ""
        self._last_error: BaseException | None = None

    def failed(self, operation: str, error: BaseException) -> None:
        """Counts a failed ``operation``; logs only if that starts an outage or a summary is due."""
        now = self._clock()
        self._unreported += 1
        self._last_operation, self._last_error = operation, error
        if self._down_since is None:
            self._down_since, self._announced = now, False
        if now - self._last_line < self._summary_seconds:
            return
        state = "still unavailable" if self._announced else "unavailable"
        self._write(now, f"{self._dependency} {state}", outage_seconds=now - self._down_since)
        self._announced = True

    def succeeded(self) -> None:
        """Ends the outage under way, if any; logs its end if its start was logged."""
        if self._down_since is None and not self._unreported:
            return
        now = self._clock()
        if self._down_since is not None:
            outage_seconds, announced, self._down_since = now - self._down_since, self._announced, None
            if announced:
                self._write(now, f"{self._dependency} available again", outage_seconds=outage_seconds)
                return
        # Failures of outages too brief to be announced, reported once an interval has passed since the last line.
        if now - self._last_line >= self._summary_seconds:
            self._write(now, f"{self._dependency} was briefly unavailable")

    def _write(self, now: float, message: str, *, outage_seconds: float | None = None) -> None:
        fields: dict[str, object] = {
            "dependency": self._dependency,
            "failed_operations": self._unreported,
            "last_failed_operation": self._last_operation,
            "error": repr(self._last_error),
        }
        if outage_seconds is not None:
            fields["outage_seconds"] = round(outage_seconds, 3)
        self._log.warning(message, extra=fields)
        self._unreported = 0
        self._last_line = now
