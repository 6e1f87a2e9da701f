"""Load generator: events for the enabled conduit and WebSocket subscriptions at a fixed rate.

Each event comes from an event source: the enabled subscriptions that share type, version
and condition, whatever their owner or transport. As on Twitch, every subscription of the
source gets its own notification, with the same event body and its own message id.

Each run has its own random generator. With a seed, the same subscriptions (in the same
creation order) give the same sequence of source choices, duplicate decisions and event
bodies; message ids and timestamps still differ.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import random
import time
from typing import Any

from . import frames, payloads
from .routing import Router
from .sessions import Session
from .state import EmulatorState, Shard, Subscription

logger = logging.getLogger(__name__)

# Events built between two yields to the event loop, and how often (real seconds) the
# generator checks whether the subscriptions changed. Only a change makes it read the
# enabled subscriptions again and group them into event sources.
MAX_BATCH = 2000
SUBSCRIPTION_REFRESH_S = 0.05

# Per session: (shard, frame, subscription, injected duplicate) in write order.
Outgoing = dict[Session, list[tuple[Shard | None, bytes, Subscription, bool]]]


@dataclasses.dataclass(slots=True)
class EventSources:
    """Enabled subscriptions grouped by ``source_key``: the subscriptions one real event reaches.

    ``leaders`` lists the first subscription of each group, in creation order. ``members``
    maps a leader to its whole group, leader first, only for groups of two or more, so a
    list without shared conditions costs no container per subscription.
    """

    leaders: list[Subscription]
    members: dict[Subscription, tuple[Subscription, ...]]


def group_event_sources(subscriptions: list[Subscription]) -> EventSources:
    """Group subscriptions by type, version and condition, whatever their owner or transport."""
    leader_by_key: dict[str, Subscription] = {}
    shared: dict[Subscription, list[Subscription]] = {}
    for subscription in subscriptions:
        leader = leader_by_key.setdefault(subscription.source_key, subscription)
        if leader is not subscription:
            group = shared.get(leader)
            if group is None:
                shared[leader] = [leader, subscription]
            else:
                group.append(subscription)
    members = {leader: tuple(group) for leader, group in shared.items()}
    return EventSources(list(leader_by_key.values()), members)


@dataclasses.dataclass(kw_only=True)
class GeneratorConfig:
    rate: float
    count: int | None = None
    duration_s: float | None = None
    types: frozenset[str] | None = None
    duplicate_ratio: float = 0.0
    duplicate_other_shard_ratio: float = 0.5
    chat_text_bytes: int | None = None
    seed: int | None = None
    # Relative weights by subscription type and by broadcaster_user_id. A name missing
    # from a given table gets weight 0, and no table means equal weights.
    type_weights: dict[str, float] | None = None
    channel_weights: dict[str, float] | None = None


class GeneratorRun:
    """One generator run.

    ``sent`` counts events, one per event source chosen, dropped ones included.
    ``fanout_copies`` counts the notifications beyond the first that those events caused.
    """

    def __init__(self, run_id: str, config: GeneratorConfig, state: EmulatorState, router: Router, seed: int) -> None:
        self.id = run_id
        self.config = config
        self.seed = seed
        self.rng = random.Random(seed)
        self.state = state
        self.router = router
        self.sent = 0
        self.fanout_copies = 0
        self.duplicates = 0
        self.dropped_disabled = 0
        self.dropped_fault = 0
        self.done = False
        self.stop_reason: str | None = None
        self.task: asyncio.Task[None] | None = None
        self._sources = EventSources([], {})
        self._cumulative_weights: list[float] | None = None
        self._refreshed_at = 0.0
        self._subscriptions_version = -1

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "done": self.done,
            "sent": self.sent,
            "fanout_copies": self.fanout_copies,
            "duplicates": self.duplicates,
            "dropped_disabled": self.dropped_disabled,
            "dropped_fault": self.dropped_fault,
            "stop_reason": self.stop_reason,
            "seed": self.seed,
        }

    async def run(self) -> None:
        logger.info("generator %s started at %.1f events/s", self.id, self.config.rate)
        try:
            self.stop_reason = await self._loop()
        except asyncio.CancelledError:
            self.stop_reason = "stopped"
            raise
        finally:
            self.done = True
            logger.info("generator %s finished (%s): %d events sent, %d fan-out copies",
                        self.id, self.stop_reason, self.sent, self.fanout_copies)

    async def _loop(self) -> str:
        config = self.config
        started = time.monotonic()
        while True:
            elapsed = time.monotonic() - started
            if config.duration_s is not None and elapsed >= config.duration_s:
                return "duration reached"
            if config.count is not None and self.sent >= config.count:
                return "count reached"
            due = int(elapsed * config.rate) + 1 - self.sent
            if config.count is not None:
                due = min(due, config.count - self.sent)
            if due <= 0:
                await asyncio.sleep(max(0.0005, self.sent / config.rate - elapsed))
                continue
            sources = self._current_sources()
            if not sources.leaders:
                return "no enabled subscriptions"
            await self._send_batch(sources, min(due, MAX_BATCH))
            await asyncio.sleep(0)

    def _current_sources(self) -> EventSources:
        """Return the event sources, grouped again only when the subscription list has changed."""
        now = time.monotonic()
        if now - self._refreshed_at < SUBSCRIPTION_REFRESH_S:
            return self._sources
        self._refreshed_at = now
        version = self.state.subscriptions_version
        if version != self._subscriptions_version:
            sources = group_event_sources(self.state.enabled_subscriptions(self.config.types))
            leaders, self._cumulative_weights = self._weighted(sources.leaders)
            self._sources = EventSources(leaders, sources.members)
            self._subscriptions_version = version
        return self._sources

    def _weighted(self, leaders: list[Subscription]) -> tuple[list[Subscription], list[float] | None]:
        """Drop sources of weight 0 and return the rest with cumulative weights (None: all equal).

        The subscriptions of one source share type and condition, so the leader gives the weight.
        """
        type_weights, channel_weights = self.config.type_weights, self.config.channel_weights
        if type_weights is None and channel_weights is None:
            return leaders, None
        kept: list[Subscription] = []
        cumulative: list[float] = []
        total = 0.0
        for leader in leaders:
            weight = 1.0
            if type_weights is not None:
                weight *= type_weights.get(leader.type, 0.0)
            if channel_weights is not None:
                weight *= channel_weights.get(leader.condition.get("broadcaster_user_id", ""), 0.0)
            if weight > 0:
                total += weight
                kept.append(leader)
                cumulative.append(total)
        return kept, cumulative

    def _choose(self, leaders: list[Subscription]) -> Subscription:
        if self._cumulative_weights is None:
            return self.rng.choice(leaders)
        return self.rng.choices(leaders, cum_weights=self._cumulative_weights)[0]

    async def _send_batch(self, sources: EventSources, size: int) -> None:
        """Build ``size`` events and one notification per member of each event's source, then write them.

        Frames are grouped per session, so each session's frames go out in a row.
        """
        rng = self.rng
        options = {"chat_text_bytes": self.config.chat_text_bytes}
        outgoing: Outgoing = {}
        for _ in range(size):
            leader = self._choose(sources.leaders)
            self.sent += 1
            self.state.counters.sent += 1
            members = sources.members.get(leader)
            if members is None:
                members = (leader,)
            else:
                self.fanout_copies += len(members) - 1
                self.state.counters.fanout_copies += len(members) - 1
            # The body is built once, when the first member has a target, so an event that
            # no member can receive draws nothing from ``rng``.
            event: dict[str, Any] | None = None
            for subscription in members:
                target = self.router.pick(subscription)
                if target is None:
                    self.dropped_disabled += 1
                    continue
                if event is None:
                    event = payloads.build_event(subscription, rng, options)
                data = frames.notification(subscription, event, self.state.sent_log, timestamp=self.state.timestamp())
                outgoing.setdefault(target[0], []).append((target[1], data, subscription, False))
                if self.config.duplicate_ratio and rng.random() < self.config.duplicate_ratio:
                    self._add_duplicate(subscription, target, data, outgoing)
        await self._write(outgoing)

    async def _write(self, outgoing: Outgoing) -> None:
        """Write the frames. The delivery-drop fault decides each write of a frame on its own."""
        router = self.router
        fault_active = any(ratio > 0.0 for ratio in self.state.delivery_drop_ratios.values())
        for session, items in outgoing.items():
            for shard, data, subscription, duplicate in items:
                if fault_active and router.drops_by_fault(subscription):
                    self.dropped_fault += 1
                elif duplicate:
                    await router.deliver(session, shard, data)  # an injected copy: no retry, no drop count
                else:
                    await router.deliver_or_retry(subscription, session, shard, data)

    def _add_duplicate(
        self, subscription: Subscription, target: tuple[Session, Shard | None], data: bytes, outgoing: Outgoing,
    ) -> None:
        self.duplicates += 1
        self.state.counters.duplicates_injected += 1
        duplicate_target = target
        if self.rng.random() < self.config.duplicate_other_shard_ratio:
            duplicate_target = self._other_enabled_target(subscription, target[0]) or target
        outgoing.setdefault(duplicate_target[0], []).append((duplicate_target[1], data, subscription, True))

    def _other_enabled_target(self, subscription: Subscription, session: Session) -> tuple[Session, Shard | None] | None:
        conduit = self.state.conduits.get(subscription.conduit_id or "")
        if conduit is None:
            return None
        candidates = []
        for shard in conduit.shards:
            other = self.router.enabled_session(shard)
            if other is not None and other is not session:
                candidates.append((other, shard))
        return self.rng.choice(candidates) if candidates else None


class GeneratorRegistry:
    def __init__(self, state: EmulatorState, router: Router) -> None:
        self.state = state
        self.router = router
        self.runs: dict[str, GeneratorRun] = {}
        self._ids = itertools.count(1)

    def start(self, config: GeneratorConfig) -> GeneratorRun:
        number = next(self._ids)
        run = GeneratorRun(f"gen-{number}", config, self.state, self.router, self._seed_for(config, number))
        run.task = asyncio.create_task(run.run(), name=f"generator {run.id}")
        self.runs[run.id] = run
        return run

    def _seed_for(self, config: GeneratorConfig, number: int) -> int:
        """Return the request's seed, else one derived from the settings seed and the run number, else a random one."""
        if config.seed is not None:
            return config.seed
        if self.state.settings.seed is not None:
            return self.state.settings.seed * 1_000_003 + number
        return random.SystemRandom().randrange(1 << 62)

    async def stop(self, run: GeneratorRun) -> None:
        if run.task is not None and not run.task.done():
            run.task.cancel()
            await asyncio.gather(run.task, return_exceptions=True)

    async def stop_all(self) -> None:
        for run in list(self.runs.values()):
            await self.stop(run)
