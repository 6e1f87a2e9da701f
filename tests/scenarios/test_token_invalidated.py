"""The app token is invalidated while the fleet runs; the next Helix call gets 401."""

from __future__ import annotations

import pytest

from common.alerts import Alerts
from common.errors import TokenError
from common.token import AppTokenManager
from tests.reconcile_harness import make_harness

pytestmark = pytest.mark.timeout(120)


async def test_invalidated_token_renewed_once(fleet):
    fleet.shard_count = 2
    await fleet.start(workers=1)
    await fleet.add_channels(2, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=3)
    token_before = await fleet.redis.hget(fleet.keys.token, "access_token")

    invalidated = await fleet.control("POST", "/tokens/invalidate")
    await fleet.add_channels(2, ["stream.online:1"], first_id=2000)

    async def created_with_new_token() -> bool:
        page = await fleet.helix("GET", "/eventsub/subscriptions", status="enabled")
        return int(page.get("total", 0)) >= 5

    fleet._token = ""  # the test's own token was invalidated too
    await fleet.wait_for(created_with_new_token, 30, "subscriptions created after the token was renewed")
    token_after = await fleet.redis.hget(fleet.keys.token, "access_token")
    log = await fleet.control("GET", "/helix-log?limit=1000")
    unauthorized = [entry for entry in log if entry["status"] == 401]
    alerts = [fields for _, fields in await fleet.redis.xrange(fleet.keys.alerts)]

    assert invalidated["invalidated"] >= 1
    assert token_after != token_before
    assert 1 <= len(unauthorized) <= 2
    assert await fleet.all_shards_enabled()
    assert not [a for a in alerts if a[b"name"].startswith(b"app_token_renewal")]


async def test_renewal_failures_alert_critical_after_three(start_emulator, redis_client, http):
    harness = await make_harness(start_emulator, redis_client, http)
    broken = harness.settings.replace(client_secret="wrong-secret")
    tokens = AppTokenManager(broken, redis_client, http, alerts=Alerts(redis_client, harness.keys))
    await redis_client.delete(harness.keys.token)

    for _ in range(3):
        with pytest.raises(TokenError):
            await tokens.get()
    alerts = await harness.alerts()

    assert [(a["name"], a["severity"]) for a in alerts] == [
        ("app_token_renewal_failed", "warning"), ("app_token_renewal_failed_repeatedly", "critical")]
    assert all("wrong-secret" not in a["message"] for a in alerts)
