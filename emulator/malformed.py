"""Frames that break the EventSub message contract, for testing how clients cope with them."""

from __future__ import annotations

import random
import uuid
from typing import Any

import orjson
from aiohttp import WSMsgType

from . import frames, payloads
from .clock import rfc3339_now
from .models import ENABLED, Subscription
from .sessions import Session
from .state import EmulatorState

KINDS = ("invalid_json", "binary", "unknown_message_type", "unknown_subscription_type", "null_array", "huge")
# The chat text appears twice in the event (message.text and its one text fragment), so
# this gives a frame of a little over 1 MB.
HUGE_TEXT_BYTES = 510_000


def build(kind: str, session: Session, state: EmulatorState, rng: random.Random) -> tuple[bytes, WSMsgType]:
    """Return the frame bytes and the frame type for ``kind`` (one of ``KINDS``)."""
    if kind == "invalid_json":
        return b'{"metadata":{"message_id":"' + str(uuid.uuid4()).encode() + b'","message_type":"notifi', WSMsgType.TEXT
    if kind == "binary":
        return frames.keepalive(timestamp=state.timestamp()), WSMsgType.BINARY
    if kind == "unknown_message_type":
        metadata = {"message_id": str(uuid.uuid4()), "message_type": "session_unknown", "message_timestamp": state.timestamp()}
        return orjson.dumps({"metadata": metadata, "payload": {}}), WSMsgType.TEXT
    chat = chat_subscription(session, state)
    if kind == "unknown_subscription_type":
        unknown = _synthetic(session, state, "emulator.unknown_type", {"broadcaster_user_id": "0"})
        return frames.notification(unknown, {"note": "a type this client does not know"}, timestamp=state.timestamp()), WSMsgType.TEXT
    if kind == "null_array":
        event = payloads.build_event(chat, rng)
        event["badges"] = None
        event["message"]["fragments"] = None
        return frames.notification(chat, event, timestamp=state.timestamp()), WSMsgType.TEXT
    if kind == "huge":
        event = payloads.build_event(chat, rng, {"chat_text_bytes": HUGE_TEXT_BYTES})
        return frames.notification(chat, event, timestamp=state.timestamp()), WSMsgType.TEXT
    raise ValueError(f"unknown malformed frame kind {kind!r}: expected one of {', '.join(KINDS)}")


def chat_subscription(session: Session, state: EmulatorState) -> Subscription:
    """Return an enabled channel.chat.message subscription that reaches ``session``, or a made-up one."""
    conduit_ids = {shard.conduit_id for shard in state.shards_by_session.get(session.id, ())}
    for subscription in state.subscriptions.values():
        if subscription.type != "channel.chat.message" or subscription.status != ENABLED:
            continue
        if subscription.session_id == session.id or subscription.conduit_id in conduit_ids:
            return subscription
    return _synthetic(session, state, "channel.chat.message", {"broadcaster_user_id": "1001", "user_id": "1002"})


def _synthetic(session: Session, state: EmulatorState, sub_type: str, condition: dict[str, str]) -> Subscription:
    conduit_ids = sorted({shard.conduit_id for shard in state.shards_by_session.get(session.id, ())})
    transport: dict[str, Any]
    if conduit_ids:
        transport = {"method": "conduit", "conduit_id": conduit_ids[0]}
    else:
        transport = {"method": "websocket", "session_id": session.id, "connected_at": session.connected_at}
    return Subscription(
        id=str(uuid.uuid4()), seq=0, client_id=state.settings.client_id, type=sub_type, version="1",
        condition=condition, transport=transport, created_at=rfc3339_now(), cost=0, route_hash=0,
    )
