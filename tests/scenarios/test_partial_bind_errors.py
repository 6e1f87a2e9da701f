"""S4: Update Conduit Shards answers 202 with some shards in `errors`, or 400 for the whole batch."""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec
import pytest

from common.helix import HelixClient
from common.keys import Keys
from common.models import ShardState
from common.settings import Settings
from common.token import AppTokenManager
from coordinator.binder import BindBatcher
from coordinator.conduit import ConduitManager
from coordinator.fence import Fence

pytestmark = pytest.mark.timeout(60)


async def _open_session(http: aiohttp.ClientSession, url: str) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    ws = await http.ws_connect(url)
    welcome = await ws.receive_json()
    return ws, welcome["payload"]["session"]["id"]


@pytest.fixture
async def batcher(fleet, redis_client):
    await fleet.start_emulator()
    settings = Settings.from_env(fleet.env(CF_SHARD_COUNT="4"))
    keys = Keys(settings.key_prefix)
    await redis_client.set(keys.leader_epoch, 7)
    http = aiohttp.ClientSession()
    helix = HelixClient(settings, AppTokenManager(settings, redis_client, http), http)
    fence = Fence(redis_client, keys, 7)
    conduit = ConduitManager(settings, redis_client, helix, fence)
    await conduit.adopt()
    # Shard 99 does not exist on the 4-shard conduit; assigning it lets it past the ownership check.
    await redis_client.hset(keys.assignment, mapping={"0": "w", "1": "w", "2": "w", "99": "w"})
    yield BindBatcher(settings, redis_client, helix, conduit, fence), settings
    await http.close()


async def test_only_confirmed_shards_recorded(fleet, batcher, redis_client):
    binder, settings = batcher
    async with aiohttp.ClientSession() as http:
        live_a, session_a = await _open_session(http, settings.eventsub_ws_url)
        dead, dead_session = await _open_session(http, settings.eventsub_ws_url)
        live_b, session_b = await _open_session(http, settings.eventsub_ws_url)
        await dead.close()
        calls_before = await fleet.update_shard_calls()

        results = await asyncio.gather(
            binder.submit("0", session_a, "w"),
            binder.submit("1", dead_session, "w"),
            binder.submit("2", session_b, "w"),
            binder.submit("99", session_a, "w"),
        )
        recorded = await redis_client.hgetall(Keys().shards)
        await live_a.close()
        await live_b.close()

    assert [result.ok for result in results] == [True, False, True, False]
    assert "not connected" in results[1].error
    assert "range" in results[3].error
    assert await fleet.update_shard_calls() == calls_before + 1
    assert sorted(recorded) == [b"0", b"2"]
    assert msgspec.json.decode(recorded[b"0"], type=ShardState).session_id == session_a


async def test_malformed_batch_fails_every_shard(fleet, batcher, redis_client):
    binder, settings = batcher
    await fleet.control("POST", "/faults", {"method": "PATCH", "path": "/eventsub/conduits/shards", "status": 400, "count": 1})
    async with aiohttp.ClientSession() as http:
        ws, session_id = await _open_session(http, settings.eventsub_ws_url)
        results = await asyncio.gather(binder.submit("0", session_id, "w"), binder.submit("2", session_id, "w"))
        await ws.close()

    assert [result.ok for result in results] == [False, False]
    assert await redis_client.hlen(Keys().shards) == 0


async def test_failed_shards_rebind_on_fresh_sessions(fleet):
    fleet.shard_count = 6
    await fleet.start(workers=2)
    await fleet.add_channels(6, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=6)
    before = await fleet.twitch_shards()
    await fleet.control("POST", "/faults", {"kind": "shard_error", "shard_ids": ["1", "4"], "count": 2})
    await fleet.control("POST", "/sessions/drop", {"shard_ids": ["1", "3", "4"], "mode": "abrupt"})

    async def all_rebound() -> bool:
        shards = await fleet.twitch_shards()
        return all(shards[s]["status"] == "enabled" and shards[s]["transport"]["session_id"] != before[s]["transport"]["session_id"]
                   for s in ("1", "3", "4"))

    await fleet.wait_for(all_rebound, 20, "shards 1, 3 and 4 bound to new sessions")
    failed = 0.0
    for worker in ("worker-1", "worker-2"):
        failed += await fleet.worker_metric(worker, "cf_worker_binds_total", 'result="failed"')
    assert failed >= 2


async def test_newer_session_supersedes_older(fleet, batcher, redis_client):
    binder, settings = batcher
    async with aiohttp.ClientSession() as http:
        old_ws, old_session = await _open_session(http, settings.eventsub_ws_url)
        new_ws, new_session = await _open_session(http, settings.eventsub_ws_url)
        older, newer = await asyncio.gather(binder.submit("0", old_session, "w"), binder.submit("0", new_session, "w"))
        await old_ws.close()
        await new_ws.close()
    recorded = msgspec.json.decode(await redis_client.hget(Keys().shards, "0"), type=ShardState)

    assert older.ok is False
    assert "superseded" in older.error
    assert newer.ok is True
    assert recorded.session_id == new_session
