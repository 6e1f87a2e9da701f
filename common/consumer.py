"""A small helper for downstream consumers of the event streams.

It reads one partition stream with a consumer group, hands each entry to a handler, acknowledges
it when the handler returns, and claims entries that another consumer left pending for too long
(XAUTOCLAIM), so a crashed consumer's work is not stuck.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as redis
import redis.exceptions

log = logging.getLogger(__name__)

Handler = Callable[[bytes, dict[bytes, bytes]], Awaitable[None]]


class StreamConsumer:
    """Consumes one stream as `consumer` in `group`; `run_once()` handles one batch."""

    def __init__(self, client: redis.Redis, stream: str, group: str, consumer: str, handler: Handler, *,
                 batch: int = 100, block_ms: int = 1000, claim_idle_ms: int = 60_000) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.handler = handler
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.handled = 0
        self.failed = 0

    async def ensure_group(self) -> None:
        """Create the consumer group at the start of the stream if it does not exist."""
        try:
            await self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run_once(self) -> int:
        """Handle stuck entries claimed from others, then new entries; return how many were acknowledged."""
        _, claimed, _ = await self.client.xautoclaim(
            self.stream, self.group, self.consumer, self.claim_idle_ms, start_id="0-0", count=self.batch)
        entries = list(claimed)
        answer = await self.client.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=self.batch, block=self.block_ms)
        for _, stream_entries in answer or []:
            entries.extend(stream_entries)
        return await self._handle(entries)

    async def _handle(self, entries) -> int:
        acknowledged = 0
        for entry_id, fields in entries:
            if not fields:
                continue  # trimmed away by MAXLEN before it was handled
            try:
                await self.handler(entry_id, fields)
            except Exception as exc:  # the handler is the caller's code; leave the entry pending for a retry
                self.failed += 1
                log.warning("handler failed on %s %s: %s; entry left pending", self.stream, entry_id, exc)
                continue
            await self.client.xack(self.stream, self.group, entry_id)
            acknowledged += 1
            self.handled += 1
        return acknowledged
