"""Encoders for EventSub WebSocket frames; each returns the UTF-8 JSON bytes to send.

``timestamp`` is the ``message_timestamp`` to use. None takes the current time with
3, 6 and 9 fractional digits in rotation.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from .clock import rfc3339_now
from .state import SentLog, Subscription


def _metadata(message_type: str, timestamp: str | None) -> dict[str, Any]:
    return {
        "message_id": str(uuid.uuid4()),
        "message_type": message_type,
        "message_timestamp": timestamp or rfc3339_now(),
    }


def welcome(session_id: str, connected_at: str, keepalive_s: int, *, timestamp: str | None = None) -> bytes:
    session = {
        "id": session_id,
        "status": "connected",
        "connected_at": connected_at,
        "keepalive_timeout_seconds": keepalive_s,
        "reconnect_url": None,
    }
    return orjson.dumps({"metadata": _metadata("session_welcome", timestamp), "payload": {"session": session}})


def keepalive(*, timestamp: str | None = None) -> bytes:
    return orjson.dumps({"metadata": _metadata("session_keepalive", timestamp), "payload": {}})


def reconnect(session_id: str, connected_at: str, reconnect_url: str, *, timestamp: str | None = None) -> bytes:
    session = {
        "id": session_id,
        "status": "reconnecting",
        "keepalive_timeout_seconds": None,
        "reconnect_url": reconnect_url,
        "connected_at": connected_at,
    }
    return orjson.dumps({"metadata": _metadata("session_reconnect", timestamp), "payload": {"session": session}})


def notification(
    subscription: Subscription, event: dict[str, Any], sent_log: SentLog | None = None, *, timestamp: str | None = None,
) -> bytes:
    metadata = _metadata("notification", timestamp)
    metadata["subscription_type"] = subscription.type
    metadata["subscription_version"] = subscription.version
    payload = {"subscription": subscription.to_wire(), "event": event}
    data = orjson.dumps({"metadata": metadata, "payload": payload})
    if sent_log is not None:
        sent_log.record(metadata["message_id"], data)
    return data


def revocation(subscription: Subscription, *, timestamp: str | None = None) -> bytes:
    metadata = _metadata("revocation", timestamp)
    metadata["subscription_type"] = subscription.type
    metadata["subscription_version"] = subscription.version
    return orjson.dumps({"metadata": metadata, "payload": {"subscription": subscription.to_wire()}})
