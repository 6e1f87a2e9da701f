"""Subscriptions that already exist are adopted at start, and 409 on create counts as "exists"."""

from __future__ import annotations

import pytest

from tests.reconcile_harness import make_harness

pytestmark = pytest.mark.timeout(60)

IDS = [str(2000 + i) for i in range(20)]


async def test_existing_adopted_not_recreated(start_emulator, redis_client, http):
    harness = await make_harness(start_emulator, redis_client, http)
    for broadcaster_id in IDS[:10]:
        await harness.helix.create_subscription("stream.online", "1", {"broadcaster_user_id": broadcaster_id},
                                                harness.conduit.conduit_id)
    await harness.add_channels(IDS, ["stream.online:1"])
    posts_before = await harness.helix_calls("POST /eventsub/subscriptions")

    first = await harness.reconciler.reconcile_once()
    posts_first = await harness.helix_calls("POST /eventsub/subscriptions") - posts_before
    second = await harness.reconciler.reconcile_once()
    posts_second = await harness.helix_calls("POST /eventsub/subscriptions") - posts_before - posts_first
    online = [s for s in await harness.twitch_subscriptions() if s["type"] == "stream.online"]

    assert first.existing == 10
    assert first.created == 11  # 10 channels and conduit.shard.disabled
    assert posts_first == 11
    assert second.created == 0
    assert posts_second == 0
    assert sorted(s["condition"]["broadcaster_user_id"] for s in online) == IDS


async def test_conflict_counts_as_exists(start_emulator, redis_client, http):
    harness = await make_harness(start_emulator, redis_client, http)
    await harness.add_channels(IDS[:5], ["stream.online:1"])
    await harness.reconciler.reconcile_once()
    # Get Subscriptions now answers an empty page once, as after a restart that lost track of them.
    await harness.control("POST", "/faults", {"method": "GET", "path": "/eventsub/subscriptions", "status": 200,
                                              "body": {"data": [], "total": 0, "total_cost": 0,
                                                       "max_total_cost": 10000, "pagination": {}}})

    report = await harness.reconciler.reconcile_once()

    assert report.exists == 6
    assert report.created == 0
    assert report.failed == 0
    assert await harness.entry_states() == {}
    assert len(await harness.twitch_subscriptions()) == 6
