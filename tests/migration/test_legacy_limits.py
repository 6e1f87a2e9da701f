"""The legacy WebSocket mode's limits, on real processes.

300 subscriptions per connection, 900 in all, and a dropped connection that re-creates its
subscriptions on a new session within Twitch's 10 s.
"""

from __future__ import annotations

import time

import pytest

from common.legacy import LegacyCapacityError
from common.channels import make_channel
from tests.fleet import TIME_SCALE

FIRST_ID = 5000


async def test_legacy_limits_and_reconnect(fleet):
    ids = [str(FIRST_ID + i) for i in range(901)]
    await fleet.start_emulator()
    await fleet.use_legacy_user(ids)
    fleet.shard_count = 4
    fleet.start_coordinator()
    fleet.start_worker("worker-1")
    fleet.start_worker("worker-2")
    store = fleet.channel_store()

    # 600 channels first: least-loaded placement spreads them 200 / 200 / 200.
    await fleet.add_channels(600, ["stream.online:1"], first_id=FIRST_ID, mode="websocket")
    load = {int(k): int(v) for k, v in (await fleet.redis.hgetall(fleet.keys.legacy_load)).items()}
    assert load == {0: 200, 1: 200, 2: 200}

    # Fill slot 0 by hand to its 300: the next channels must go to the other connections.
    await fleet.redis.hset(fleet.keys.legacy_load, "0", 300)
    await store.add([make_channel(ids[600], types=["stream.online:1"], transport_mode="websocket")])
    placed = (await fleet.redis.hget(fleet.keys.legacy_slots, ids[600])).decode()
    assert placed.split(":")[0] in ("1", "2"), placed
    await fleet.redis.hset(fleet.keys.legacy_load, "0", 200)

    # Up to 900: exactly 300 per connection.
    await fleet.add_channels(299, ["stream.online:1"], first_id=FIRST_ID + 601, mode="websocket")
    load = {int(k): int(v) for k, v in (await fleet.redis.hgetall(fleet.keys.legacy_load)).items()}
    assert load == {0: 300, 1: 300, 2: 300}

    # The 901st channel is refused with a message that names it and the way out; nothing is stored.
    with pytest.raises(LegacyCapacityError) as refused:
        await store.add([make_channel(ids[900], types=["stream.online:1"], transport_mode="websocket")])
    message = str(refused.value)
    assert ids[900] in message
    assert "900 of 900" in message
    assert "conduit" in message
    assert await fleet.redis.hget(fleet.keys.channels, ids[900]) is None
    assert await fleet.redis.hget(fleet.keys.legacy_slots, ids[900]) is None

    async def three_full_connections() -> bool:
        sessions = await fleet.legacy_sessions()
        return sorted(s["websocket_subscriptions"] for s in sessions) == [300, 300, 300]

    await fleet.wait_for(three_full_connections, 60, "3 legacy connections with 300 subscriptions each")
    stored = await fleet.helix_as_user_count()
    assert stored == 900

    # Creating 900 took more than the user's 800 points a minute. A running service drops a
    # connection long after its set-up, with the bucket refilled, so wait for 700 points (up to a
    # minute of Twitch time). 300 creations cannot fit in 10 s of an empty bucket.
    async def bucket_refilled() -> bool:
        return await fleet.user_points_left() >= 700

    await fleet.wait_for(bucket_refilled, 30, "the legacy user's rate-limit bucket to refill")

    # Drop one legacy connection: a new session gets its 300 subscriptions back within 10 s (Twitch time).
    before = {s["id"] for s in await fleet.legacy_sessions()}
    victim = sorted(before)[0]
    dropped_at = time.monotonic()
    await fleet.control("POST", "/sessions/drop", {"session_ids": [victim], "mode": "abrupt"})

    async def recreated() -> bool:
        sessions = await fleet.legacy_sessions()
        fresh = [s for s in sessions if s["id"] not in before and s["websocket_subscriptions"] == 300]
        return len(fresh) == 1 and len(sessions) == 3

    await fleet.wait_for(recreated, 30, "the dropped legacy connection's 300 subscriptions on a new session")
    took_twitch_s = (time.monotonic() - dropped_at) / TIME_SCALE
    assert took_twitch_s < 10, f"re-creating took {took_twitch_s:.1f} s of Twitch time"
    connections = await fleet.redis.hgetall(fleet.keys.legacy_connections)
    assert len(connections) == 3


async def test_legacy_session_reconnect_keeps_subscriptions(fleet):
    ids = [str(FIRST_ID + i) for i in range(30)]
    await fleet.start_emulator()
    await fleet.use_legacy_user(ids)
    fleet.shard_count = 2
    fleet.start_coordinator()
    fleet.start_worker("worker-1")
    await fleet.add_channels(30, ["stream.online:1"], first_id=FIRST_ID, mode="websocket")

    async def subscribed() -> bool:
        return await fleet.helix_as_user_count() == 30

    await fleet.wait_for(subscribed, 30, "30 legacy subscriptions")
    creates_before = (await fleet.control("GET", "/counters"))["helix_calls"].get("POST /eventsub/subscriptions", 0)
    sessions = await fleet.legacy_sessions()
    assert len(sessions) == 3  # 30 channels spread over the 3 connections
    await fleet.control("POST", "/sessions/reconnect", {"session_ids": [s["id"] for s in sessions]})

    async def moved() -> bool:
        return fleet.processes["worker-1"].output().count("followed session_reconnect") == 3

    await fleet.wait_for(moved, 30, "the worker following session_reconnect on the 3 legacy sockets")
    await fleet.generate(rate=300, count=300, types=["stream.online"])
    await fleet.wait_published(300)
    counters = await fleet.control("GET", "/counters")
    assert counters["helix_calls"].get("POST /eventsub/subscriptions", 0) == creates_before
    assert counters["closed_4007"] == 0
    assert await fleet.helix_as_user_count() == 30
    entries = await fleet.stream_entries()
    assert len(entries) == 300
    assert {entry["transport"] for entry in entries} == {b"websocket"}
    assert {entry["shard_id"] for entry in entries} == {b"legacy-0", b"legacy-1", b"legacy-2"}
