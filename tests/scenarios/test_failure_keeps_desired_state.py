"""A subscription call that fails never removes the entry from the desired state."""

from __future__ import annotations

import pytest

from tests.reconcile_harness import make_harness

pytestmark = pytest.mark.timeout(60)

IDS = [str(4000 + i) for i in range(6)]


async def test_server_errors_pause_then_resume(start_emulator, redis_client, http):
    harness = await make_harness(start_emulator, redis_client, http, fleet={"reconcile_concurrency": 1})
    await harness.add_channels(IDS, ["stream.online:1"])
    await harness.control("POST", "/faults", {"method": "POST", "path": "/eventsub/subscriptions",
                                              "status": 503, "count": 5})

    paused = await harness.reconciler.reconcile_once()
    progress = await harness.progress()
    states = await harness.entry_states()
    channels_after_failure = await redis_client.hlen(harness.keys.channels)
    harness.helix.breaker.record_success()  # the cooldown has passed
    resumed = await harness.reconciler.reconcile_once()

    assert paused.paused
    assert progress["state"] == "paused"
    assert "503" in progress["error"]
    assert [state.retryable for state in states.values()] == [True]
    assert channels_after_failure == 6
    assert resumed.created == 7
    assert await harness.entry_states() == {}


async def test_rejected_entry_kept_with_reason(start_emulator, redis_client, http):
    harness = await make_harness(start_emulator, redis_client, http)
    await harness.add_channels(IDS, ["channel.chat.message:1"])
    await harness.control("POST", "/deauthorize", {"user_ids": [IDS[0]]})

    report = await harness.reconciler.reconcile_once()
    states = await harness.entry_states()
    stored = await harness.channels.list()

    assert report.failed == 1
    assert [state.broadcaster_user_id for state in states.values()] == [IDS[0]]
    assert next(iter(states.values())).reason.startswith("403")
    assert [channel.broadcaster_user_id for channel in stored] == IDS
    assert "subscription_rejected" in [alert["name"] for alert in await harness.alerts()]
