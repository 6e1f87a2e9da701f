"""Shard assignment: balanced by count, sticky, spread at most one.

A shard moves only when its worker is gone, draining, or has more than its share. Workers whose
heartbeat deadline passed are removed from `cf:workers` and their shards given to live ones at once;
shards of live workers are handed over one at a time per worker (see `_stage_moves`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import redis.asyncio as redis
import redis.exceptions

import msgspec

from common.keys import Keys
from common.models import ShardState
from common.settings import Settings
from .fence import Fence

log = logging.getLogger(__name__)

_state_decoder = msgspec.json.Decoder(ShardState)


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
        # shard id → (source worker, destination worker, start time) of make-before-break handoffs
        self.in_transit: dict[str, tuple[str, str, float]] = {}
        self._observing_since_s = time.monotonic()

    async def run(self) -> None:
        interval_s = self._settings.scaled(self._settings.worker_heartbeat_s) / 2
        while True:
            try:
                await self.assign_once()
            except (redis.exceptions.RedisError, OSError) as exc:
                self._observing_since_s = time.monotonic()
                log.warning("assignment pass failed: %s", exc)
            try:
                await asyncio.wait_for(self.changed.wait(), interval_s)
            except asyncio.TimeoutError:
                pass
            self.changed.clear()

    async def live_workers(self) -> list[str]:
        now_ms = int(time.time() * 1000)
        # After a new election or a Redis outage, give workers two heartbeats to show up before
        # calling them lost: their deadlines may have passed only because Redis was unreachable.
        grace_s = 2 * self._settings.scaled(self._settings.worker_heartbeat_s)
        expired = []
        if time.monotonic() - self._observing_since_s >= grace_s:
            expired = await self._client.zrangebyscore(self._keys.workers, "-inf", now_ms)
        if expired:
            await self._client.zremrangebyscore(self._keys.workers, "-inf", now_ms)
            for worker in expired:
                log.warning("worker %s lost: no heartbeat within its lease", worker.decode(),
                            extra={"worker_id": worker.decode()})
                self.lost_workers.append(worker.decode())
        return [worker.decode() for worker in await self._client.zrange(self._keys.workers, 0, -1)]

    async def draining_workers(self, workers: list[str]) -> set[str]:
        pipe = self._client.pipeline(transaction=False)
        for worker in workers:
            pipe.hget(self._keys.worker_info(worker), "draining")
        flags = await pipe.execute()
        return {worker for worker, flag in zip(workers, flags) if flag == b"1"}

    async def bound_workers(self) -> dict[str, str]:
        """Return shard id → the worker whose session the shard is bound to, from `cf:shards`."""
        raw = await self._client.hgetall(self._keys.shards)
        return {shard.decode(): _state_decoder.decode(value).worker for shard, value in raw.items()}

    async def assign_once(self) -> dict[str, str]:
        live = await self.live_workers()
        draining = await self.draining_workers(live)
        targets = [worker for worker in live if worker not in draining]
        raw = await self._client.hgetall(self._keys.assignment)
        current = {shard.decode(): worker.decode() for shard, worker in raw.items()}
        shard_ids = [str(i) for i in range(self.shard_count)]
        target = plan_assignment(shard_ids, current, targets)
        for shard in shard_ids:
            if shard not in target and current.get(shard) in draining:
                target[shard] = current[shard]  # nowhere to go: the draining worker keeps it
        bound = await self.bound_workers()
        changed = self._stage_moves(current, target, set(live), bound)
        removed = [shard for shard in current if shard not in target]
        if changed or removed:
            await self._fence.hash_update(self._keys.assignment, changed, removed, channel=self._keys.assignment_channel)
            log.info("assignment: %d shards moved, %d unassigned, %d workers (%d draining), %d in transit",
                     len(changed), len(removed), len(live), len(draining), len(self.in_transit))
        await self.assign_legacy(targets, current)
        return target

    async def assign_legacy(self, targets: list[str], shard_owners: dict[str, str]) -> dict[str, str]:
        """Give every legacy slot with placed channels to a live worker, keeping current owners.

        A slot with no channels is unassigned: Twitch closes a connection without subscriptions.
        New owners are the workers with the fewest legacy slots, then the fewest shards.
        """
        raw_load = await self._client.hgetall(self._keys.legacy_load)
        active = sorted(int(slot) for slot, count in raw_load.items()
                        if int(count) > 0 and int(slot) < self._settings.legacy_connections)
        raw = await self._client.hgetall(self._keys.legacy_assignment)
        current = {slot.decode(): worker.decode() for slot, worker in raw.items()}
        wanted: dict[str, str] = {}
        per_worker = {worker: 0 for worker in targets}
        for slot in active:
            owner = current.get(str(slot))
            if owner in per_worker:
                wanted[str(slot)] = owner
                per_worker[owner] += 1
        shard_counts = {worker: 0 for worker in targets}
        for worker in shard_owners.values():
            if worker in shard_counts:
                shard_counts[worker] += 1
        for slot in active:
            if str(slot) in wanted or not targets:
                continue
            owner = min(targets, key=lambda worker: (per_worker[worker], shard_counts[worker], worker))
            wanted[str(slot)] = owner
            per_worker[owner] += 1
        changed = {slot: worker for slot, worker in wanted.items() if current.get(slot) != worker}
        removed = [slot for slot in current if slot not in wanted]
        if changed or removed:
            await self._fence.hash_update(self._keys.legacy_assignment, changed, removed,
                                          channel=self._keys.assignment_channel)
            log.info("legacy slots assigned: %s", ", ".join(f"{slot}->{worker}" for slot, worker in sorted(wanted.items()))
                     or "none")
        return wanted

    def _stage_moves(self, current: dict[str, str], target: dict[str, str], live: set[str],
                     bound: dict[str, str]) -> dict[str, str]:
        """Return the assignment changes to write now.

        A shard whose owner is gone moves at once: there is no socket left to keep. A shard whose owner
        is alive is handed over make-before-break, and each worker has at most one shard in transit:
        the next move from a worker waits until the previous shard is bound on its new owner.
        """
        now_s = time.monotonic()
        timeout_s = self._settings.scaled(2 * self._settings.bind_deadline_s)
        for shard, (source, destination, started_s) in list(self.in_transit.items()):
            arrived = bound.get(shard) == destination
            if arrived or current.get(shard) != destination or source not in live or now_s - started_s > timeout_s:
                if not arrived and now_s - started_s > timeout_s:
                    log.warning("handoff of shard %s from %s to %s timed out", shard, source, destination,
                                extra={"shard_id": shard})
                del self.in_transit[shard]
        busy = {source for source, _, _ in self.in_transit.values()} | {d for _, d, _ in self.in_transit.values()}
        changes: dict[str, str] = {}
        for shard, worker in sorted(target.items(), key=lambda item: int(item[0])):
            owner = current.get(shard)
            if owner == worker:
                continue
            if owner not in live:
                changes[shard] = worker
                continue
            if owner in busy or worker in busy:
                continue
            changes[shard] = worker
            self.in_transit[shard] = (owner, worker, now_s)
            busy.update((owner, worker))
        return changes
