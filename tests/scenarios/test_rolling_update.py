"""S19: a worker receives SIGTERM; its shards are handed over make-before-break, losing nothing."""

from __future__ import annotations

import asyncio
import signal

import pytest

pytestmark = pytest.mark.timeout(150)


async def test_sigterm_hands_shards_over(fleet):
    fleet.shard_count = 12
    fleet.extra_env["CF_DRAIN_TIMEOUT_S"] = "60"
    await fleet.start(workers=3)
    await fleet.add_channels(60, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=60)
    leaving = fleet.processes["worker-2"]
    leaving_shards = {s for s, w in (await fleet.assignment()).items() if w == "worker-2"}
    assert len(leaving_shards) == 4

    run = await fleet.control("POST", "/generate", {"rate": 1000, "count": 8000})
    await fleet.wait_published(1000)
    leaving.signal(signal.SIGTERM)

    # Sample while the handoff runs: shards disabled at Twitch, and shards in transit per source worker.
    max_disabled = max_in_transit = 0
    while leaving.alive():
        shards = await fleet.twitch_shards()
        max_disabled = max(max_disabled, sum(1 for s in shards.values() if s["status"] != "enabled"))
        assignment = await fleet.assignment()
        bound = {k.decode(): v for k, v in (await fleet.redis.hgetall(fleet.keys.shards)).items()}
        in_transit = sum(1 for shard in leaving_shards
                         if assignment.get(shard) != "worker-2" and assignment.get(shard, "").encode() not in bound.get(shard, b""))
        max_in_transit = max(max_in_transit, in_transit)
        await asyncio.sleep(0.02)
    exit_code = leaving.process.wait(5)
    del fleet.processes["worker-2"]

    async def finished() -> bool:
        return (await fleet.control("GET", f"/generate/{run['id']}"))["done"]

    await fleet.wait_for(finished, 30, "the generator to finish")
    await fleet.wait_published(8000)
    counters = await fleet.control("GET", "/counters")
    owners = await fleet.assignment()

    assert exit_code == 0
    assert "drain finished: every shard handed over" in leaving.output()
    assert set(owners.values()) == {"worker-1", "worker-3"}
    assert counters["dropped_disabled"] == 0
    assert await fleet.published_count() == 8000
    assert max_disabled == 0
    assert max_in_transit <= 1
