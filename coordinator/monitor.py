"""The leader's monitor loop: dashboard history samples, alert evaluation and fleet-wide gauges.

Every `CF_ALERT_INTERVAL_S` it samples the stream counters into the `cf:history` ring (one hour of
samples) and gathers an `Observation` for `AlertRules`. It applies the resulting changes to `Alerts`,
and sets the coordinator's gauges.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time

import msgspec
import orjson
import redis.asyncio as redis
import redis.exceptions

from common.alerts import Alerts
from common.helix import HelixClient
from common.keys import Keys
from common.models import ConduitStats, ShardState, Subscription
from common.settings import Settings
from common.token import AppTokenManager
from . import metrics
from .alert_rules import AlertRules, Observation
from .assignment import AssignmentLoop
from .conduit import ConduitManager
from .reconciler import Reconciler

log = logging.getLogger(__name__)

HISTORY_WINDOW_S = 3600
# Reading every subscription is costly at 100,000 of them, so their gauges refresh less often.
SUBSCRIPTION_GAUGES_EVERY_S = 60

_state_decoder = msgspec.json.Decoder(ShardState)
_stats_decoder = msgspec.json.Decoder(ConduitStats)
_subscription_decoder = msgspec.json.Decoder(Subscription)


def history_length(interval_s: float) -> int:
    """Return the number of samples in one hour at `interval_s`, plus one for the first rate."""
    return math.ceil(HISTORY_WINDOW_S / interval_s) + 1


async def sample_streams(events: redis.Redis, keys: Keys, partitions: int) -> dict:
    """Return one history sample: the published counters and stream lengths summed over partitions."""
    pipe = events.pipeline(transaction=False)
    for partition in range(partitions):
        pipe.hget(keys.counters(partition), "published")
        pipe.xlen(keys.events(partition))
    answers = await pipe.execute()
    published = [int(answers[i] or 0) for i in range(0, len(answers), 2)]
    lengths = [int(answers[i] or 0) for i in range(1, len(answers), 2)]
    return {"t_ms": int(time.time() * 1000), "published": sum(published), "stream_length": sum(lengths),
            "partition_lengths": lengths}


async def consumer_lag(events: redis.Redis, keys: Keys, partitions: int) -> dict[str, int]:
    """Return consumer group -> entries not yet delivered to it, summed over partitions.

    Groups whose lag Redis cannot compute (XINFO GROUPS returns nil lag, for example after XDEL or
    trimming past the group) are left out, so a trimmed stream does not raise a false alarm.
    """
    lag: dict[str, int] = collections.defaultdict(int)
    for partition in range(partitions):
        try:
            groups = await events.xinfo_groups(keys.events(partition))
        except redis.exceptions.ResponseError:
            continue  # the stream does not exist yet
        for group in groups:
            name = group["name"].decode() if isinstance(group["name"], bytes) else str(group["name"])
            if group.get("lag") is not None:
                lag[name] += int(group["lag"])
    return dict(lag)


class Monitor:
    """Runs on the leader only; see the module docstring for what one pass does."""

    def __init__(self, settings: Settings, client: redis.Redis, events: redis.Redis, alerts: Alerts,
                 helix: HelixClient, tokens: AppTokenManager, conduit: ConduitManager,
                 assignment: AssignmentLoop, reconciler: Reconciler) -> None:
        self._settings = settings
        self._client = client
        self._events = events
        self._alerts = alerts
        self._helix = helix
        self._tokens = tokens
        self._conduit = conduit
        self._assignment = assignment
        self._reconciler = reconciler
        self._keys = Keys(settings.key_prefix)
        self.rules: AlertRules | None = None
        self._lost_seen = 0
        # legacy connection name -> since when (ms) it has had channels but no subscribed session
        self._legacy_down: dict[str, int] = {}
        self._first_seen_down_ms: dict[str, int] = {}
        self._subscription_gauges_at_s: float | None = None
        self._shard_statuses: collections.Counter[str] = collections.Counter()
        # Right after an election on a fresh conduit no shard is bound yet, so the shard rules wait until
        # the workers had time to connect and bind.
        self._shard_alerts_after_s = time.monotonic() + 2 * settings.scaled(settings.bind_deadline_s) \
            + 2 * settings.scaled(settings.worker_heartbeat_s)

    async def run(self) -> None:
        interval_s = self._settings.alert_interval_s
        while True:
            try:
                await self.run_once()
            except (redis.exceptions.RedisError, OSError) as exc:
                log.warning("monitor pass failed: %s", exc)
            await asyncio.sleep(interval_s)

    async def run_once(self) -> None:
        if self.rules is None:
            await self._alerts.load()
            self.rules = AlertRules(self._settings, active=set(self._alerts.active))
        sample = await sample_streams(self._events, self._keys, self._settings.stream_partitions)
        await self._store_sample(sample)
        observation = await self.observe()
        for change in self.rules.evaluate(observation):
            if change.action == "fire":
                await self._alerts.fire(change.name, change.severity, change.message, change.value, change.message_ja)
            else:
                await self._alerts.resolve(change.name, change.message, change.message_ja)
        self._set_gauges(sample, observation)
        await self._maybe_set_subscription_gauges()

    async def _store_sample(self, sample: dict) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.lpush(self._keys.history, orjson.dumps(sample))
        pipe.ltrim(self._keys.history, 0, history_length(self._settings.alert_interval_s) - 1)
        await pipe.execute()

    async def observe(self) -> Observation:
        """Gather what the alert rules need from Redis and the leader's components."""
        now_ms = int(time.time() * 1000)
        observation = Observation(now_ms=now_ms)
        raw_stats = await self._client.get(self._keys.stats)
        shard_alerts = time.monotonic() >= self._shard_alerts_after_s
        if raw_stats:
            stats = _stats_decoder.decode(raw_stats)
            observation.usage_percentage = stats.usage_percentage
            if shard_alerts:
                observation.total_shards = stats.total_shards
                observation.disabled_shards = stats.disabled_shards
        records = {k.decode(): _state_decoder.decode(v) for k, v in (await self._client.hgetall(self._keys.shards)).items()}
        down_since_ms = self._down_since(records, now_ms)
        observation.shards_down_since_ms = down_since_ms if shard_alerts else {}
        self._shard_statuses = collections.Counter(
            records[str(i)].status if str(i) in records else "unbound" for i in range(self._conduit.shard_count))
        observation.workers_with_bound_shards = {state.worker for state in records.values() if state.worker}
        observation.helix_consecutive_failures = self._helix.consecutive_failures
        observation.token_error = self._tokens.last_error
        lost = self._assignment.lost_workers
        observation.lost_workers, self._lost_seen = list(lost[self._lost_seen:]), len(lost)
        observation.consumer_lag = await consumer_lag(self._events, self._keys, self._settings.stream_partitions)
        observation.legacy_down_since_ms = await self._legacy_down_since(now_ms) if shard_alerts else {}
        return observation

    async def _legacy_down_since(self, now_ms: int) -> dict[str, int]:
        """Track legacy slots that have channels placed but no session with its subscriptions."""
        load = await self._client.hgetall(self._keys.legacy_load)
        statuses = await self._client.hgetall(self._keys.legacy_connections)
        tracked = self._legacy_down
        current: dict[str, int] = {}
        for slot, count in load.items():
            if int(count) <= 0:
                continue
            raw = statuses.get(slot)
            state = orjson.loads(raw).get("state") if raw else ""
            name = f"legacy-{slot.decode()}"
            if state != "bound":
                current[name] = tracked.get(name, now_ms)
        self._legacy_down = current
        return current

    def _down_since(self, records: dict[str, ShardState], now_ms: int) -> dict[str, int]:
        """Return shard id -> since when it is not enabled; shards without a record count from first sight."""
        down: dict[str, int] = {}
        for index in range(self._conduit.shard_count):
            shard = str(index)
            state = records.get(shard)
            if state is not None and state.status == "enabled":
                self._first_seen_down_ms.pop(shard, None)
                continue
            first_seen_ms = self._first_seen_down_ms.setdefault(shard, now_ms)
            down[shard] = state.changed_at_ms if state is not None and state.changed_at_ms else first_seen_ms
        return down

    def _set_gauges(self, sample: dict, observation: Observation) -> None:
        for partition, length in enumerate(sample["partition_lengths"]):
            metrics.STREAM_LENGTH.labels(str(partition)).set(length)
        metrics.set_labelled(metrics.CONSUMER_LAG, observation.consumer_lag or {})
        if observation.usage_percentage is not None:
            metrics.USAGE.set(observation.usage_percentage / 100)
        metrics.set_labelled(metrics.SHARDS, dict(self._shard_statuses))
        metrics.RATELIMIT_REMAINING.set(self._helix.ratelimit.remaining)
        metrics.RATELIMIT_LIMIT.set(self._helix.ratelimit.limit)
        metrics.HELIX_CONSECUTIVE_FAILURES.set(self._helix.consecutive_failures)
        severities = collections.Counter(alert["severity"] for alert in self._alerts.active.values())
        metrics.set_labelled(metrics.ALERTS_ACTIVE, {"warning": 0, "critical": 0, **severities})

    async def _maybe_set_subscription_gauges(self) -> None:
        obtained = await self._client.hget(self._keys.token, "obtained_at_s")
        if obtained:
            metrics.TOKEN_AGE.set(max(0.0, time.time() - float(obtained)))
        last_s = self._subscription_gauges_at_s
        if last_s is not None and time.monotonic() - last_s < SUBSCRIPTION_GAUGES_EVERY_S:
            return
        self._subscription_gauges_at_s = time.monotonic()
        counts: collections.Counter[str] = collections.Counter()
        async for _, raw in self._client.hscan_iter(self._keys.subscriptions, count=1000):
            counts[_subscription_decoder.decode(raw).status] += 1
        metrics.set_labelled(metrics.SUBSCRIPTIONS, dict(counts))
