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


async def cancel_and_wait(tasks, timeout_s: float = 5.0) -> None:
    """Cancel `tasks` and wait for them, but never longer than `timeout_s`.

    A cancellation that arrives inside a client library's own timeout handling can be swallowed,
    and the task then runs on; shutdown must not hang on such a task.
    """
    pending = {task for task in tasks if task is not None}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pending and loop.time() < deadline:
        # Cancel again whatever lost its cancellation (seen after a SIGSTOP of the coordinator).
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(1.0, max(0.0, deadline - loop.time())))
    for task in pending:
        log.warning("task %r did not stop within %.1f s of its cancellation", task.get_name(), timeout_s)
