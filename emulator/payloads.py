"""Event bodies shaped like Twitch's documented EventSub events, with Japanese text.

Logins and display names follow from the user id, so the same id always gives the
same ``user<id>`` login and the same display name.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from typing import Any

from .clock import rfc3339_now
from .state import Subscription

_JAPANESE_NAMES = ("さくら", "ゆうき", "はると", "みなと", "ひなた", "あおい", "そら", "りん")
_CHAT_LINES = (
    "こんにちは！配信ありがとう 🎉🔥",
    "今日も楽しみにしてました✨",
    "ナイスプレイ！👏👏",
    "草www",
    "初見です、よろしくお願いします🙇",
    "GG! お疲れさまでした 🍵",
)
_TITLES = ("【初見歓迎】まったり雑談配信 🌸", "深夜のゲーム実況🎮 ランク上げ", "Speedrun practice / 練習中")
_CATEGORIES = (("509658", "Just Chatting"), ("21779", "League of Legends"), ("33214", "Fortnite"))
_COLORS = ("#FF4500", "#1E90FF", "#9ACD32", "#00FF7F", "")
_PADDING_CHARS = "あいうえおかきくけこ🎉"


def login_of(user_id: str) -> str:
    return f"user{user_id}"


def display_name_of(user_id: str) -> str:
    """Return a display name; about one id in three gets a Japanese name."""
    number = int(user_id) if user_id.isdigit() else sum(user_id.encode())
    if number % 3 == 0:
        return _JAPANESE_NAMES[number % len(_JAPANESE_NAMES)]
    return f"User{user_id}"


def _user_fields(prefix: str, user_id: str) -> dict[str, str]:
    return {
        f"{prefix}_id": user_id,
        f"{prefix}_login": login_of(user_id),
        f"{prefix}_name": display_name_of(user_id),
    }


def _random_uuid(rng: random.Random) -> str:
    """Return a version-4 UUID drawn from ``rng``, so a seeded run repeats it."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _random_user_id(rng: random.Random) -> str:
    return str(rng.randrange(10_000_000, 999_999_999))


def _broadcaster(subscription: Subscription) -> dict[str, str]:
    return _user_fields("broadcaster_user", subscription.condition.get("broadcaster_user_id", "0"))


def stream_online(subscription: Subscription, rng: random.Random, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(rng.randrange(10**10, 10**11)),
        **_broadcaster(subscription),
        "type": "live",
        "started_at": rfc3339_now(6),
    }


def stream_offline(subscription: Subscription, rng: random.Random, options: dict[str, Any]) -> dict[str, Any]:
    return _broadcaster(subscription)


def channel_update(subscription: Subscription, rng: random.Random, options: dict[str, Any]) -> dict[str, Any]:
    category_id, category_name = rng.choice(_CATEGORIES)
    return {
        **_broadcaster(subscription),
        # A numbered title, as streamers number their streams, so that two updates rarely match.
        "title": f"{rng.choice(_TITLES)} #{rng.randrange(1, 10_000)}",
        "language": "ja",
        "category_id": category_id,
        "category_name": category_name,
        "content_classification_labels": rng.choice(([], ["MatureGame"], ["ProfanityVulgarity"])),
    }


def channel_follow(subscription: Subscription, rng: random.Random, options: dict[str, Any]) -> dict[str, Any]:
    return {
        **_user_fields("user", _random_user_id(rng)),
        **_broadcaster(subscription),
        "followed_at": rfc3339_now(6),
    }


def channel_subscribe(subscription: Subscription, rng: random.Random, options: dict[str, Any]) -> dict[str, Any]:
    return {
        **_user_fields("user", _random_user_id(rng)),
        **_broadcaster(subscription),
        "tier": "1000",
        "is_gift": rng.random() < 0.2,
    }


def pad_text(text: str, target_bytes: int | None) -> str:
    """Extend ``text`` with Japanese characters and emoji to about ``target_bytes`` UTF-8 bytes."""
    if not target_bytes:
        return text
    size = len(text.encode())
    parts = [text]
    index = 0
    while size < target_bytes:
        char = _PADDING_CHARS[index % len(_PADDING_CHARS)]
        parts.append(char)
        size += len(char.encode())
        index += 1
    return "".join(parts)


def _text_fragment(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "cheermote": None, "emote": None, "mention": None}


def _chat_fragments(rng: random.Random, broadcaster_id: str, chat_text_bytes: int | None) -> list[dict[str, Any]]:
    fragments = [_text_fragment(pad_text(rng.choice(_CHAT_LINES), chat_text_bytes))]
    if rng.random() < 0.3:
        emote = {"id": "25", "emote_set_id": "0", "owner_id": "0", "format": ["static", "animated"]}
        fragments.append(_text_fragment(" "))
        fragments.append({"type": "emote", "text": "Kappa", "cheermote": None, "emote": emote, "mention": None})
    if rng.random() < 0.2:
        mention = {"user_id": broadcaster_id, "user_login": login_of(broadcaster_id), "user_name": display_name_of(broadcaster_id)}
        fragments.append(_text_fragment(" "))
        fragments.append({
            "type": "mention", "text": f"@{mention['user_name']}", "cheermote": None, "emote": None, "mention": mention,
        })
    return fragments


def channel_chat_message(subscription: Subscription, rng: random.Random, options: dict[str, Any]) -> dict[str, Any]:
    broadcaster_id = subscription.condition.get("broadcaster_user_id", "0")
    fragments = _chat_fragments(rng, broadcaster_id, options.get("chat_text_bytes"))
    badges = [{"set_id": "subscriber", "id": "12", "info": "16"}] if rng.random() < 0.5 else []
    return {
        **_broadcaster(subscription),
        **_user_fields("chatter_user", _random_user_id(rng)),
        "message_id": _random_uuid(rng),
        "message": {"text": "".join(fragment["text"] for fragment in fragments), "fragments": fragments},
        "color": rng.choice(_COLORS),
        "badges": badges,
        "message_type": "text",
        "cheer": None,
        "reply": None,
        "channel_points_custom_reward_id": None,
        "channel_points_animation_id": None,
        "source_broadcaster_user_id": None,
        "source_broadcaster_user_login": None,
        "source_broadcaster_user_name": None,
        "source_message_id": None,
        "source_badges": None,
        "is_source_only": None,
    }


def conduit_shard_disabled(subscription: Subscription, rng: random.Random, options: dict[str, Any]) -> dict[str, Any]:
    now = rfc3339_now(6)
    return {
        "conduit_id": subscription.conduit_id,
        "shard_id": "0",
        "status": "websocket_disconnected",
        "transport": {
            "method": "websocket",
            "session_id": _random_uuid(rng),
            "connected_at": now,
            "disconnected_at": now,
        },
    }


EVENT_BUILDERS: dict[str, Callable[[Subscription, random.Random, dict[str, Any]], dict[str, Any]]] = {
    "stream.online": stream_online,
    "stream.offline": stream_offline,
    "channel.update": channel_update,
    "channel.follow": channel_follow,
    "channel.chat.message": channel_chat_message,
    "channel.subscribe": channel_subscribe,
    "conduit.shard.disabled": conduit_shard_disabled,
}


def build_event(subscription: Subscription, rng: random.Random, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build an event body for ``subscription``'s type."""
    return EVENT_BUILDERS[subscription.type](subscription, rng, options or {})
