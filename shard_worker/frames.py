"""Decoding of EventSub WebSocket frames and the per-event publish path.

This is the hot path: one decode of the envelope, one of the payload, a string comparison for the
replay guard, and an append to the publisher's buffer. Per-event detail is logged only at DEBUG.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING

import msgspec

from common.identity import event_identity, is_content_hash, timestamp_ms
from common.keys import partition_of
from common.models import Envelope, NotificationPayload, RevocationPayload, SessionPayload
from . import metrics

if TYPE_CHECKING:
    from .session import Connection, ShardSession

log = logging.getLogger(__name__)

_envelope = msgspec.json.Decoder(Envelope)
_notification = msgspec.json.Decoder(NotificationPayload)
_revocation = msgspec.json.Decoder(RevocationPayload)
_session = msgspec.json.Decoder(SessionPayload)

BROADCASTER_KEYS = ("broadcaster_user_id", "to_broadcaster_user_id", "broadcaster_id", "user_id")


class ReplayGuard:
    """Rejects messages older than the replay window (EventSub guide: reject timestamps older than 10 minutes).

    Twitch's timestamps are UTC with a `Z`, so their first 19 characters compare as strings; the cutoff
    string is rebuilt at most once a second. Other offsets fall back to a full parse.
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._cutoff = ""
        self._cutoff_at_s = 0.0

    def is_stale(self, timestamp: str, now_s: float) -> bool:
        if now_s - self._cutoff_at_s >= 1.0 or now_s < self._cutoff_at_s:
            self._cutoff = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now_s - self.window_s))
            self._cutoff_at_s = now_s
        if timestamp.endswith("Z") and len(timestamp) >= 20:
            return timestamp[:19] < self._cutoff
        try:
            return datetime.fromisoformat(timestamp).timestamp() < now_s - self.window_s
        except ValueError:
            return True


def broadcaster_of(condition: dict[str, str]) -> str:
    for key in BROADCASTER_KEYS:
        value = condition.get(key)
        if value:
            return value
    return ""


class FrameHandler:
    """Turns the frames of one shard's sockets into stream entries and session events."""

    def __init__(self, shard: ShardSession) -> None:
        self.shard = shard
        ctx = shard.ctx
        self._publisher = ctx.publisher
        self._partitions = ctx.settings.stream_partitions
        self._guard = ctx.replay_guard
        self._hash_window_s = ctx.settings.identity_hash_window_s
        self._unknown_types: set[str] = set()

    def handle(self, conn: Connection, data: bytes) -> None:
        try:
            envelope = _envelope.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._reject("malformed", f"undecodable frame ({exc}): {data[:200]!r}")
            return
        kind = envelope.metadata.message_type
        if kind == "notification":
            self._publish(conn, envelope, "notification")
        elif kind == "session_keepalive":
            return
        elif kind == "session_welcome":
            session = self._decode_session(envelope)
            if session is not None:
                conn.on_welcome(session.id, session.keepalive_timeout_seconds)
        elif kind == "session_reconnect":
            session = self._decode_session(envelope)
            if session is not None and session.reconnect_url:
                self.shard.follow_reconnect(conn, session.reconnect_url)
        elif kind == "revocation":
            self._publish(conn, envelope, "revocation")
        else:
            metrics.EVENTS_REJECTED.labels("unknown_type").inc()
            if kind not in self._unknown_types:
                self._unknown_types.add(kind)
                log.warning("ignoring unknown message_type %r (logged once per type)", kind,
                            extra={"shard_id": self.shard.shard_id, "session_id": conn.session_id})

    def _decode_session(self, envelope: Envelope):
        try:
            return _session.decode(envelope.payload).session
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._reject("malformed", f"invalid session payload ({exc})")
            return None

    def _publish(self, conn: Connection, envelope: Envelope, kind: str) -> None:
        metadata = envelope.metadata
        now_s = time.time()
        if self._guard.is_stale(metadata.message_timestamp, now_s):
            self._reject("stale", f"message {metadata.message_id} older than the replay window: {metadata.message_timestamp}")
            return
        try:
            if kind == "notification":
                payload = _notification.decode(envelope.payload)
                event = bytes(payload.event)
            else:
                payload = _revocation.decode(envelope.payload)
                event = msgspec.json.encode(payload.subscription)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._reject("malformed", f"invalid {kind} payload in message {metadata.message_id}: {exc}")
            return
        subscription = payload.subscription
        broadcaster = broadcaster_of(subscription.condition)
        transport = "conduit" if (subscription.transport is None or subscription.transport.method == "conduit") else "websocket"
        metrics.EVENTS_RECEIVED.inc()
        now_ms = int(now_s * 1000)
        dedup_id, note, ttl_s = metadata.message_id, "", None
        until = self.shard.ctx.identity.get(broadcaster) if kind == "notification" else None
        if until is not None and (until <= 0 or until > now_ms):
            # Two transports deliver this channel's events with different message ids: dedup on the
            # event itself. In the parallel run (0) also note the copy for the comparison.
            identity = event_identity(subscription.type, subscription.version, event, broadcaster)
            dedup_id = "e:" + identity
            if is_content_hash(identity):
                # The two copies of one event arrive within moments of each other. A longer claim
                # would merge two equal events of the channel, such as two stream.offline.
                ttl_s = self._hash_window_s
            if until == 0:
                sent_ms = timestamp_ms(metadata.message_timestamp)
                note = f"{transport}|{max(0, now_ms - sent_ms) if sent_ms is not None else -1}|{identity}"
        self._publisher.submit(
            partition_of(broadcaster, self._partitions),
            dedup_id,
            [
                metadata.message_id, kind, subscription.type, subscription.version, metadata.message_timestamp,
                now_ms, transport, self.shard.shard_id, subscription.id, broadcaster, event,
            ],
            note,
            ttl_s,
        )
        if subscription.type == "conduit.shard.disabled":
            self.shard.ctx.forward_shard_disabled(event)
        if kind == "revocation":
            log.warning("subscription %s (%s) revoked: %s", subscription.id, subscription.type, subscription.status,
                        extra={"shard_id": self.shard.shard_id, "session_id": conn.session_id})

    def _reject(self, reason: str, detail: str) -> None:
        metrics.EVENTS_REJECTED.labels(reason).inc()
        self.shard.ctx.rejected += 1
        if self.shard.ctx.rejected <= 20 or self.shard.ctx.rejected % 1000 == 0:
            log.warning("rejected frame (%s): %s", reason, detail, extra={"shard_id": self.shard.shard_id})
