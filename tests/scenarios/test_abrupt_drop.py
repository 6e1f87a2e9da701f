"""S1: a socket drops with 1006 and no session_reconnect; the shard must be bound to a new session."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(120)


async def test_abrupt_drop_rebinds_fresh_session(fleet):
    fleet.shard_count = 6
    await fleet.start(workers=2)
    await fleet.add_channels(12, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=12)
    before = await fleet.twitch_shards()
    old_session = before["2"]["transport"]["session_id"]
    owner = (await fleet.assignment())["2"]

    # The first bind that names shard 2 fails, so the worker must retry on yet another fresh session.
    await fleet.control("POST", "/faults", {"kind": "shard_error", "shard_ids": ["2"], "count": 1})
    dropped = await fleet.control("POST", "/sessions/drop", {"shard_ids": ["2"], "mode": "abrupt"})
    assert dropped["session_ids"] == [old_session]

    async def rebound() -> bool:
        shard = (await fleet.twitch_shards())["2"]
        return shard["status"] == "enabled" and shard["transport"]["session_id"] != old_session

    await fleet.wait_for(rebound, 15, "shard 2 enabled on a new session")
    counters = await fleet.control("GET", "/counters")
    assert counters["closed_4003"] == 0
    assert await fleet.worker_metric(owner, "cf_worker_binds_total", 'result="failed"') >= 1
    assert await fleet.worker_metric(owner, "cf_worker_reconnects_total", 'cause="bind_failed"') >= 1
    others = {shard_id: s["transport"]["session_id"] for shard_id, s in (await fleet.twitch_shards()).items() if shard_id != "2"}
    assert others == {shard_id: s["transport"]["session_id"] for shard_id, s in before.items() if shard_id != "2"}
