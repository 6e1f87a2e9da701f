"""The identity of an event, the same on every transport that delivers it.

During the parallel run one event reaches the fleet twice: once through the conduit and once through
a legacy WebSocket connection, each copy with its own `message_id`. The two copies carry the same
`event` object, so the dedup key is taken from it. Where Twitch gives the event an id that is unique
per event, the key is that id. Otherwise it is a hash of the type, the version and the event in
canonical JSON (keys sorted, no spaces).
"""

from __future__ import annotations

import calendar
import hashlib
import time

import orjson

# Event fields that identify one event of a type. Types whose id repeats across several events (the
# progress events of polls, predictions, hype trains and goals share one id) are left to the hash.
ID_FIELDS: dict[str, str] = {
    "channel.chat.message": "message_id",
    "channel.chat.notification": "message_id",
    "channel.chat.message_delete": "message_id",
    "channel.chat.user_message_hold": "message_id",
    "channel.chat.user_message_update": "message_id",
    "stream.online": "id",
    "channel.channel_points_custom_reward_redemption.add": "id",
    "channel.channel_points_automatic_reward_redemption.add": "id",
    "channel.suspicious_user.message": "message_id",
}


def event_identity(type_: str, version: str, event: bytes, broadcaster: str = "") -> str:
    """Return the identity of one event from its raw `event` JSON bytes.

    A per-type id is qualified with the broadcaster, so an id that is unique only within one channel
    (the emulator's stream ids are random numbers) cannot merge events of two channels.
    """
    try:
        parsed = orjson.loads(event)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        field = ID_FIELDS.get(type_)
        if field:
            value = parsed.get(field)
            if isinstance(value, str) and value:
                return f"{type_}:{broadcaster}:{value}"
        canonical = orjson.dumps(parsed, option=orjson.OPT_SORT_KEYS)
    else:
        canonical = event
    digest = hashlib.blake2b(b"%s\0%s\0%s" % (type_.encode(), version.encode(), canonical), digest_size=16)
    return f"{type_}:h:{digest.hexdigest()}"


def is_content_hash(identity: str) -> bool:
    """Return whether `identity` is a hash of the event's content rather than an id Twitch gave it."""
    return identity.split(":", 2)[1:2] == ["h"]


def timestamp_ms(timestamp: str) -> int | None:
    """Return an RFC 3339 UTC timestamp (`2026-12-04T10:00:00.123456789Z`) in ms, or None if unreadable."""
    if len(timestamp) < 20 or timestamp[-1] != "Z":
        return None
    try:
        seconds = calendar.timegm(time.strptime(timestamp[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    fraction = timestamp[20:-1] if timestamp[19] == "." else ""
    millis = int((fraction + "000")[:3]) if fraction.isdigit() else 0
    return seconds * 1000 + millis
