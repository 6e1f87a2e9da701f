"""Plain records of what Twitch stores: tokens, conduits, shards and subscriptions."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

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
    refresh_token: str | None = None

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
    """A conduit. ``idle_since`` is the monotonic time since which no shard has been enabled."""

    id: str
    client_id: str
    shards: list[Shard]
    idle_since: float | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "shard_count": len(self.shards)}


@dataclasses.dataclass(eq=False, slots=True)
class Subscription:
    """An EventSub subscription; ``route_hash`` is crc32 of the routing key, computed once.

    ``user_id`` is the owner of a user-token (WebSocket transport) subscription, None for
    app-token ones. ``disabled_at`` is the monotonic time a WebSocket subscription lost its
    session. ``source_key`` encodes type, version and the sorted condition: subscriptions
    with equal keys receive the same real events, whatever their owner or transport. It is a
    string because Python caches a string's hash, which keeps grouping 100,000 subscriptions fast.
    """

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
    user_id: str | None = None
    disabled_at: float | None = None
    source_key: str = dataclasses.field(init=False, default="")

    def __post_init__(self) -> None:
        self.source_key = orjson.dumps([self.type, self.version, sorted(self.condition.items())]).decode()

    @property
    def conduit_id(self) -> str | None:
        return self.transport.get("conduit_id")

    @property
    def session_id(self) -> str | None:
        """Return the session of a WebSocket-transport subscription, None for other transports."""
        if self.transport.get("method") != "websocket":
            return None
        return self.transport.get("session_id")

    def conflict_key(self) -> tuple[Any, ...]:
        return conflict_key(self.client_id, self.user_id, self.type, self.version, self.condition, self.session_id)

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


def conflict_key(
    client_id: str, user_id: str | None, sub_type: str, version: str, condition: dict[str, str], session_id: str | None,
) -> tuple[Any, ...]:
    """Return the key under which an identical subscription answers 409.

    App-token subscriptions (conduit transport) conflict on type, version and condition
    whatever the conduit. A WebSocket subscription conflicts only on its own session.
    """
    return (client_id, user_id, sub_type, version, tuple(sorted(condition.items())), session_id)
