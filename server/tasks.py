"""Ending background tasks for sure."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


async def cancel(task: asyncio.Task[None]) -> None:
    """Cancels the background ``task`` and waits for its end. Cancels again while it runs on: on Python 3.11,
    ``asyncio.wait_for`` (inside the task, or inside a library it calls) swallows a cancellation that arrives just
    as the awaited work completes, and a task looping on it would then never end, nor the shutdown waiting for it."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled() and task.exception() is not None:  # a bug in it must not keep the server from stopping
        log.error("background task had failed", extra={"task": task.get_name()}, exc_info=task.exception())
