"""End-to-end: emulator, coordinator and two workers as real processes, real Redis."""

from __future__ import annotations

import collections
import time

import orjson
import pytest

from tests.fleet import TIME_SCALE

pytestmark = pytest.mark.timeout(180)

CHAT = "channel.chat.message:1"
ONLINE = "stream.online:1"


async def test_exactly_once_with_duplicates(fleet):
    await fleet.start(workers=2)
    await fleet.add_channels(250, [ONLINE, CHAT])
    await fleet.wait_ready(subscriptions=500)

    run = await fleet.generate(rate=2500, count=10_000, duplicate_ratio=0.05, duplicate_other_shard_ratio=0.5)
    counters = await fleet.control("GET", "/counters")
    expected = counters["sent"] - counters["dropped_disabled"]
    await fleet.wait_published(expected)

    entries = await fleet.stream_entries()
    ids = collections.Counter(entry["message_id"] for entry in entries)
    assert counters["sent"] == 10_000
    assert counters["dropped_disabled"] == 0
    assert counters["duplicates_injected"] >= 400, run
    assert len(entries) == 10_000
    assert max(ids.values()) == 1

    # Every published event is byte-identical to what the emulator sent, Japanese text and emoji included.
    chat = [entry for entry in entries if entry["type"] == b"channel.chat.message"]
    assert chat
    for entry in chat[:50]:
        frame = await fleet.control("GET", f"/sent/{entry['message_id'].decode()}")
        sent_event = frame["frame"].encode()
        start = sent_event.index(b'"event":') + len(b'"event":')
        assert sent_event[start:-2] == entry["event"]
    texts = [orjson.loads(entry["event"])["message"]["text"] for entry in chat]
    assert any(any(ord(ch) > 0x3000 for ch in text) for text in texts)
    assert any(any(ord(ch) > 0x1F000 for ch in text) for text in texts)


async def test_reconnect_everywhere_loses_nothing(fleet):
    await fleet.start(workers=2)
    await fleet.add_channels(100, [ONLINE])
    await fleet.wait_ready(subscriptions=100)
    binds_before = await fleet.update_shard_calls()

    started = await fleet.control("POST", "/generate", {"rate": 1000, "count": 6000})
    await fleet.wait_published(1000)
    reconnected = await fleet.control("POST", "/sessions/reconnect", {"all": True})
    assert len(reconnected["session_ids"]) == fleet.shard_count

    async def generator_done() -> bool:
        return (await fleet.control("GET", f"/generate/{started['id']}"))["done"]

    await fleet.wait_for(generator_done, 30, "the generator to finish")
    await fleet.wait_published(6000)
    entries = await fleet.stream_entries()
    ids = collections.Counter(entry["message_id"] for entry in entries)
    counters = await fleet.control("GET", "/counters")

    assert counters["dropped_disabled"] == 0
    assert len(entries) == 6000
    assert max(ids.values()) == 1
    assert counters.get("closed_4007", 0) == 0
    assert await fleet.update_shard_calls() == binds_before
    assert await fleet.all_shards_enabled()


async def test_killed_worker_shards_rebound(fleet):
    await fleet.start(workers=2)
    await fleet.add_channels(20, [ONLINE])
    await fleet.wait_ready(subscriptions=20)
    assignment = {k.decode(): v.decode() for k, v in (await fleet.redis.hgetall(fleet.keys.assignment)).items()}
    victim_shards = {shard for shard, worker in assignment.items() if worker == "worker-1"}
    assert len(victim_shards) == 10

    fleet.kill("worker-1")
    killed_at = time.monotonic()

    async def rebound_on_survivor() -> bool:
        shards = await fleet.twitch_shards()
        sessions = {s["id"]: s["transport"].get("session_id") for s in shards.values() if s["status"] == "enabled"}
        if not victim_shards <= sessions.keys():
            return False
        owners = {k.decode(): v.decode() for k, v in (await fleet.redis.hgetall(fleet.keys.assignment)).items()}
        return all(owners.get(shard) == "worker-2" for shard in victim_shards)

    lease_s = 10.0  # CF_WORKER_LEASE_S default, in Twitch-scale seconds
    await fleet.wait_for(rebound_on_survivor, (lease_s + 5) * TIME_SCALE + 2, "the killed worker's shards on worker-2")
    took_s = (time.monotonic() - killed_at) / TIME_SCALE
    assert took_s <= lease_s + 5, f"rebinding took {took_s:.1f} s of emulator time"
