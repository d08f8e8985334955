"""The caller's deadline, carried to the database as a shrinking budget.

The RPC interceptor records when the current call must be answered; every awaited database call asks
``budget()`` for its timeout, so a query never outlives the caller who is waiting for it. asyncpg cancels
a timed-out query on the server, so PostgreSQL stops working for a caller who has gone.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("deadline", default=None)


class DeadlineExpired(Exception):
    """The caller's deadline passed before the work could start."""


def set_deadline(seconds_remaining: float | None, default_seconds: float) -> None:
    """Starts the budget of the current call: the caller's remaining time, or ``default_seconds`` if none."""
    budget = default_seconds if seconds_remaining is None else min(seconds_remaining, default_seconds)
    _deadline.set(time.monotonic() + budget)


def budget(default_seconds: float) -> float:
    """Seconds left for the current call; ``default_seconds`` outside of any call (CLI, background tasks)."""
    deadline = _deadline.get()
    if deadline is None:
        return default_seconds
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineExpired()
    return remaining
