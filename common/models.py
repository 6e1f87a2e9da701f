"""Twitch wire types (msgspec Structs) and the fleet's own records.

Field names follow Twitch's JSON exactly. Unknown fields are ignored, so additions on Twitch's side do
not break decoding; unknown status strings are kept as plain strings and read as "not enabled".
"""

from __future__ import annotations

import msgspec

# Shard statuses from the Helix API reference (Get Conduit Shards). Only "enabled" receives events.
SHARD_STATUSES = frozenset({
    "enabled",
    "webhook_callback_verification_pending",
    "webhook_callback_verification_failed",
    "notification_failures_exceeded",
    "websocket_disconnected",
    "websocket_failed_ping_pong",
    "websocket_received_inbound_traffic",
    "websocket_internal_error",
    "websocket_network_timeout",
    "websocket_network_error",
    "websocket_failed_to_reconnect",
})

# Subscription statuses that only a human can clear; the reconciler does not re-create these.
NEEDS_HUMAN_STATUSES = frozenset({
    "authorization_revoked", "user_removed", "moderator_removed", "chat_user_banned", "version_removed",
})


class Conduit(msgspec.Struct):
    id: str
    shard_count: int


class ShardTransport(msgspec.Struct, omit_defaults=True):
    method: str
    session_id: str | None = None
    callback: str | None = None
    secret: str | None = None
    connected_at: str | None = None
    disconnected_at: str | None = None


class Shard(msgspec.Struct):
    id: str
    status: str = "websocket_disconnected"
    transport: ShardTransport | None = None


class ShardUpdate(msgspec.Struct):
    id: str
    transport: ShardTransport


class UpdateShardsRequest(msgspec.Struct):
    conduit_id: str
    shards: list[ShardUpdate]


class ShardError(msgspec.Struct):
    id: str
    message: str = ""
    code: str = ""


class UpdateShardsResponse(msgspec.Struct):
    data: list[Shard] = []
    errors: list[ShardError] = []


class SubscriptionTransport(msgspec.Struct, omit_defaults=True):
    method: str
    conduit_id: str | None = None
    session_id: str | None = None
    callback: str | None = None
    connected_at: str | None = None
    disconnected_at: str | None = None


class Subscription(msgspec.Struct, omit_defaults=True):
    id: str
    type: str
    version: str
    condition: dict[str, str]
    status: str = "enabled"
    transport: SubscriptionTransport | None = None
    created_at: str = ""
    cost: int = 0


class SubscriptionPage(msgspec.Struct):
    data: list[Subscription] = []
    total: int = 0
    total_cost: int = 0
    max_total_cost: int = 0


class Session(msgspec.Struct):
    id: str
    status: str = ""
    connected_at: str | None = None
    keepalive_timeout_seconds: int | None = None
    reconnect_url: str | None = None


class Metadata(msgspec.Struct):
    message_id: str
    message_type: str
    message_timestamp: str
    subscription_type: str | None = None
    subscription_version: str | None = None


class SessionPayload(msgspec.Struct):
    session: Session


class NotificationPayload(msgspec.Struct):
    subscription: Subscription
    # The raw bytes of the event, exactly as Twitch sent them; published byte-for-byte.
    event: msgspec.Raw = msgspec.Raw(b"null")


class RevocationPayload(msgspec.Struct):
    subscription: Subscription


class Envelope(msgspec.Struct):
    """Any EventSub WebSocket frame; the payload is decoded once the message type is known."""

    metadata: Metadata
    payload: msgspec.Raw


class ConduitStats(msgspec.Struct):
    """The conduit's state at a glance, as in the operators' migration plan."""

    conduit_id: str
    total_shards: int
    enabled_shards: int
    disabled_shards: int
    total_subscriptions: int
    usage_percentage: float
    total_cost: int = 0
    max_total_cost: int = 0
    updated_at_ms: int = 0


class ShardState(msgspec.Struct, omit_defaults=True):
    """The fleet's record of one shard in Redis (`cf:shards`)."""

    worker: str = ""
    session_id: str = ""
    status: str = "unbound"
    epoch: int = 0
    bound_at_ms: int = 0
    changed_at_ms: int = 0
    error: str = ""


class BindResult(msgspec.Struct, omit_defaults=True):
    """The leader's answer to one bind job."""

    shard_id: str
    session_id: str
    ok: bool
    error: str = ""
    conduit_lost: bool = False


class Channel(msgspec.Struct, omit_defaults=True):
    """A desired channel: its broadcaster id, optional names, and event types (empty = the defaults)."""

    broadcaster_user_id: str
    login: str = ""
    display_name: str = ""
    types: list[str] = []
    transport_mode: str = "conduit"
    # True while the channel is on the legacy connections because the Conduits API was down.
    fallback: bool = False


def is_enabled(status: str) -> bool:
    """Return whether a shard or subscription status receives events; unknown statuses do not."""
    return status == "enabled"
