"""The desired state: channels and their event types in `cf:channels`, and the state of entries the
reconciler could not create in `cf:subscription-states`.

Writes are idempotent (adding a channel twice stores it once) and announce themselves on a pub/sub
channel, so the leader's reconciler runs soon after an edit. Nothing here removes a channel except
`ChannelStore.remove`: a failed or revoked subscription only gets a state with its reason.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterable
from pathlib import Path

import msgspec
import orjson
import redis.asyncio as redis

from .keys import Keys
from .legacy import LegacySlots
from .models import Channel
from .settings import Settings, parse_event_types
from .subscriptions import subscription_count

TRANSPORT_MODES = ("websocket", "both", "conduit")
ADD_CHUNK = 1000
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Channel)


class ChannelError(ValueError):
    """Raised for an invalid channel entry; the message names the value and the line."""


def make_channel(broadcaster_user_id: str, *, login: str = "", display_name: str = "",
                 types: Iterable[str] = (), transport_mode: str = "conduit") -> Channel:
    """Validate and build a Channel."""
    broadcaster_user_id = str(broadcaster_user_id).strip()
    if not broadcaster_user_id.isdigit():
        raise ChannelError(f"invalid broadcaster id {broadcaster_user_id!r}: expected a numeric Twitch user id")
    if transport_mode not in TRANSPORT_MODES:
        raise ChannelError(f"invalid transport mode {transport_mode!r}: expected one of {', '.join(TRANSPORT_MODES)}")
    type_list = [f"{name}:{version}" for name, version in parse_event_types(",".join(types))] if types else []
    return Channel(broadcaster_user_id, login=login, display_name=display_name, types=type_list,
                   transport_mode=transport_mode)


def parse_file(path: Path) -> list[Channel]:
    """Read channels from CSV (header: broadcaster_user_id[,login,display_name,types]) or JSON lines."""
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".jsonl", ".json", ".ndjson") or text.lstrip().startswith("{"):
        return _parse_json_lines(text, path)
    return _parse_csv(text, path)


def _parse_json_lines(text: str, path: Path) -> list[Channel]:
    channels = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
            types = row.get("types") or []
            if isinstance(types, str):
                types = types.split(",")
            channels.append(make_channel(
                str(row["broadcaster_user_id"]), login=row.get("login", ""), display_name=row.get("display_name", ""),
                types=types, transport_mode=row.get("transport_mode", "conduit")))
        except (orjson.JSONDecodeError, KeyError, AttributeError, ValueError) as exc:
            raise ChannelError(f"{path}:{number}: invalid channel line ({exc}); expected a JSON object with broadcaster_user_id") from exc
    return channels


def _parse_csv(text: str, path: Path) -> list[Channel]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "broadcaster_user_id" not in reader.fieldnames:
        raise ChannelError(f"{path}: missing CSV header with a broadcaster_user_id column")
    channels = []
    for row in reader:
        number = reader.line_num
        try:
            types = [t for t in (row.get("types") or "").replace(";", ",").split(",") if t.strip()]
            channels.append(make_channel(
                row["broadcaster_user_id"] or "", login=row.get("login") or "", display_name=row.get("display_name") or "",
                types=types, transport_mode=row.get("transport_mode") or "conduit"))
        except ValueError as exc:
            raise ChannelError(f"{path}:{number}: {exc}") from exc
    return channels


LEGACY_MODES = frozenset({"websocket", "both"})
# Values in `cf:dedup-identity` besides an expiry time in ms.
IDENTITY_COMPARED = 0  # in the parallel run: dedup by identity and compare the two transports
IDENTITY_OPEN = -1  # fell back from the conduit: dedup by identity until it returns


class ChannelStore:
    """Reads and edits `cf:channels`, and keeps the legacy placements and identity dedup in step.

    A channel in the `websocket` or `both` mode has a place on a legacy connection (see
    `common.legacy`). Every mode change also marks the channel in `cf:dedup-identity`: open-ended
    while it is in `both` (and then its events are compared) or fell back from the conduit, else
    until CF_IDENTITY_DEDUP_GRACE_S from now, while the subscriptions of the transport it left are
    deleted. The mark is written before the
    mode, so the workers dedup the two transports' copies by event identity before the second copy
    can exist.
    """

    def __init__(self, client: redis.Redis, keys: Keys, settings: Settings | None = None) -> None:
        self._client = client
        self._keys = keys
        self._settings = settings or Settings()
        self._slots = LegacySlots(client, keys, self._settings)

    def _subscription_count(self, channel: Channel) -> int:
        return subscription_count(channel, self._settings.default_types)

    async def add(self, channels: Iterable[Channel]) -> int:
        """Store channels (a later entry for the same id wins) in one pipelined round trip; return the count.

        Raises LegacyCapacityError, and stores nothing, when the legacy channels do not fit.
        """
        latest = {channel.broadcaster_user_id: channel for channel in channels}
        if not latest:
            return 0
        previous = await self._load(latest)
        placements = {}
        for broadcaster, channel in latest.items():
            old = previous.get(broadcaster)
            if channel.transport_mode in LEGACY_MODES:
                placements[broadcaster] = self._subscription_count(channel)
            elif old is not None and old.transport_mode in LEGACY_MODES:
                placements[broadcaster] = 0
        await self._slots.place(placements)
        await self._mark_identity({b: (previous.get(b), c) for b, c in latest.items()})
        await self._write(latest.values())
        return len(latest)

    async def set_mode(self, broadcaster_ids: Iterable[str], mode: str, *, fallback: bool | None = None) -> list[Channel]:
        """Move stored channels to transport `mode`; return the channels whose mode or flag changed.

        `fallback` marks (True) or clears (False) the automatic fallback flag. Unknown ids raise
        ChannelError, a full legacy capacity LegacyCapacityError; either way nothing changes.
        """
        if mode not in TRANSPORT_MODES:
            raise ChannelError(f"invalid transport mode {mode!r}: expected one of {', '.join(TRANSPORT_MODES)}")
        ids = list(dict.fromkeys(str(b) for b in broadcaster_ids))
        stored = await self._load(ids)
        missing = [b for b in ids if b not in stored]
        if missing:
            shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise ChannelError(f"unknown channels {shown}: add them with `conduit-fleet channels add` first")
        changed: dict[str, Channel] = {}
        for broadcaster, channel in stored.items():
            flag = channel.fallback if fallback is None else fallback
            if channel.transport_mode != mode or channel.fallback != flag:
                changed[broadcaster] = msgspec.structs.replace(channel, transport_mode=mode, fallback=flag)
        if not changed:
            return []
        placements = {
            b: self._subscription_count(c) if mode in LEGACY_MODES else 0
            for b, c in changed.items() if mode in LEGACY_MODES or stored[b].transport_mode in LEGACY_MODES
        }
        await self._slots.place(placements)
        await self._mark_identity({b: (stored[b], c) for b, c in changed.items()})
        await self._write(changed.values())
        return list(changed.values())

    async def _load(self, broadcaster_ids: Iterable[str]) -> dict[str, Channel]:
        ids = list(broadcaster_ids)
        if not ids:
            return {}
        raw = await self._client.hmget(self._keys.channels, ids)
        return {b: _decoder.decode(value) for b, value in zip(ids, raw) if value is not None}

    async def _mark_identity(self, changes: dict[str, tuple[Channel | None, Channel]]) -> None:
        now_ms = int(time.time() * 1000)
        grace_ms = int(self._settings.scaled(self._settings.identity_dedup_grace_s) * 1000)
        marks = {}
        for broadcaster, (old, new) in changes.items():
            if new.transport_mode == "both":
                marks[broadcaster] = IDENTITY_COMPARED
            elif new.fallback:
                marks[broadcaster] = IDENTITY_OPEN
            elif old is not None and (old.transport_mode != new.transport_mode or old.fallback):
                marks[broadcaster] = now_ms + grace_ms
        if marks:
            await self._client.hset(self._keys.identity_dedup, mapping=marks)

    async def _write(self, channels: Iterable[Channel]) -> None:
        items = [(channel.broadcaster_user_id, _encoder.encode(channel)) for channel in channels]
        pipe = self._client.pipeline(transaction=False)
        for start in range(0, len(items), ADD_CHUNK):
            pipe.hset(self._keys.channels, mapping=dict(items[start:start + ADD_CHUNK]))
        pipe.publish(self._keys.channels_channel, "changed")
        await pipe.execute()

    async def remove(self, broadcaster_ids: Iterable[str]) -> int:
        ids = list(broadcaster_ids)
        if ids:
            stored = await self._load(ids)
            await self._slots.place({b: 0 for b, c in stored.items() if c.transport_mode in LEGACY_MODES})
        removed = await self._client.hdel(self._keys.channels, *ids) if ids else 0
        await self._client.publish(self._keys.channels_channel, "changed")
        return removed

    async def list(self) -> list[Channel]:
        raw = await self._client.hgetall(self._keys.channels)
        return sorted((_decoder.decode(value) for value in raw.values()), key=lambda c: int(c.broadcaster_user_id))


# Entry states. Only `BLOCKING_STATES` stop the reconciler from creating the entry again; an operator
# clears them with `conduit-fleet channels clear ID`.
FAILED = "failed"
NEEDS_RECONSENT = "needs_reconsent"
VERSION_REMOVED = "version_removed"
BLOCKED_BY_COST = "blocked_by_cost"
BLOCKING_STATES = frozenset({NEEDS_RECONSENT, VERSION_REMOVED})


class EntryState(msgspec.Struct, omit_defaults=True):
    """The reason one desired subscription (type, version, condition) is not on the conduit."""

    state: str
    reason: str
    type: str
    version: str
    condition: dict[str, str] = {}
    broadcaster_user_id: str = ""
    subscription_id: str = ""
    retryable: bool = False
    since_ms: int = 0

    @property
    def blocks_retry(self) -> bool:
        """Return whether the reconciler must leave this entry alone until an operator clears it."""
        return self.state in BLOCKING_STATES or (self.state == FAILED and not self.retryable)


_state_decoder = msgspec.json.Decoder(EntryState)


def entry_state(state: str, reason: str, type_: str, version: str, condition: dict[str, str], *,
                subscription_id: str = "", retryable: bool = False) -> EntryState:
    """Build an EntryState stamped with the current time."""
    return EntryState(state=state, reason=reason, type=type_, version=version, condition=condition,
                      broadcaster_user_id=condition.get("broadcaster_user_id", ""),
                      subscription_id=subscription_id, retryable=retryable, since_ms=int(time.time() * 1000))


class EntryStateStore:
    """Reads and edits `cf:subscription-states`: identity of a desired subscription -> EntryState."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys

    async def load(self) -> dict[str, EntryState]:
        raw = await self._client.hgetall(self._keys.entry_states)
        return {key.decode(): _state_decoder.decode(value) for key, value in raw.items()}

    async def save(self, changed: dict[str, EntryState], removed: Iterable[str] = ()) -> None:
        """Write changed entries and delete removed ones in one pipelined round trip."""
        removed = list(removed)
        if not changed and not removed:
            return
        pipe = self._client.pipeline(transaction=False)
        items = [(key, _encoder.encode(state)) for key, state in changed.items()]
        for start in range(0, len(items), ADD_CHUNK):
            pipe.hset(self._keys.entry_states, mapping=dict(items[start:start + ADD_CHUNK]))
        for start in range(0, len(removed), ADD_CHUNK):
            pipe.hdel(self._keys.entry_states, *removed[start:start + ADD_CHUNK])
        await pipe.execute()

    async def clear(self, broadcaster_ids: Iterable[str]) -> int:
        """Drop the states of these broadcasters' entries so the reconciler tries them again; return the count."""
        wanted = set(broadcaster_ids)
        keys = [key for key, state in (await self.load()).items() if state.broadcaster_user_id in wanted]
        if keys:
            await self._client.hdel(self._keys.entry_states, *keys)
        await self._client.publish(self._keys.channels_channel, "changed")
        return len(keys)
