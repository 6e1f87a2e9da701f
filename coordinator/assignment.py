"""Shard assignment: balanced by count, sticky, spread at most one.

A shard moves only when its worker is gone or holds more than its share. Workers whose heartbeat
deadline passed are removed from `cf:workers` and their shards given to live ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import redis.asyncio as redis
import redis.exceptions

from common.keys import Keys
from common.settings import Settings
from .fence import Fence

log = logging.getLogger(__name__)


def plan_assignment(shard_ids: list[str], current: dict[str, str], workers: list[str]) -> dict[str, str]:
    """Return shard id → worker for live `workers`, keeping as many current pairs as the balance allows."""
    if not workers:
        return {}
    workers = sorted(workers)
    held: dict[str, list[str]] = {worker: [] for worker in workers}
    free: list[str] = []
    for shard in shard_ids:
        owner = current.get(shard)
        (held[owner] if owner in held else free).append(shard)

    # Workers that already hold the most keep the larger shares, which minimises movement.
    base, extra = divmod(len(shard_ids), len(workers))
    order = sorted(workers, key=lambda worker: (-len(held[worker]), worker))
    quota = {worker: base + (1 if rank < extra else 0) for rank, worker in enumerate(order)}

    for worker in workers:
        kept = sorted(held[worker], key=int)
        free.extend(kept[quota[worker]:])
        held[worker] = kept[:quota[worker]]
    queue = deque(sorted(free, key=int))
    for worker in order:
        while len(held[worker]) < quota[worker]:
            held[worker].append(queue.popleft())
    return {shard: worker for worker, shards in held.items() for shard in shards}


class AssignmentLoop:
    """Keeps `cf:assignment` in line with the live workers and the conduit's shard count."""

    def __init__(self, settings: Settings, client: redis.Redis, fence: Fence, shard_count: int) -> None:
        self._settings = settings
        self._client = client
        self._keys = Keys(settings.key_prefix)
        self._fence = fence
        self.shard_count = shard_count
        self.changed = asyncio.Event()
        self.lost_workers: list[str] = []

    async def run(self) -> None:
        interval_s = self._settings.scaled(self._settings.worker_heartbeat_s) / 2
        while True:
            try:
                await self.assign_once()
            except (redis.exceptions.RedisError, OSError) as exc:
                log.warning("assignment pass failed: %s", exc)
            try:
                await asyncio.wait_for(self.changed.wait(), interval_s)
            except asyncio.TimeoutError:
                pass
            self.changed.clear()

    async def live_workers(self) -> list[str]:
        now_ms = int(time.time() * 1000)
        expired = await self._client.zrangebyscore(self._keys.workers, "-inf", now_ms)
        if expired:
            await self._client.zremrangebyscore(self._keys.workers, "-inf", now_ms)
            for worker in expired:
                log.warning("worker %s lost: no heartbeat within its lease", worker.decode(),
                            extra={"worker_id": worker.decode()})
                self.lost_workers.append(worker.decode())
        return [worker.decode() for worker in await self._client.zrange(self._keys.workers, 0, -1)]

    async def assign_once(self) -> dict[str, str]:
        workers = await self.live_workers()
        raw = await self._client.hgetall(self._keys.assignment)
        current = {shard.decode(): worker.decode() for shard, worker in raw.items()}
        shard_ids = [str(i) for i in range(self.shard_count)]
        target = plan_assignment(shard_ids, current, workers)
        changed = {shard: worker for shard, worker in target.items() if current.get(shard) != worker}
        removed = [shard for shard in current if shard not in target]
        if changed or removed:
            await self._fence.hash_update(self._keys.assignment, changed, removed, channel=self._keys.assignment_channel)
            log.info("assignment: %d shards moved, %d unassigned, %d workers", len(changed), len(removed), len(workers))
        return target
