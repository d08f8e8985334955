"""The outage log: a dependency's outage is a few lines however many operations fail, on a clock the test moves."""

from __future__ import annotations

import logging

import pytest

from server.outage import OutageLog

LOGGER = "tests.outage"


class Clock:
    """A monotonic clock that only the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def outage_log(clock: Clock) -> OutageLog:
    return OutageLog(logging.getLogger(LOGGER), "cache", summary_seconds=60.0, clock=clock)


def test_an_outage_is_one_line_then_a_summary_per_interval_then_one_line_at_its_end(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    lines = caplog.records
    clock = Clock()
    outage = outage_log(clock)
    outage.succeeded()
    assert lines == []

    outage.failed("read", ConnectionError("refused"))
    for _ in range(999):  # over the first minute
        clock.now += 0.06
        outage.failed("read", ConnectionError("refused"))
    clock.now += 1
    outage.failed("fill", TimeoutError("slow"))  # the interval has passed: a summary
    clock.now += 5
    outage.succeeded()
    outage.succeeded()

    messages = [line.getMessage() for line in lines]
    assert messages == ["cache unavailable", "cache still unavailable", "cache available again"]
    start, summary, end = lines
    assert (start.failed_operations, start.error) == (1, "ConnectionError('refused')")
    assert (summary.failed_operations, summary.last_failed_operation) == (1000, "fill")
    assert summary.error == "TimeoutError('slow')"
    assert (end.failed_operations, end.outage_seconds) == (0, pytest.approx(65.94))


def test_a_flapping_dependency_logs_a_few_lines_per_interval(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    lines = caplog.records
    clock = Clock()
    outage = outage_log(clock)
    for _ in range(10_000):  # ten minutes of alternate failures and successes
        clock.now += 0.03
        outage.failed("read", ConnectionError("reset"))
        clock.now += 0.03
        outage.succeeded()
    assert 10 <= len(lines) <= 2 * 10 + 2
    clock.now += 60
    outage.succeeded()  # the failures of the last, unannounced flaps are reported once their interval has passed
    assert lines[-1].getMessage() == "cache was briefly unavailable"
    assert sum(line.failed_operations for line in lines) == 10_000


def test_the_interval_is_checked_at_construction():
    with pytest.raises(ValueError, match="summary_seconds"):
        OutageLog(logging.getLogger(LOGGER), "cache", summary_seconds=0)
