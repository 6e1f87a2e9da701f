"""A limit error (429 with points left) fails the entry once with an alert; a real
rate limit (429 with Ratelimit-Remaining 0) waits for the bucket and succeeds; duplicates are deleted."""

from __future__ import annotations

import pytest

from tests.reconcile_harness import make_harness

pytestmark = pytest.mark.timeout(60)

IDS = [str(3000 + i) for i in range(5)]


async def test_limit_error_fails_once_with_alert(start_emulator, redis_client, http):
    harness = await make_harness(start_emulator, redis_client, http)
    await harness.add_channels(IDS, ["stream.online:1"])
    await harness.control("POST", "/faults", {"kind": "subscription_limit", "count": 1})

    first = await harness.reconciler.reconcile_once()
    posts = await harness.helix_calls("POST /eventsub/subscriptions")
    second = await harness.reconciler.reconcile_once()
    states = await harness.entry_states()
    alerts = await harness.alerts()

    assert first.failed == 1
    assert first.created == 5
    assert second.created == 0
    assert await harness.helix_calls("POST /eventsub/subscriptions") == posts
    assert [state.state for state in states.values()] == ["failed"]
    assert "too many subscriptions" in next(iter(states.values())).reason
    assert [alert["name"] for alert in alerts] == ["subscription_limit"]
    assert await redis_client.hlen(harness.keys.channels) == 5


async def test_cleared_limit_error_retried(start_emulator, redis_client, http):
    harness = await make_harness(start_emulator, redis_client, http)
    await harness.add_channels(IDS, ["stream.online:1"])
    await harness.control("POST", "/faults", {"kind": "subscription_limit", "count": 1})
    await harness.reconciler.reconcile_once()
    failed = next(iter((await harness.entry_states()).values()))

    cleared = await harness.states.clear([failed.broadcaster_user_id])
    report = await harness.reconciler.reconcile_once()

    assert cleared == 1
    assert report.created == 1
    assert await harness.entry_states() == {}


async def test_rate_limit_waits_and_retries(start_emulator, redis_client, http):
    harness = await make_harness(start_emulator, redis_client, http)
    await harness.add_channels(IDS, ["stream.online:1"])
    await harness.control("POST", "/faults", {"kind": "rate_limit", "count": 2})

    report = await harness.reconciler.reconcile_once()
    snapshot = await harness.limiter.snapshot()

    assert report.created == 6
    assert report.failed == 0
    assert await harness.entry_states() == {}
    assert snapshot["throttled"] == "2"


async def test_duplicates_deleted(start_emulator, redis_client, http):
    harness = await make_harness(start_emulator, redis_client, http)
    await harness.add_channels(IDS[:1], ["stream.online:1"])
    await harness.reconciler.reconcile_once()
    real = [s for s in await harness.twitch_subscriptions() if s["type"] == "stream.online"][0]
    conduit = {"method": "conduit", "conduit_id": harness.conduit.conduit_id}
    duplicate = {**real, "id": "duplicate-of-" + real["id"], "version": "1", "transport": conduit}
    page = {"data": [{**real, "version": "1", "transport": conduit}, duplicate], "total": 2, "total_cost": 2,
            "max_total_cost": 10000, "pagination": {}}
    await harness.control("POST", "/faults", {"method": "GET", "path": "/eventsub/subscriptions", "status": 200,
                                              "body": page})
    await harness.control("POST", "/counters/reset")

    await harness.reconciler.reconcile_once()
    log = await harness.control("GET", "/helix-log")
    deleted = [entry["query"]["id"] for entry in log if entry["method"] == "DELETE"]

    assert deleted == [duplicate["id"]]
