"""Redis restarts (AOF on) while events flow: nothing crashes, nothing is lost or duplicated."""

from __future__ import annotations

import asyncio
import collections

import pytest

from common.local import start_redis
from tests.fleet import Fleet

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
async def own_redis(tmp_path):
    data_dir = tmp_path / "redis-data"
    data_dir.mkdir()
    process, port = start_redis(tmp_path, appendonly=True, data_dir=data_dir)
    state = {"process": process, "port": port, "data_dir": data_dir}
    yield state
    state["process"].stop()


async def test_redis_restart_buffers_and_publishes(tmp_path, own_redis):
    fleet = Fleet(tmp_path, own_redis["port"], shard_count=6)
    try:
        await fleet.start(workers=2)
        await fleet.add_channels(30, ["stream.online:1"])
        await fleet.wait_ready(subscriptions=30)
        run = await fleet.control("POST", "/generate", {"rate": 500, "count": 4000})
        await fleet.wait_published(500)

        sessions_before = {s: v["transport"]["session_id"] for s, v in (await fleet.twitch_shards()).items()}
        own_redis["process"].stop()
        await asyncio.sleep(1.5)
        process, _ = await asyncio.to_thread(start_redis, tmp_path, own_redis["port"], appendonly=True,
                                             data_dir=own_redis["data_dir"])
        own_redis["process"] = process
        await fleet.redis.ping()

        async def finished() -> bool:
            return (await fleet.control("GET", f"/generate/{run['id']}"))["done"]

        await fleet.wait_for(finished, 30, "the generator to finish")
        await fleet.wait_published(4000, timeout_s=30)
        entries = await fleet.stream_entries()
        per_id = collections.Counter(entry["message_id"] for entry in entries)
        counters = await fleet.control("GET", "/counters")
        await fleet.wait_for(fleet.all_shards_enabled, 20, "every shard enabled")

        sessions_after = {s: v["transport"]["session_id"] for s, v in (await fleet.twitch_shards()).items()}
        assert sessions_after == sessions_before
        assert counters["dropped_disabled"] == 0
        assert len(entries) == 4000
        assert max(per_id.values()) == 1
        for name in ("coordinator", "worker-1", "worker-2"):
            assert fleet.processes[name].alive(), fleet.logs()
    finally:
        await fleet.close()
