"""The leader subscribes to conduit.shard.disabled for its conduit and repairs on it."""

from __future__ import annotations

import aiohttp
import pytest

pytestmark = pytest.mark.timeout(120)


async def test_shard_disabled_event_triggers_repair(fleet):
    fleet.shard_count = 3
    await fleet.start(workers=1)
    await fleet.add_channels(3, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=4)  # 3 channels and conduit.shard.disabled
    page = await fleet.helix("GET", "/eventsub/subscriptions", type="conduit.shard.disabled")
    conduit_id = (await fleet.redis.hget(fleet.keys.conduit, "id")).decode()
    assert [sub["condition"].get("conduit_id") for sub in page["data"]] == [conduit_id]

    # Shard 1 is pointed at a foreign session that then closes; the fleet's own socket stays open,
    # and the health poll (60 s by default) is far away: only the event can trigger the repair.
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"ws://127.0.0.1:{fleet.emulator_port}/ws")
        session_id = (await ws.receive_json())["payload"]["session"]["id"]
        await fleet.helix("PATCH", "/eventsub/conduits/shards", {
            "conduit_id": conduit_id, "shards": [{"id": "1", "transport": {"method": "websocket", "session_id": session_id}}]})
        await ws.close()

    async def repaired() -> bool:
        shard = (await fleet.twitch_shards())["1"]
        return shard["status"] == "enabled" and shard["transport"]["session_id"] != session_id

    await fleet.wait_for(repaired, 15, "shard 1 repaired after conduit.shard.disabled")
    entries = [e for e in await fleet.stream_entries() if e["type"] == b"conduit.shard.disabled"]
    assert entries
