"""Automatic fallback: the Conduits API fails, conduit channels move to the legacy connections in
priority order as far as they fit, and come back once the API works, without losing or doubling
events."""

from __future__ import annotations

import asyncio
import collections

import msgspec

from common.migration import load_state

FIRST_ID = 30_000
CHANNELS = 40


async def test_fallback_and_return(fleet):
    ids = [str(FIRST_ID + i) for i in range(CHANNELS)]
    priority = [ids[-1], ids[-2]]
    fleet.extra_env.update({
        "CF_LEGACY_CONNECTIONS": "1", "CF_LEGACY_SUBSCRIPTIONS_PER_CONNECTION": "30",
        "CF_FALLBACK_AFTER_S": "20", "CF_FALLBACK_RECOVER_S": "20", "CF_FALLBACK_PRIORITY": ",".join(priority),
        "CF_IDENTITY_DEDUP_GRACE_S": "30",
    })
    fleet.shard_count = 4
    await fleet.start_emulator()
    await fleet.use_legacy_user(ids)
    fleet.start_coordinator()
    fleet.start_worker("worker-1")
    fleet.start_worker("worker-2")
    await fleet.add_channels(CHANNELS, ["stream.online:1"], first_id=FIRST_ID)
    await fleet.wait_ready(subscriptions=CHANNELS + 1)  # the channels and conduit.shard.disabled
    run = await fleet.control("POST", "/generate", {"rate": 100, "duration_s": 600, "types": ["stream.online"]})

    for path in ("/eventsub/conduits", "/eventsub/conduits/shards"):
        await fleet.control("POST", "/faults", {"kind": "helix", "method": "*", "path": path, "status": 503,
                                                "count": 1_000_000})

    async def fell_back() -> bool:
        state = await load_state(fleet.redis, fleet.keys)
        return state.fallback.get("state") == "active" and await fleet.helix_as_user_count() == 30

    await fleet.wait_for(fell_back, 60, "30 channels on the legacy connection after the Conduits API failed")
    channels = {c.broadcaster_user_id: c for c in await fleet.channel_store().list()}
    moved = [b for b, c in channels.items() if c.fallback]
    assert len(moved) == 30 and {channels[b].transport_mode for b in moved} == {"websocket"}
    assert set(priority) <= set(moved)
    assert sum(1 for c in channels.values() if c.transport_mode == "conduit") == 10
    active = await fleet.redis.hgetall(fleet.keys.alerts_active)
    assert b"conduit_fallback" in active
    await asyncio.sleep(2)  # events flow over the legacy connection

    await fleet.control("DELETE", "/faults")

    async def returned() -> bool:
        state = await load_state(fleet.redis, fleet.keys)
        modes = {c.transport_mode for c in await fleet.channel_store().list()}
        return state.fallback.get("state") == "idle" and modes == {"conduit"}

    await fleet.wait_for(returned, 90, "every channel back on the conduit")
    assert not any(c.fallback for c in await fleet.channel_store().list())
    await asyncio.sleep(1)
    generated = await fleet.control("DELETE", f"/generate/{run['id']}")
    await asyncio.sleep(3)

    seen: collections.Counter = collections.Counter()
    transports = set()
    for entry in await fleet.stream_entries():
        if entry["type"] != b"stream.online":
            continue  # conduit.shard.disabled, when a shard's socket dropped meanwhile
        event = msgspec.json.decode(entry["event"])
        seen[(entry["broadcaster_user_id"], event["id"])] += 1
        transports.add(entry["transport"])
    assert max(seen.values()) == 1, "an event was published twice"
    assert len(seen) == generated["sent"], f"{generated['sent'] - len(seen)} events lost"
    assert transports == {b"websocket", b"conduit"}
    assert b"conduit_fallback" not in await fleet.redis.hgetall(fleet.keys.alerts_active)
