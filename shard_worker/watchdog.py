"""One keepalive watchdog for every socket of a worker.

Twitch sends a keepalive only when nothing else was sent for keepalive_timeout_seconds, so any frame
proves the socket alive and silence past the timeout means it is dead (EventSub WebSocket guide). A
single sweeper task checks all sockets; a retired socket is removed from it, so its timer cannot fire.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from . import metrics

if TYPE_CHECKING:
    from .session import Connection

log = logging.getLogger(__name__)


class Watchdog:
    """Closes sockets that stayed silent past their keepalive deadline."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._connections: set[Connection] = set()
        self._task: asyncio.Task | None = None
        self.timeouts = 0

    def watch(self, conn: Connection) -> None:
        self._connections.add(conn)

    def forget(self, conn: Connection) -> None:
        self._connections.discard(conn)

    def __len__(self) -> int:
        return len(self._connections)

    def start(self) -> None:
        self._task = asyncio.create_task(self._sweep_loop(), name="keepalive watchdog")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            now_s = time.monotonic()
            for conn in [c for c in self._connections if c.deadline_exceeded(now_s)]:
                self.timeouts += 1
                metrics.KEEPALIVE_TIMEOUTS.inc()
                self.forget(conn)
                log.warning("no frame for %.1f s; declaring the socket dead", now_s - conn.last_frame_s,
                            extra={"shard_id": conn.shard.shard_id, "session_id": conn.session_id})
                asyncio.create_task(conn.close("keepalive timeout", code=1000), name=f"shard {conn.shard.shard_id} timeout")
