"""Observation records: delivery counters and the log of sent notification frames."""

from __future__ import annotations

import collections
from typing import Any

# Transports a delivery-drop fault can target: "conduit" for conduit subscriptions and
# "websocket" for plain WebSocket subscriptions.
DELIVERY_TRANSPORTS = ("conduit", "websocket")


class Counters:
    """Delivery and traffic counters served by ``GET /_emulator/counters``."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sent = 0
        self.fanout_copies = 0
        self.delivered = 0
        self.duplicates_injected = 0
        self.retried_other_shard = 0
        self.dropped_disabled = 0
        self.dropped_fault = 0
        self.dropped_fault_by_transport: collections.Counter[str] = collections.Counter()
        self.overlap_resent = 0
        self.revocations_sent = 0
        self.rate_limited = 0
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
            for shard_id in sorted(shard_ids, key=shard_sort_key)
        }
        body: dict[str, Any] = {
            "sent": self.sent,
            "fanout_copies": self.fanout_copies,
            "delivered": self.delivered,
            "duplicates_injected": self.duplicates_injected,
            "retried_other_shard": self.retried_other_shard,
            "dropped_disabled": self.dropped_disabled,
            "dropped_fault": self.dropped_fault,
            "dropped_fault_by_transport": {
                transport: self.dropped_fault_by_transport[transport] for transport in DELIVERY_TRANSPORTS
            },
            "overlap_resent": self.overlap_resent,
            "revocations_sent": self.revocations_sent,
            "rate_limited": self.rate_limited,
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


def shard_sort_key(shard_id: str) -> tuple[int, str]:
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


class HelixLog:
    """The newest Helix calls with their results, oldest first. Entries name the token kind, never the token."""

    def __init__(self, capacity: int) -> None:
        self._entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=capacity or None)
        self.enabled = capacity > 0
        self._next_seq = 0

    def record(self, entry: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._next_seq += 1
        self._entries.append({"seq": self._next_seq, **entry})

    def newest(self, limit: int) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        return list(self._entries)[-limit:]


class DeliveryLog:
    """Which session each recent notification was written to, so tests can tell where a lost event went."""

    _PREFIX = b'{"metadata":{"message_id":"'

    def __init__(self, capacity: int = 500_000) -> None:
        self.capacity = capacity
        self.sequence = 0
        # message_id → (sequence number of its first delivery, sessions written to; "failed:" marks a failed write)
        self._entries: collections.OrderedDict[str, tuple[int, list[str]]] = collections.OrderedDict()

    def record(self, data: bytes, session_id: str, written: bool) -> None:
        if not data.startswith(self._PREFIX):
            return
        end = data.index(b'"', len(self._PREFIX))
        message_id = data[len(self._PREFIX):end].decode()
        entry = self._entries.get(message_id)
        if entry is None:
            self.sequence += 1
            entry = self._entries[message_id] = (self.sequence, [])
            if len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        entry[1].append(session_id if written else f"failed:{session_id}")

    def lookup(self, message_ids: list[str]) -> dict[str, list[str]]:
        return {message_id: self._entries[message_id][1] if message_id in self._entries else []
                for message_id in message_ids}

    def since(self, sequence: int) -> dict[str, list[str]]:
        """Return every message first delivered after `sequence`, with its sessions."""
        found: dict[str, list[str]] = {}
        for message_id in reversed(self._entries):
            first, sessions = self._entries[message_id]
            if first <= sequence:
                break
            found[message_id] = sessions
        return found
