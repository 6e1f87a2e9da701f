"""In-memory model of conduits, shards, subscriptions, tokens and counters."""

from __future__ import annotations

import collections
import dataclasses
import logging
import random
import secrets
import time
import uuid
import zlib
from typing import TYPE_CHECKING, Any

from .clock import rfc3339_now
from .ratelimit import TokenBucket
from .settings import EmulatorSettings

if TYPE_CHECKING:
    from .sessions import Session

logger = logging.getLogger(__name__)

ENABLED = "enabled"
DISCONNECTED = "websocket_disconnected"
FAILED_TO_RECONNECT = "websocket_failed_to_reconnect"
WEBHOOK_PENDING = "webhook_callback_verification_pending"
CONDUIT_DELETED = "conduit_deleted"


@dataclasses.dataclass(eq=False, slots=True)
class Token:
    """An issued OAuth token; ``user_id`` None marks an app token."""

    value: str
    client_id: str
    expires_at: float
    user_id: str | None = None
    scopes: tuple[str, ...] = ()

    @property
    def is_app(self) -> bool:
        return self.user_id is None


@dataclasses.dataclass(eq=False, slots=True)
class Shard:
    """One conduit shard; a shard never bound has no session and is disconnected."""

    id: str
    conduit_id: str
    status: str = DISCONNECTED
    method: str = "websocket"
    session_id: str | None = None
    connected_at: str | None = None
    disconnected_at: str | None = None
    callback: str | None = None

    def to_wire(self) -> dict[str, Any]:
        transport: dict[str, Any] = {"method": self.method}
        if self.method == "webhook":
            transport["callback"] = self.callback
        elif self.session_id is not None:
            transport["session_id"] = self.session_id
            transport["connected_at"] = self.connected_at
            if self.disconnected_at is not None:
                transport["disconnected_at"] = self.disconnected_at
        return {"id": self.id, "status": self.status, "transport": transport}


@dataclasses.dataclass(eq=False, slots=True)
class Conduit:
    id: str
    client_id: str
    shards: list[Shard]

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "shard_count": len(self.shards)}


@dataclasses.dataclass(eq=False, slots=True)
class Subscription:
    """An EventSub subscription; ``route_hash`` is crc32 of the routing key, computed once."""

    id: str
    seq: int
    client_id: str
    type: str
    version: str
    condition: dict[str, str]
    transport: dict[str, Any]
    created_at: str
    cost: int
    route_hash: int
    status: str = ENABLED

    @property
    def conduit_id(self) -> str | None:
        return self.transport.get("conduit_id")

    def conflict_key(self) -> tuple[Any, ...]:
        return (self.client_id, self.type, self.version, tuple(sorted(self.condition.items())))

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "type": self.type,
            "version": self.version,
            "condition": self.condition,
            "created_at": self.created_at,
            "transport": self.transport,
            "cost": self.cost,
        }


class Counters:
    """Delivery and traffic counters served by ``GET /_emulator/counters``."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sent = 0
        self.delivered = 0
        self.duplicates_injected = 0
        self.retried_other_shard = 0
        self.dropped_disabled = 0
        self.overlap_resent = 0
        self.revocations_sent = 0
        self.per_shard_delivered: collections.Counter[str] = collections.Counter()
        self.per_shard_dropped: collections.Counter[str] = collections.Counter()
        self.helix_calls: collections.Counter[str] = collections.Counter()
        self.closed_codes: collections.Counter[int] = collections.Counter()
        self.sessions_opened = 0

    def to_wire(self, sessions_open: int) -> dict[str, Any]:
        shard_ids = set(self.per_shard_delivered) | set(self.per_shard_dropped)
        per_shard = {
            shard_id: {
                "delivered": self.per_shard_delivered[shard_id],
                "dropped": self.per_shard_dropped[shard_id],
            }
            for shard_id in sorted(shard_ids, key=_shard_sort_key)
        }
        body: dict[str, Any] = {
            "sent": self.sent,
            "delivered": self.delivered,
            "duplicates_injected": self.duplicates_injected,
            "retried_other_shard": self.retried_other_shard,
            "dropped_disabled": self.dropped_disabled,
            "overlap_resent": self.overlap_resent,
            "revocations_sent": self.revocations_sent,
            "per_shard": per_shard,
            "helix_calls": dict(self.helix_calls),
            "sessions_open": sessions_open,
            "sessions_opened": self.sessions_opened,
        }
        for code, count in sorted(self.closed_codes.items()):
            body[f"closed_{code}"] = count
        for code in (4001, 4002, 4003, 4004, 4007):
            body.setdefault(f"closed_{code}", 0)
        return body


def _shard_sort_key(shard_id: str) -> tuple[int, str]:
    return (int(shard_id), "") if shard_id.isdigit() else (1 << 62, shard_id)


class SentLog:
    """The most recent notification frames by message_id, so tests can compare bytes end to end."""

    def __init__(self, capacity: int = 50_000) -> None:
        self.capacity = capacity
        self._frames: collections.OrderedDict[str, bytes] = collections.OrderedDict()

    def record(self, message_id: str, data: bytes) -> None:
        self._frames[message_id] = data
        if len(self._frames) > self.capacity:
            self._frames.popitem(last=False)

    def get(self, message_id: str) -> bytes | None:
        return self._frames.get(message_id)


class EmulatorState:
    """Everything one emulator instance stores; plain data, no I/O."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.counters = Counters()
        self.tokens: dict[str, Token] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self.conduits: dict[str, Conduit] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self.conflicts: dict[tuple[Any, ...], str] = {}
        self.authorized_user_ids: set[str] = set()
        self.sessions: dict[str, Session] = {}
        self.shards_by_session: dict[str, set[Shard]] = collections.defaultdict(set)
        self.sent_log = SentLog()
        self._next_seq = 0

    # Tokens

    def issue_token(self, client_id: str, user_id: str | None = None, scopes: tuple[str, ...] = ()) -> Token:
        lifetime = self.settings.real_s(self.settings.token_expires_in_s)
        token = Token(secrets.token_hex(15), client_id, time.monotonic() + lifetime, user_id, scopes)
        self.tokens[token.value] = token
        return token

    def find_token(self, value: str) -> Token | None:
        token = self.tokens.get(value)
        if token is None:
            return None
        if time.monotonic() >= token.expires_at:
            del self.tokens[value]
            return None
        return token

    def remaining_twitch_s(self, token: Token) -> int:
        return max(0, int((token.expires_at - time.monotonic()) / self.settings.time_scale))

    def invalidate_app_tokens(self) -> int:
        app_values = [value for value, token in self.tokens.items() if token.is_app]
        for value in app_values:
            del self.tokens[value]
        logger.info("invalidated %d app tokens", len(app_values))
        return len(app_values)

    def bucket(self, client_id: str) -> TokenBucket:
        bucket = self.buckets.get(client_id)
        if bucket is None:
            per_min = self.settings.rate_limit_per_min
            bucket = TokenBucket(per_min, per_min / self.settings.real_s(60.0))
            self.buckets[client_id] = bucket
        return bucket

    # Conduits and shards

    def conduits_of(self, client_id: str) -> list[Conduit]:
        return [conduit for conduit in self.conduits.values() if conduit.client_id == client_id]

    def create_conduit(self, client_id: str, shard_count: int) -> Conduit:
        conduit_id = str(uuid.uuid4())
        shards = [Shard(str(index), conduit_id) for index in range(shard_count)]
        conduit = Conduit(conduit_id, client_id, shards)
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

    def delete_conduit(self, conduit: Conduit) -> None:
        for shard in conduit.shards:
            self._unlink_shard(shard)
        del self.conduits[conduit.id]
        affected = 0
        for subscription in self.subscriptions.values():
            if subscription.conduit_id == conduit.id and subscription.status == ENABLED:
                self.set_subscription_status(subscription, CONDUIT_DELETED)
                affected += 1
        logger.info("conduit %s deleted, %d subscriptions now %s", conduit.id, affected, CONDUIT_DELETED)

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
        return sorted((shard.id for shard in shards), key=_shard_sort_key)

    # Subscriptions

    def add_subscription(
        self, client_id: str, sub_type: str, version: str, condition: dict[str, str],
        transport: dict[str, Any], cost: int, route_key: str,
    ) -> Subscription:
        self._next_seq += 1
        subscription = Subscription(
            id=str(uuid.uuid4()), seq=self._next_seq, client_id=client_id, type=sub_type,
            version=version, condition=condition, transport=transport, created_at=rfc3339_now(),
            cost=cost, route_hash=zlib.crc32(route_key.encode()),
        )
        self.subscriptions[subscription.id] = subscription
        self.conflicts[subscription.conflict_key()] = subscription.id
        return subscription

    def find_conflict(self, client_id: str, sub_type: str, version: str, condition: dict[str, str]) -> Subscription | None:
        key = (client_id, sub_type, version, tuple(sorted(condition.items())))
        subscription_id = self.conflicts.get(key)
        return self.subscriptions.get(subscription_id) if subscription_id else None

    def set_subscription_status(self, subscription: Subscription, status: str) -> None:
        subscription.status = status
        if status != ENABLED:
            self.conflicts.pop(subscription.conflict_key(), None)

    def delete_subscription(self, subscription: Subscription) -> None:
        del self.subscriptions[subscription.id]
        key = subscription.conflict_key()
        if self.conflicts.get(key) == subscription.id:
            del self.conflicts[key]

    def total_cost(self, client_id: str) -> tuple[int, int]:
        """Return (count, cost) of the client's enabled subscriptions."""
        count = 0
        cost = 0
        for subscription in self.subscriptions.values():
            if subscription.client_id == client_id and subscription.status == ENABLED:
                count += 1
                cost += subscription.cost
        return count, cost

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
        }
