"""Named background tasks whose crash is logged instead of vanishing silently."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine

log = logging.getLogger(__name__)


def spawn(coro: Coroutine, name: str, *, on_crash: Callable[[BaseException], None] | None = None) -> asyncio.Task:
    """Start `coro` as a task named `name`; log an unexpected exception and call `on_crash` with it."""
    task = asyncio.create_task(coro, name=name)

    def done(finished: asyncio.Task) -> None:
        if finished.cancelled():
            return
        error = finished.exception()
        if error is not None:
            log.error("task %r crashed: %r", name, error, exc_info=error)
            if on_crash is not None:
                on_crash(error)

    task.add_done_callback(done)
    return task
