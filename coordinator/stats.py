"""ConduitStats: the conduit's state at a glance, written to `cf:stats` every few seconds.

Usage is the highest of three ratios: cost used / max_total_cost, subscriptions / planned capacity,
and shards / 20,000 (Twitch's documented shard limit per conduit).
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec
import redis.asyncio as redis
import redis.exceptions

from common.keys import Keys
from common.models import ConduitStats, ShardState
from common.settings import Settings
from .conduit import ConduitManager
from .reconciler import Reconciler

log = logging.getLogger(__name__)

MAX_SHARDS = 20_000
_state_decoder = msgspec.json.Decoder(ShardState)
_encoder = msgspec.json.Encoder()


def usage_percentage(total_cost: int, max_total_cost: int, subscriptions: int, planned: int, shards: int) -> float:
    ratios = [subscriptions / planned if planned else 0.0, shards / MAX_SHARDS]
    if max_total_cost:
        ratios.append(total_cost / max_total_cost)
    return round(100 * max(ratios), 2)


class StatsPublisher:
    """Computes ConduitStats from Redis and the last reconciliation and stores them."""

    def __init__(self, settings: Settings, client: redis.Redis, conduit: ConduitManager, reconciler: Reconciler) -> None:
        self._settings = settings
        self._client = client
        self._conduit = conduit
        self._reconciler = reconciler
        self._keys = Keys(settings.key_prefix)

    async def run(self) -> None:
        while True:
            try:
                await self.publish_once()
            except (redis.exceptions.RedisError, OSError) as exc:
                log.warning("publishing stats failed: %s", exc)
            await asyncio.sleep(self._settings.scaled(self._settings.stats_interval_s))

    async def compute(self) -> ConduitStats:
        states = [_state_decoder.decode(raw) for raw in (await self._client.hgetall(self._keys.shards)).values()]
        total = self._conduit.shard_count
        enabled = sum(1 for state in states if state.status == "enabled")
        report = self._reconciler.last_report
        subscriptions = await self._client.hlen(self._keys.subscriptions)
        return ConduitStats(
            conduit_id=self._conduit.conduit_id,
            total_shards=total,
            enabled_shards=enabled,
            disabled_shards=total - enabled,
            total_subscriptions=subscriptions,
            usage_percentage=usage_percentage(report.total_cost, report.max_total_cost, subscriptions,
                                              self._settings.planned_capacity, total),
            total_cost=report.total_cost,
            max_total_cost=report.max_total_cost,
            updated_at_ms=int(time.time() * 1000),
        )

    async def publish_once(self) -> ConduitStats:
        stats = await self.compute()
        await self._client.set(self._keys.stats, _encoder.encode(stats))
        return stats
