"""The subscriptions a channel wants: their conditions and the key Twitch treats them as equal by.

The conduit reconciler and the legacy WebSocket sessions both build their desired subscriptions here,
so a channel asks for the same type, version and condition on either transport.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from .models import Channel

# The condition fields each type needs besides broadcaster_user_id (EventSub subscription types page).
_EXTRA_CONDITION = {
    "channel.follow": "moderator_user_id",
    "channel.chat.message": "user_id",
    "channel.chat.notification": "user_id",
}

Wanted = tuple[str, str, dict[str, str]]


def condition_for(type_: str, broadcaster_id: str) -> dict[str, str]:
    """Return the condition of a subscription of `type_` for one broadcaster."""
    condition = {"broadcaster_user_id": broadcaster_id}
    extra = _EXTRA_CONDITION.get(type_)
    if extra:
        condition[extra] = broadcaster_id
    return condition


def subscription_key(type_: str, version: str, condition: dict[str, str]) -> str:
    """Return the key under which Twitch considers two subscriptions the same."""
    return f"{type_}|{version}|{orjson.dumps(condition, option=orjson.OPT_SORT_KEYS).decode()}"


def channel_subscriptions(channel: Channel, default_types: list[str]) -> Iterator[tuple[str, Wanted]]:
    """Yield (key, (type, version, condition)) for each event type of `channel` (`default_types` if none)."""
    for entry in channel.types or default_types:
        type_, _, version = entry.partition(":")
        condition = condition_for(type_, channel.broadcaster_user_id)
        yield subscription_key(type_, version or "1", condition), (type_, version or "1", condition)


def subscription_count(channel: Channel, default_types: list[str]) -> int:
    """Return how many subscriptions `channel` wants."""
    return len(channel.types or default_types)
