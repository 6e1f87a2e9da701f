"""S7 and S9: session_reconnect is followed make-before-break, and overlap duplicates publish once."""

from __future__ import annotations

import collections

import pytest

pytestmark = pytest.mark.timeout(120)


async def _ready(fleet, channels: int) -> None:
    fleet.shard_count = 8
    await fleet.start(workers=2)
    await fleet.add_channels(channels, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=channels)


async def test_reconnect_keeps_session_without_binding(fleet):
    await _ready(fleet, 16)
    before = await fleet.twitch_shards()
    binds_before = await fleet.update_shard_calls()

    reconnected = await fleet.control("POST", "/sessions/reconnect", {"all": True})
    assert len(reconnected["session_ids"]) == 8

    async def old_sockets_closed() -> bool:
        sessions = await fleet.control("GET", "/sessions")
        return len(sessions) == 8 and all(s["state"] == "connected" for s in sessions)

    await fleet.wait_for(old_sockets_closed, 10, "every session connected on its new socket")
    counters = await fleet.control("GET", "/counters")
    after = await fleet.twitch_shards()

    assert counters["closed_4007"] == 0
    assert counters["closed_4004"] == 0
    assert await fleet.update_shard_calls() == binds_before
    assert {s: v["transport"]["session_id"] for s, v in after.items()} == {s: v["transport"]["session_id"] for s, v in before.items()}
    assert all(shard["status"] == "enabled" for shard in after.values())


async def test_overlap_duplicates_published_once(fleet):
    await _ready(fleet, 40)
    run = await fleet.control("POST", "/generate", {"rate": 800, "count": 4000})
    await fleet.wait_published(500)
    await fleet.control("POST", "/sessions/reconnect", {"all": True})

    async def finished() -> bool:
        return (await fleet.control("GET", f"/generate/{run['id']}"))["done"]

    await fleet.wait_for(finished, 30, "the generator to finish")
    await fleet.wait_published(4000)
    counters = await fleet.control("GET", "/counters")
    entries = await fleet.stream_entries()
    per_id = collections.Counter(entry["message_id"] for entry in entries)

    assert counters["overlap_resent"] > 0
    assert counters["dropped_disabled"] == 0
    assert len(entries) == 4000
    assert max(per_id.values()) == 1
