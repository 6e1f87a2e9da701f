"""Publishes notifications to the partitioned event streams, each exactly once.

Events wait in a per-partition buffer; one flusher task sends each partition's batch through the
`PUBLISH_EVENTS` script (dedup claim, then XADD) in one round trip. A batch leaves the buffer only
after Redis confirmed it, and re-sending a batch whose answer was lost is harmless because its dedup
claims already exist.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import redis.asyncio as redis
import redis.exceptions
from prometheus_client import Counter, Histogram

from common.backoff import Backoff
from common.keys import Keys
from common.redisconn import Scripts
from common.settings import Settings
from common.tasks import spawn

log = logging.getLogger(__name__)

EVENTS_PUBLISHED = Counter("cf_events_published_total", "Events added to a stream")
EVENTS_DEDUPLICATED = Counter("cf_events_deduplicated_total", "Events dropped because their dedup key was already claimed")
EVENTS_LOST = Counter("cf_events_lost_total", "Events dropped because the publish buffer was full")
PUBLISH_LATENCY = Histogram(
    "cf_publish_latency_seconds", "Time from an event's arrival at the worker to Redis confirming its batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# Names of the stream entry fields, in order (the stream contract in docs/stream-contract.md).
ENTRY_FIELDS = (
    "message_id", "kind", "type", "version", "message_timestamp", "received_at_ms", "transport",
    "shard_id", "subscription_id", "broadcaster_user_id", "event",
)
RECEIVED_AT_INDEX = ENTRY_FIELDS.index("received_at_ms")
# Entries kept per partition in the comparison stream; the leader reads it every few seconds.
COMPARE_MAXLEN = 200_000


class Publisher:
    """Buffers events per partition and flushes them through one Lua call per batch."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self._settings = settings
        self._client = client
        self._keys = Keys(settings.key_prefix)
        self._scripts = Scripts(client)
        self._buffers: list[deque[tuple[str, list, str, int | str]]] = [deque() for _ in range(settings.stream_partitions)]
        self._pending = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task | None = None
        self.published = 0
        self.duplicates = 0
        self.lost = 0
        self.redis_errors = 0
        self.on_lost = None  # async callable(count) run once Redis is back after events were lost
        self._lost_reported = 0

    @property
    def pending(self) -> int:
        return self._pending

    def start(self) -> None:
        self._task = spawn(self._flush_loop(), "publisher flush")

    def submit(self, partition: int, dedup_id: str, values: list, note: str = "", ttl_s: int | None = None) -> None:
        """Queue one event: `values` are the ENTRY_FIELDS values in order.

        `note` is empty, or "transport|latency_ms|identity" for an event of a channel in the parallel
        run, which the publish script also records in the comparison stream. `ttl_s` replaces
        CF_DEDUP_TTL_S for this event's dedup claim.
        """
        if self._pending >= self._settings.publish_buffer_max:
            self.lost += 1
            EVENTS_LOST.inc()
            if self.lost == 1 or self.lost % 1000 == 0:
                log.error("publish buffer full (%d events); %d events lost so far", self._pending, self.lost)
            return
        self._buffers[partition].append((dedup_id, values, note, "" if ttl_s is None else ttl_s))
        self._pending += 1
        self._idle.clear()
        self._wakeup.set()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every queued event is in Redis; return False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    async def close(self, timeout_s: float = 5.0) -> None:
        if self._pending and not await self.drain(timeout_s):
            log.error("closing with %d events not published", self._pending)
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _flush_loop(self) -> None:
        backoff = Backoff(base_s=0.05, cap_s=2.0)
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                try:
                    await self._flush_once()
                    backoff.reset()
                    await self._report_lost()
                except (redis.exceptions.RedisError, OSError) as exc:
                    self.redis_errors += 1
                    delay = backoff.next_delay()
                    log.warning("publishing failed (%s); %d events buffered, retrying in %.2f s", exc, self._pending, delay)
                    await asyncio.sleep(delay)
            self._idle.set()

    async def _report_lost(self) -> None:
        if self.lost > self._lost_reported and self.on_lost is not None:
            count, self._lost_reported = self.lost - self._lost_reported, self.lost
            await self.on_lost(count)

    async def _flush_once(self) -> None:
        limit = self._settings.publish_batch_max
        batches = []
        pipe = self._client.pipeline(transaction=False)
        for partition, buffer in enumerate(self._buffers):
            if not buffer:
                continue
            batch = [buffer[i] for i in range(min(limit, len(buffer)))]
            batches.append((buffer, len(batch)))
            await self._queue_script(pipe, partition, batch)
        results = await pipe.execute()
        confirmed_ms = time.time() * 1000
        for (buffer, count), (published, duplicates) in zip(batches, results):
            for _ in range(count):
                _, values, _, _ = buffer.popleft()
                PUBLISH_LATENCY.observe(max(0.0, confirmed_ms - values[RECEIVED_AT_INDEX]) / 1000)
            self._pending -= count
            self.published += published
            self.duplicates += duplicates
            EVENTS_PUBLISHED.inc(published)
            EVENTS_DEDUPLICATED.inc(duplicates)

    async def _queue_script(self, pipe, partition: int, batch: list[tuple[str, list, str, int | str]]) -> None:
        keys = [self._keys.events(partition), self._keys.counters(partition), self._keys.compare_stream(partition)]
        args: list = [self._settings.dedup_ttl_s, self._settings.stream_maxlen, 2 + 2 * len(ENTRY_FIELDS),
                      COMPARE_MAXLEN]
        for dedup_id, values, note, ttl_s in batch:
            keys.append(self._keys.dedup(partition, dedup_id))
            args.append(ttl_s)
            args.append(note)
            for name, value in zip(ENTRY_FIELDS, values):
                args.append(name)
                args.append(value)
        await self._scripts.publish_events(keys=keys, args=args, client=pipe)
