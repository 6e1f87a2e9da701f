"""The comparison of the two transports during the parallel run (leader only).

For a channel in `both`, every copy of an event leaves an entry in the comparison stream of its
partition (`cf:compare:{p}`): the event identity, the transport, the latency from `message_timestamp`
to receipt, and whether this copy was the one published. The leader reads the streams, groups copies
by identity, and once an event is older than CF_MIGRATION_COMPARE_GRACE_S counts it: seen on each
transport, or missed on the transport that never delivered it. Totals go to `cf:compare`.

Counting happens when an event is settled, so a new leader continues from the stored stream
positions. The events still unsettled at the failover (one grace window) are not counted.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field

import redis.asyncio as redis

from common.keys import Keys
from common.migration import TRANSPORTS, summarize  # noqa: F401 - summarize is part of this module's API
from common.settings import Settings

log = logging.getLogger(__name__)

READ_COUNT = 5000
LATENCY_SAMPLES = 2000


@dataclass
class _Copies:
    first_ms: int
    transports: set[str] = field(default_factory=set)
    latency: dict[str, int] = field(default_factory=dict)


def _empty_totals() -> dict[str, float]:
    totals: dict[str, float] = {"compared": 0}
    for transport in TRANSPORTS:
        for name in ("seen", "missed", "latency_sum_ms", "latency_count"):
            totals[f"{name}:{transport}"] = 0
    return totals


class Comparison:
    """Settles the parallel run's events and keeps the per-transport totals."""

    def __init__(self, settings: Settings, control: redis.Redis, events: redis.Redis) -> None:
        self._settings = settings
        self._control = control
        self._events = events
        self._keys = Keys(settings.key_prefix)
        self._pending: dict[str, _Copies] = {}
        self._cursors: dict[int, str] | None = None
        self.totals = _empty_totals()
        self._samples = {transport: collections.deque(maxlen=LATENCY_SAMPLES) for transport in TRANSPORTS}

    async def _load(self) -> None:
        stored = {k.decode(): v.decode() for k, v in (await self._control.hgetall(self._keys.compare)).items()}
        self._cursors = {p: stored.get(f"cursor:{p}", "0-0") for p in range(self._settings.stream_partitions)}
        for name in self.totals:
            if name in stored:
                self.totals[name] = float(stored[name])

    async def poll(self, now_ms: int | None = None) -> int:
        """Read new comparison entries, settle the old enough ones, store the totals; return how many settled."""
        if self._cursors is None:
            await self._load()
        streams = {self._keys.compare_stream(p): cursor for p, cursor in self._cursors.items()}
        while True:
            answer = await self._events.xread(streams, count=READ_COUNT)
            read = 0
            for stream, entries in answer or []:
                partition = int(stream.decode().rsplit("{", 1)[1].rstrip("}"))
                for entry_id, fields in entries:
                    self._add(entry_id.decode(), fields)
                    read += 1
                    self._cursors[partition] = entry_id.decode()
                streams[self._keys.compare_stream(partition)] = self._cursors[partition]
            if read < READ_COUNT:
                break
        settled = self._settle(now_ms if now_ms is not None else int(time.time() * 1000))
        mapping = {name: value for name, value in self.totals.items()}
        mapping.update({f"cursor:{p}": cursor for p, cursor in self._cursors.items()})
        for transport in TRANSPORTS:
            mapping[f"p95_ms:{transport}"] = self.p95(transport)
        mapping["pending"] = len(self._pending)
        mapping["updated_at_ms"] = int(time.time() * 1000)
        await self._control.hset(self._keys.compare, mapping=mapping)
        return settled

    def _add(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        identity = fields.get(b"i", b"").decode()
        transport = fields.get(b"t", b"").decode()
        if not identity or transport not in TRANSPORTS:
            return
        copies = self._pending.get(identity)
        if copies is None:
            copies = self._pending[identity] = _Copies(first_ms=int(entry_id.split("-", 1)[0]))
        copies.transports.add(transport)
        latency = int(fields.get(b"l", b"-1") or -1)
        if latency >= 0 and transport not in copies.latency:
            copies.latency[transport] = latency

    def _settle(self, now_ms: int) -> int:
        cutoff = now_ms - int(self._settings.scaled(self._settings.migration_compare_grace_s) * 1000)
        settled = [identity for identity, copies in self._pending.items() if copies.first_ms <= cutoff]
        totals = self.totals
        for identity in settled:
            copies = self._pending.pop(identity)
            totals["compared"] += 1
            for transport in TRANSPORTS:
                if transport in copies.transports:
                    totals[f"seen:{transport}"] += 1
                else:
                    totals[f"missed:{transport}"] += 1
                latency = copies.latency.get(transport)
                if latency is not None:
                    totals[f"latency_sum_ms:{transport}"] += latency
                    totals[f"latency_count:{transport}"] += 1
                    self._samples[transport].append(latency)
        return len(settled)

    def p95(self, transport: str) -> float:
        samples = sorted(self._samples[transport])
        return float(samples[min(len(samples) - 1, int(len(samples) * 0.95))]) if samples else 0.0

    def snapshot(self) -> dict[str, float]:
        return dict(self.totals)
