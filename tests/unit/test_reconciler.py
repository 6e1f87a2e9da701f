"""The reconciler against the in-process emulator: cost budget, revocations, progress, shard growth."""

from __future__ import annotations

import pytest

from tests.reconcile_harness import make_harness

IDS = [str(6000 + i) for i in range(5)]


async def test_cost_budget_blocks_costly_types(start_emulator, redis_client, http):
    harness = await make_harness(start_emulator, redis_client, http, max_total_cost=3)
    await harness.add_channels(IDS, ["stream.online:1", "channel.chat.message:1"])

    report = await harness.reconciler.reconcile_once()
    states = await harness.entry_states()
    alerts = await harness.alerts()
    chat = [s for s in await harness.twitch_subscriptions() if s["type"] == "channel.chat.message"]

    assert report.created == 3 + 5 + 1  # 3 costly, 5 chat, conduit.shard.disabled
    assert report.blocked_by_cost == 2
    assert len(chat) == 5
    assert sorted(state.state for state in states.values()) == ["blocked_by_cost"] * 2
    assert [(a["name"], a["severity"]) for a in alerts] == [("subscription_cost_limit", "critical")]


async def test_cost_blocked_created_when_budget_frees(start_emulator, redis_client, http):
    # One call at a time creates the first three channels, so removing two of them frees their cost.
    harness = await make_harness(start_emulator, redis_client, http, max_total_cost=3,
                                 fleet={"reconcile_concurrency": 1})
    await harness.add_channels(IDS, ["stream.online:1"])
    await harness.reconciler.reconcile_once()

    await harness.channels.remove(IDS[:2])
    report = await harness.reconciler.reconcile_once()
    alerts = await harness.alerts()

    assert report.deleted == 2
    assert report.created == 2
    assert report.blocked_by_cost == 0
    assert await harness.entry_states() == {}
    assert [a["state"] for a in alerts] == ["firing", "resolved"]


async def test_version_removed_marked_with_alert(start_emulator, redis_client, http):
    harness = await make_harness(start_emulator, redis_client, http)
    await harness.add_channels(IDS[:1], ["channel.update:2"])
    await harness.reconciler.reconcile_once()
    sub = [s for s in await harness.twitch_subscriptions() if s["type"] == "channel.update"][0]
    await harness.control("POST", "/revoke", {"subscription_ids": [sub["id"]], "status": "version_removed"})

    first = await harness.reconciler.reconcile_once()
    second = await harness.reconciler.reconcile_once()
    states = list((await harness.entry_states()).values())
    alerts = await harness.alerts()

    assert [state.state for state in states] == ["version_removed"]
    assert "version_removed" in states[0].reason
    assert first.deleted == 1
    assert second.created == 0
    assert second.needs_human == 1
    assert [(a["name"], a["severity"]) for a in alerts] == [("subscription_version_removed", "critical")]


async def test_progress_written_to_redis(start_emulator, redis_client, http):
    harness = await make_harness(start_emulator, redis_client, http)
    await harness.add_channels(IDS, ["stream.online:1"])

    await harness.reconciler.reconcile_once()
    progress = await harness.progress()

    assert progress["state"] == "done"
    assert progress["desired"] == "6"
    assert progress["to_create"] == "6"
    assert progress["done"] == "6"
    assert progress["remaining"] == "0"
    assert progress["failed"] == "0"
    assert progress["eta_s"] == "0"
    assert float(progress["rate_per_s"]) >= 0
    assert int(progress["finished_at_ms"]) >= int(progress["started_at_ms"]) > 0


async def test_shard_count_grows_with_subscriptions(start_emulator, redis_client, http):
    harness = await make_harness(start_emulator, redis_client, http,
                                 fleet={"shard_count": 1, "subscriptions_per_shard": 2})
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(harness.keys.resize_channel)
    await harness.add_channels(IDS, ["stream.online:1"])

    await harness.reconciler.reconcile_once()
    desired = await redis_client.hget(harness.keys.conduit, "desired_shard_count")
    await harness.channels.remove(IDS)
    await harness.reconciler.reconcile_once()
    after_removal = await redis_client.hget(harness.keys.conduit, "desired_shard_count")
    messages = []
    for _ in range(5):  # the subscribe confirmation also reads as None here
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
        if message is not None:
            messages.append(message["data"])
    await pubsub.aclose()

    assert desired == b"3"  # 6 subscriptions, 2 per shard
    assert after_removal == b"3"  # never shrunk automatically
    assert messages == [b"3"]


@pytest.mark.parametrize("per_shard", [0, 1000])
async def test_shard_count_unchanged_below_target(start_emulator, redis_client, http, per_shard):
    harness = await make_harness(start_emulator, redis_client, http,
                                 fleet={"shard_count": 2, "subscriptions_per_shard": per_shard})
    await harness.add_channels(IDS, ["stream.online:1"])

    await harness.reconciler.reconcile_once()

    assert await redis_client.hget(harness.keys.conduit, "desired_shard_count") is None
