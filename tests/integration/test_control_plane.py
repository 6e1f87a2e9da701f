"""The coordinator's control plane: HTTP API, stats, reconciliation, shard health, revocations."""

from __future__ import annotations

import aiohttp
import orjson
import pytest

from common.channels import ChannelStore

pytestmark = pytest.mark.timeout(120)


async def test_api_reports_conduit_and_workers(fleet):
    fleet.shard_count = 6
    fleet.extra_env["CF_STATS_INTERVAL_S"] = "2"
    await fleet.start(workers=2)
    await fleet.add_channels(10, ["stream.online:1", "channel.update:2"])
    await fleet.wait_ready(subscriptions=20)

    async def stats_current() -> bool:
        status, body = await fleet.api("/api/stats")
        # The cost comes from the reconciler's last pass, which may end before the last create returns.
        return (status == 200 and body["enabled_shards"] == 6 and body["total_subscriptions"] == 21
                and body["total_cost"] == 20)

    # 10 channels x 2 types, and conduit.shard.disabled for the conduit itself.
    await fleet.wait_for(stats_current, 15, "stats with 6 enabled shards, 21 subscriptions and a cost of 20")
    _, stats = await fleet.api("/api/stats")
    _, shards = await fleet.api("/api/shards")
    _, workers = await fleet.api("/api/workers")
    _, health = await fleet.api("/healthz")
    conduit_id = (await fleet.redis.hget(fleet.keys.conduit, "id")).decode()

    assert stats["conduit_id"] == conduit_id
    assert stats["total_shards"] == 6
    assert stats["disabled_shards"] == 0
    assert stats["total_cost"] == 20
    assert stats["max_total_cost"] == 10_000
    assert stats["usage_percentage"] == pytest.approx(0.2)
    assert shards["total"] == 6
    assert {row["worker"] for row in shards["data"]} == {"worker-1", "worker-2"}
    assert sorted(row["shards"] for row in workers["data"]) == [3, 3]
    assert health["ok"] is True
    assert health["leader"] is True


async def test_removed_channel_subscriptions_deleted(fleet):
    fleet.shard_count = 2
    await fleet.start(workers=1)
    await fleet.add_channels(5, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=5)

    await ChannelStore(fleet.redis, fleet.keys).remove(["1000", "1001"])

    async def orphans_gone() -> bool:
        page = await fleet.helix("GET", "/eventsub/subscriptions")
        ids = {sub["condition"]["broadcaster_user_id"] for sub in page["data"] if sub["type"] == "stream.online"}
        return ids == {"1002", "1003", "1004"}

    await fleet.wait_for(orphans_gone, 20, "the removed channels' subscriptions deleted")


async def test_disabled_shard_repaired_by_health_poll(fleet):
    fleet.shard_count = 2
    fleet.extra_env["CF_SHARD_HEALTH_POLL_S"] = "5"
    await fleet.start(workers=1)
    await fleet.add_channels(2, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=2)
    conduit_id = (await fleet.redis.hget(fleet.keys.conduit, "id")).decode()

    # Someone else points shard 0 at their own session and then closes it: the fleet's socket is
    # still open, so only the health poll can notice that Twitch shows the shard disabled.
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"ws://127.0.0.1:{fleet.emulator_port}/ws")
        session_id = (await ws.receive_json())["payload"]["session"]["id"]
        answer = await fleet.helix("PATCH", "/eventsub/conduits/shards", {
            "conduit_id": conduit_id, "shards": [{"id": "0", "transport": {"method": "websocket", "session_id": session_id}}]})
        assert answer["data"][0]["id"] == "0"
        await ws.close()

    async def disabled() -> bool:
        return (await fleet.twitch_shards())["0"]["status"] != "enabled"

    await fleet.wait_for(disabled, 5, "shard 0 disabled")

    async def repaired() -> bool:
        shard = (await fleet.twitch_shards())["0"]
        return shard["status"] == "enabled" and shard["transport"]["session_id"] != session_id

    await fleet.wait_for(repaired, 15, "shard 0 repaired")


async def test_revocation_published_as_entry(fleet):
    fleet.shard_count = 2
    await fleet.start(workers=1)
    await fleet.add_channels(1, ["channel.chat.message:1"])
    await fleet.wait_ready(subscriptions=1)
    subscription = (await fleet.helix("GET", "/eventsub/subscriptions", type="channel.chat.message"))["data"][0]

    await fleet.control("POST", "/revoke", {"subscription_ids": [subscription["id"]], "status": "authorization_revoked"})
    async def revocation_published() -> bool:
        return any(e["kind"] == b"revocation" for e in await fleet.stream_entries())

    await fleet.wait_for(revocation_published, 10, "the revocation entry")
    entry = next(e for e in await fleet.stream_entries() if e["kind"] == b"revocation")

    assert entry["kind"] == b"revocation"
    assert entry["subscription_id"] == subscription["id"].encode()
    assert orjson.loads(entry["event"])["status"] == "authorization_revoked"
    assert entry["broadcaster_user_id"] == b"1000"
