"""The desired state: channels and their event types in `cf:channels`.

Writes are idempotent (adding a channel twice stores it once) and announce themselves on a pub/sub
channel, so the leader's reconciler runs soon after an edit.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

import msgspec
import orjson
import redis.asyncio as redis

from .keys import Keys
from .models import Channel
from .settings import parse_event_types

TRANSPORT_MODES = ("websocket", "both", "conduit")
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


class ChannelStore:
    """Reads and edits `cf:channels`."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys

    async def add(self, channels: Iterable[Channel]) -> int:
        mapping = {channel.broadcaster_user_id: _encoder.encode(channel) for channel in channels}
        if not mapping:
            return 0
        items = list(mapping.items())
        for start in range(0, len(items), 1000):
            await self._client.hset(self._keys.channels, mapping=dict(items[start:start + 1000]))
        await self._client.publish(self._keys.channels_channel, "changed")
        return len(mapping)

    async def remove(self, broadcaster_ids: Iterable[str]) -> int:
        ids = list(broadcaster_ids)
        removed = await self._client.hdel(self._keys.channels, *ids) if ids else 0
        await self._client.publish(self._keys.channels_channel, "changed")
        return removed

    async def list(self) -> list[Channel]:
        raw = await self._client.hgetall(self._keys.channels)
        return sorted((_decoder.decode(value) for value in raw.values()), key=lambda c: int(c.broadcaster_user_id))
