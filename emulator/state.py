"""In-memory model of conduits, shards, subscriptions, tokens and counters."""

from __future__ import annotations

import bisect
import collections
import logging
import random
import time
import uuid
import zlib
from typing import TYPE_CHECKING, Any

from .clock import MessageClock, rfc3339_now
from .models import (
    CONDUIT_DELETED, DISCONNECTED, ENABLED, FAILED_TO_RECONNECT, WEBHOOK_PENDING, Conduit, Shard, Subscription, Token,
)
from .records import DELIVERY_TRANSPORTS, Counters, DeliveryLog, HelixLog, SentLog, shard_sort_key
from .ratelimit import TokenBucket
from .settings import EmulatorSettings
from .tokens import TokenStore

if TYPE_CHECKING:
    from .sessions import Session

logger = logging.getLogger(__name__)



class EmulatorState:
    """Everything one emulator instance stores; plain data, no I/O."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.counters = Counters()
        self.token_store = TokenStore(settings)
        self.tokens = self.token_store.tokens
        self.buckets: dict[tuple[str, str | None], TokenBucket] = {}
        self.conduits: dict[str, Conduit] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.conflicts: dict[tuple[Any, ...], str] = {}
        self.authorized_user_ids: set[str] = set()
        self.deauthorized_user_ids: set[str] = set()
        self.clock = MessageClock(settings.timestamp_digits)
        self.helix_log = HelixLog(settings.helix_log_size)
        self.helix_latency_ms = 0
        self.websocket_latency_ms = 0
        # Share of notifications that the delivery-drop fault loses, by transport. The
        # decisions come from their own generator, so they never shift the routing retries or
        # a generator run's choices. With a settings seed the decisions repeat.
        self.delivery_drop_ratios: dict[str, float] = dict.fromkeys(DELIVERY_TRANSPORTS, 0.0)
        self.delivery_drop_rng = random.Random(None if settings.seed is None else f"delivery-drop:{settings.seed}")
        self.sessions: dict[str, Session] = {}
        self.shards_by_session: dict[str, set[Shard]] = collections.defaultdict(set)
        self.subscriptions_by_session: dict[str, set[str]] = collections.defaultdict(set)
        self.sent_log = SentLog()
        self.delivery_log = DeliveryLog()
        self._next_seq = 0
        # Indexes that keep Create and Get Subscriptions O(1) and O(page) at 100,000 subscriptions:
        # enabled count and cost per owner, enabled count per owner, type and condition, and the
        # creation order (seq) for cursors.
        self._enabled_count: collections.Counter[tuple[Any, ...]] = collections.Counter()
        self._enabled_cost: collections.Counter[tuple[Any, ...]] = collections.Counter()
        self._same_condition: collections.Counter[tuple[Any, ...]] = collections.Counter()
        self._seq_order: list[int] = []
        self._id_by_seq: dict[int, str] = {}
        # Changes whenever a subscription is added, deleted or changes status, so readers
        # such as the load generator rebuild what they derive from the list only then.
        self.subscriptions_version = 0

    # Tokens

    def issue_token(self, client_id: str, user_id: str | None = None, scopes: tuple[str, ...] = ()) -> Token:
        return self.token_store.issue(client_id, user_id, scopes)

    def find_token(self, value: str) -> Token | None:
        return self.token_store.find(value)

    def remaining_twitch_s(self, token: Token) -> int:
        return self.token_store.remaining_twitch_s(token)

    def invalidate_app_tokens(self) -> int:
        return self.token_store.invalidate_app_tokens()

    def timestamp(self) -> str:
        """Return a ``message_timestamp`` with the digits that ``timestamp_digits`` sets."""
        return self.clock.now()

    def bucket(self, client_id: str, user_id: str | None = None) -> TokenBucket:
        """Return the rate-limit bucket of the client's app tokens, or of one user's tokens for it.

        Twitch keeps one bucket per client ID for app-token requests and one per client ID and
        user for user-token requests (API guide, "Twitch rate limits").
        """
        key = (client_id, user_id)
        bucket = self.buckets.get(key)
        if bucket is None:
            per_min = self.settings.rate_limit_per_min
            bucket = TokenBucket(per_min, per_min / self.settings.real_s(60.0))
            self.buckets[key] = bucket
        return bucket

    # Conduits and shards

    def conduits_of(self, client_id: str) -> list[Conduit]:
        return [conduit for conduit in self.conduits.values() if conduit.client_id == client_id]

    def create_conduit(self, client_id: str, shard_count: int) -> Conduit:
        conduit_id = str(uuid.uuid4())
        shards = [Shard(str(index), conduit_id) for index in range(shard_count)]
        conduit = Conduit(conduit_id, client_id, shards, idle_since=time.monotonic())
        self.conduits[conduit_id] = conduit
        logger.info("conduit %s created with %d shards", conduit_id, shard_count)
        return conduit

    def resize_conduit(self, conduit: Conduit, shard_count: int) -> None:
        old_count = len(conduit.shards)
        for shard in conduit.shards[shard_count:]:
            self._unlink_shard(shard)
        del conduit.shards[shard_count:]
        conduit.shards.extend(Shard(str(index), conduit.id) for index in range(old_count, shard_count))
        logger.info("conduit %s resized from %d to %d shards", conduit.id, old_count, shard_count)

    def delete_conduit(self, conduit: Conduit, reason: str = "deleted") -> None:
        for shard in conduit.shards:
            self._unlink_shard(shard)
        del self.conduits[conduit.id]
        affected = 0
        for subscription in self.subscriptions.values():
            if subscription.conduit_id == conduit.id and subscription.status == ENABLED:
                self.set_subscription_status(subscription, CONDUIT_DELETED)
                affected += 1
        logger.info("conduit %s %s, %d subscriptions now %s", conduit.id, reason, affected, CONDUIT_DELETED)

    def bind_websocket_shard(self, shard: Shard, session: Session) -> None:
        self._unlink_shard(shard)
        shard.method = "websocket"
        shard.callback = None
        shard.session_id = session.id
        shard.connected_at = session.connected_at
        shard.disconnected_at = None
        shard.status = ENABLED
        self.shards_by_session[session.id].add(shard)
        session.ever_bound = True

    def bind_webhook_shard(self, shard: Shard, callback: str) -> None:
        self._unlink_shard(shard)
        shard.method = "webhook"
        shard.callback = callback
        shard.session_id = None
        shard.connected_at = None
        shard.disconnected_at = None
        shard.status = WEBHOOK_PENDING

    def disable_session_shards(self, session_id: str, status: str) -> list[Shard]:
        """Mark every shard still pointing at ``session_id`` with ``status``."""
        shards = self.shards_by_session.pop(session_id, set())
        disabled = []
        now = rfc3339_now()
        for shard in shards:
            if shard.session_id != session_id or shard.status != ENABLED:
                continue
            shard.status = status
            shard.disconnected_at = now
            disabled.append(shard)
        return disabled

    def _unlink_shard(self, shard: Shard) -> None:
        if shard.session_id is None:
            return
        linked = self.shards_by_session.get(shard.session_id)
        if linked is not None:
            linked.discard(shard)
            if not linked:
                del self.shards_by_session[shard.session_id]

    def shard_ids_of_session(self, session_id: str) -> list[str]:
        shards = self.shards_by_session.get(session_id, ())
        return sorted((shard.id for shard in shards), key=shard_sort_key)

    # Subscriptions

    def add_subscription(
        self, client_id: str, sub_type: str, version: str, condition: dict[str, str],
        transport: dict[str, Any], cost: int, route_key: str, user_id: str | None = None,
    ) -> Subscription:
        self._next_seq += 1
        subscription = Subscription(
            id=str(uuid.uuid4()), seq=self._next_seq, client_id=client_id, type=sub_type,
            version=version, condition=condition, transport=transport, created_at=rfc3339_now(),
            cost=cost, route_hash=zlib.crc32(route_key.encode()), user_id=user_id,
        )
        self.subscriptions[subscription.id] = subscription
        self.conflicts[subscription.conflict_key()] = subscription.id
        self._seq_order.append(subscription.seq)
        self._id_by_seq[subscription.seq] = subscription.id
        self._track_enabled(subscription, 1)
        self.subscriptions_version += 1
        if subscription.session_id is not None:
            self.subscriptions_by_session[subscription.session_id].add(subscription.id)
        return subscription

    def find_conflict(self, key: tuple[Any, ...]) -> Subscription | None:
        subscription_id = self.conflicts.get(key)
        return self.subscriptions.get(subscription_id) if subscription_id else None

    def set_subscription_status(self, subscription: Subscription, status: str) -> None:
        if subscription.status == ENABLED and status != ENABLED:
            self._track_enabled(subscription, -1)
        elif subscription.status != ENABLED and status == ENABLED:
            self._track_enabled(subscription, 1)
        if subscription.status != status:
            self.subscriptions_version += 1
        subscription.status = status
        if status != ENABLED:
            self.conflicts.pop(subscription.conflict_key(), None)
            subscription.disabled_at = time.monotonic()

    def delete_subscription(self, subscription: Subscription) -> None:
        del self.subscriptions[subscription.id]
        del self._id_by_seq[subscription.seq]
        self.subscriptions_version += 1
        if subscription.status == ENABLED:
            self._track_enabled(subscription, -1)
        key = subscription.conflict_key()
        if self.conflicts.get(key) == subscription.id:
            del self.conflicts[key]
        if subscription.session_id is not None:
            linked = self.subscriptions_by_session.get(subscription.session_id)
            if linked is not None:
                linked.discard(subscription.id)
                if not linked:
                    del self.subscriptions_by_session[subscription.session_id]

    def owned_by(self, subscription: Subscription, client_id: str, user_id: str | None) -> bool:
        """Return whether the token of ``client_id`` and ``user_id`` sees ``subscription``.

        App tokens see webhook and conduit subscriptions; a user token sees the WebSocket
        subscriptions that its user created (Get EventSub Subscriptions reference).
        """
        return subscription.client_id == client_id and subscription.user_id == user_id

    def total_cost(self, client_id: str, user_id: str | None = None) -> tuple[int, int]:
        """Return (count, cost) of the enabled subscriptions of the client (and user, for user tokens)."""
        owner = (client_id, user_id)
        return self._enabled_count[owner], self._enabled_cost[owner]

    def same_condition_count(self, client_id: str, user_id: str | None, sub_type: str,
                             condition: dict[str, str]) -> int:
        """Return how many enabled subscriptions of the owner have this type and condition, any version."""
        return self._same_condition[(client_id, user_id, sub_type, tuple(sorted(condition.items())))]

    def subscriptions_after(self, after_seq: int):
        """Yield the subscriptions created after ``after_seq``, oldest first."""
        if len(self._seq_order) > 1000 and len(self._id_by_seq) < len(self._seq_order) // 2:
            self._seq_order = [seq for seq in self._seq_order if seq in self._id_by_seq]
        for index in range(bisect.bisect_right(self._seq_order, after_seq), len(self._seq_order)):
            subscription_id = self._id_by_seq.get(self._seq_order[index])
            if subscription_id is not None:
                yield self.subscriptions[subscription_id]

    def _track_enabled(self, subscription: Subscription, sign: int) -> None:
        owner = (subscription.client_id, subscription.user_id)
        self._enabled_count[owner] += sign
        self._enabled_cost[owner] += sign * subscription.cost
        same = (*owner, subscription.type, tuple(sorted(subscription.condition.items())))
        self._same_condition[same] += sign

    def session_subscriptions(self, session_id: str, enabled_only: bool = True) -> list[Subscription]:
        subscriptions = (self.subscriptions.get(sid) for sid in self.subscriptions_by_session.get(session_id, ()))
        return [s for s in subscriptions if s is not None and (not enabled_only or s.status == ENABLED)]

    def disable_session_subscriptions(self, session_id: str, status: str) -> int:
        """Give every enabled WebSocket subscription of ``session_id`` the session's end status."""
        affected = self.session_subscriptions(session_id)
        for subscription in affected:
            self.set_subscription_status(subscription, status)
        return len(affected)

    def enabled_subscriptions(self, types: set[str] | frozenset[str] | None = None) -> list[Subscription]:
        """Return enabled conduit and WebSocket subscriptions, the ones notifications can reach."""
        return [
            subscription
            for subscription in self.subscriptions.values()
            if subscription.status == ENABLED
            and (subscription.conduit_id is not None or subscription.session_id is not None)
            and (types is None or subscription.type in types)
        ]

    def enabled_conduit_subscriptions(self, types: set[str] | None = None) -> list[Subscription]:
        return [
            subscription
            for subscription in self.subscriptions.values()
            if subscription.status == ENABLED
            and subscription.conduit_id is not None
            and (types is None or subscription.type in types)
        ]

    def dump(self) -> dict[str, Any]:
        status_counts: collections.Counter[str] = collections.Counter(
            subscription.status for subscription in self.subscriptions.values()
        )
        return {
            "conduits": [
                {**conduit.to_wire(), "client_id": conduit.client_id,
                 "shards": [shard.to_wire() for shard in conduit.shards]}
                for conduit in self.conduits.values()
            ],
            "subscriptions": {"total": len(self.subscriptions), "by_status": dict(status_counts)},
            "sessions": sorted(self.sessions),
            "authorized_user_ids": sorted(self.authorized_user_ids),
            "deauthorized_user_ids": sorted(self.deauthorized_user_ids),
        }
