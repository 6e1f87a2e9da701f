"""Background expiry: idle conduits and the disabled WebSocket subscriptions Twitch stops listing."""

from __future__ import annotations

import asyncio
import logging
import time

from .models import ENABLED
from .state import EmulatorState

logger = logging.getLogger(__name__)

# Max real seconds between two sweeps, so an expiry is late by at most this.
MAX_SWEEP_INTERVAL_S = 1.0


class Housekeeper:
    """Deletes conduits whose shards all stayed disabled and forgets old disabled WebSocket subscriptions.

    Twitch deletes a conduit once every shard has been disabled for 72 hours, and its
    subscriptions then show ``conduit_deleted`` (reported by client authors, not in the
    reference). Disabled WebSocket subscriptions stay listed for at least a minute
    (Get EventSub Subscriptions reference).
    """

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        settings = state.settings
        self.conduit_idle_real_s = settings.real_s(settings.conduit_idle_delete_s)
        self.subscription_ttl_real_s = settings.real_s(settings.disabled_subscription_ttl_s)
        shortest = min(self.conduit_idle_real_s, self.subscription_ttl_real_s)
        self.interval_s = max(0.005, min(MAX_SWEEP_INTERVAL_S, shortest / 10))
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="emulator housekeeping")
        logger.info("housekeeping started: sweep every %.3f s", self.interval_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        self._expire_conduits(now)
        self._expire_subscriptions(now)

    def _expire_conduits(self, now: float) -> None:
        for conduit in list(self.state.conduits.values()):
            if any(shard.status == ENABLED for shard in conduit.shards):
                conduit.idle_since = None
                continue
            if conduit.idle_since is None:
                conduit.idle_since = now
                continue
            if now - conduit.idle_since >= self.conduit_idle_real_s:
                self.state.delete_conduit(conduit, reason="deleted after every shard stayed disabled")

    def _expire_subscriptions(self, now: float) -> None:
        expired = [
            subscription
            for subscription in self.state.subscriptions.values()
            if subscription.session_id is not None
            and subscription.status != ENABLED
            and subscription.disabled_at is not None
            and now - subscription.disabled_at >= self.subscription_ttl_real_s
        ]
        for subscription in expired:
            self.state.delete_subscription(subscription)
        if expired:
            logger.info("%d disabled websocket subscriptions no longer listed", len(expired))
