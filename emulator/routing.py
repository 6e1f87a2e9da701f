"""Notification routing: channel hash to shard, one retry on another shard, else drop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from . import frames
from .clock import rfc3339_now
from .sessions import Session, SessionManager
from .state import ENABLED, Conduit, EmulatorState, Shard, Subscription

logger = logging.getLogger(__name__)

SHARD_DISABLED_TYPE = "conduit.shard.disabled"


class Router:
    """Choose the session for a conduit subscription's notification and count the outcome."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.counters = state.counters
        self.manager: SessionManager | None = None

    def enabled_session(self, shard: Shard) -> Session | None:
        if shard.status != ENABLED or shard.session_id is None:
            return None
        return self.state.sessions.get(shard.session_id)

    def pick(self, subscription: Subscription, count_drop: bool = True) -> tuple[Session, Shard | None] | None:
        """Return the target (session, shard), or None after counting a drop.

        A WebSocket-transport subscription goes to its own session, with no shard.
        For a conduit subscription, Twitch hashes the channel id to a shard, retries a disabled shard's notification
        once on one other shard, and drops it if that shard is disabled too
        (Handling conduit events page). The hash here is crc32 of the routing key.
        """
        if subscription.session_id is not None:
            return self._pick_websocket(subscription.session_id, count_drop)
        conduit = self.state.conduits.get(subscription.conduit_id or "")
        if conduit is None or not conduit.shards:
            if count_drop:
                self.counters.dropped_disabled += 1
            return None
        shards = conduit.shards
        index = subscription.route_hash % len(shards)
        first = shards[index]
        session = self.enabled_session(first)
        if session is not None:
            return session, first
        if len(shards) > 1:
            other_index = self.state.rng.randrange(len(shards) - 1)
            if other_index >= index:
                other_index += 1
            other = shards[other_index]
            session = self.enabled_session(other)
            if session is not None:
                self.counters.retried_other_shard += 1
                return session, other
        if count_drop:
            self.counters.dropped_disabled += 1
            self.counters.per_shard_dropped[first.id] += 1
        return None

    def _pick_websocket(self, session_id: str, count_drop: bool) -> tuple[Session, None] | None:
        session = self.state.sessions.get(session_id)
        if session is not None and session.state != "closed":
            return session, None
        if count_drop:
            self.counters.dropped_disabled += 1
        return None

    async def deliver(self, session: Session, shard: Shard | None, data: bytes) -> bool:
        """Send a notification frame now, or later when WebSocket latency is set (then return True)."""
        delay_ms = self.state.websocket_latency_ms
        if delay_ms > 0 and self.manager is not None:
            self.manager.spawn(self._deliver_later(session, shard, data, delay_ms / 1000), name=f"session {session.id} delayed frame")
            return True
        return await self._send(session, shard, data)

    async def deliver_or_retry(self, subscription: Subscription, session: Session, shard: Shard | None,
                               data: bytes) -> bool:
        """Send a notification; if the socket turns out dead, retry once on one other shard, else drop it.

        Twitch learns that a socket is gone when writing to it fails, and then treats the shard as
        disabled (Handling conduit events), so the same single retry applies.
        """
        if await self.deliver(session, shard, data):
            return True
        if shard is not None and subscription.conduit_id is not None:
            conduit = self.state.conduits.get(subscription.conduit_id)
            others = [s for s in (conduit.shards if conduit else []) if s is not shard]
            if others:
                other = others[self.state.rng.randrange(len(others))]
                other_session = self.enabled_session(other)
                if other_session is not None and await self.deliver(other_session, other, data):
                    self.counters.retried_other_shard += 1
                    return True
            self.counters.per_shard_dropped[shard.id] += 1
        self.counters.dropped_disabled += 1
        return False

    async def _deliver_later(self, session: Session, shard: Shard | None, data: bytes, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self._send(session, shard, data)

    async def _send(self, session: Session, shard: Shard | None, data: bytes) -> bool:
        sent = await session.send_tracked(data)
        self.state.delivery_log.record(data, session.id, sent)
        if sent:
            self.counters.delivered += 1
            session.counters["notifications"] += 1
            if shard is not None:
                self.counters.per_shard_delivered[shard.id] += 1
        return sent

    def drops_by_fault(self, subscription: Subscription) -> bool:
        """Decide whether the delivery-drop fault loses one notification for ``subscription``, and count the loss.

        ``conduit.shard.disabled`` notifications are exempt, and revocations never pass here.
        """
        transport = "websocket" if subscription.session_id is not None else "conduit"
        ratio = self.state.delivery_drop_ratios[transport]
        if ratio <= 0.0 or subscription.type == SHARD_DISABLED_TYPE:
            return False
        if self.state.delivery_drop_rng.random() >= ratio:
            return False
        self.counters.dropped_fault += 1
        self.counters.dropped_fault_by_transport[transport] += 1
        return True

    async def notify(self, subscription: Subscription, event: dict[str, Any]) -> bool:
        """Send one notification for ``subscription``; return False when it was dropped."""
        self.counters.sent += 1
        target = self.pick(subscription)
        if target is None:
            return False
        data = frames.notification(subscription, event, self.state.sent_log, timestamp=self.state.timestamp())
        if self.drops_by_fault(subscription):
            return False
        return await self.deliver_or_retry(subscription, target[0], target[1], data)

    async def revoke(self, subscription: Subscription) -> bool:
        """Send a revocation frame for ``subscription`` whose status was already changed."""
        if subscription.conduit_id is None and subscription.session_id is None:
            return False
        target = self.pick(subscription, count_drop=False)
        if target is None:
            return False
        sent = await target[0].send_tracked(frames.revocation(subscription, timestamp=self.state.timestamp()))
        if sent:
            self.counters.revocations_sent += 1
        return sent

    def on_shards_disabled(self, shards: list[Shard]) -> None:
        """Schedule conduit.shard.disabled notifications for shards that just lost their socket."""
        if self.manager is None:
            return
        for shard in shards:
            conduit = self.state.conduits.get(shard.conduit_id)
            if conduit is None:
                continue
            subscriptions = self._shard_disabled_subscriptions(conduit)
            if subscriptions:
                self.manager.spawn(
                    self._notify_shard_disabled(subscriptions, shard),
                    name=f"conduit {conduit.id} shard {shard.id} disabled",
                )

    def _shard_disabled_subscriptions(self, conduit: Conduit) -> list[Subscription]:
        return [
            subscription
            for subscription in self.state.subscriptions.values()
            if subscription.type == SHARD_DISABLED_TYPE
            and subscription.status == ENABLED
            and subscription.condition.get("client_id") == conduit.client_id
            and subscription.condition.get("conduit_id", conduit.id) == conduit.id
        ]

    async def _notify_shard_disabled(self, subscriptions: list[Subscription], shard: Shard) -> None:
        transport = {
            "method": "websocket",
            "session_id": shard.session_id,
            "connected_at": shard.connected_at,
            "disconnected_at": shard.disconnected_at or rfc3339_now(),
        }
        event = {
            "conduit_id": shard.conduit_id,
            "shard_id": shard.id,
            "status": shard.status,
            "transport": transport,
        }
        for subscription in subscriptions:
            await self.notify(subscription, event)
