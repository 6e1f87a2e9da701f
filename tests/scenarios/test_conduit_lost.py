"""S3: the conduit is deleted while the fleet runs, or before a restart with the cached id."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.timeout(120)


async def _alerts(fleet) -> list[dict]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in await fleet.redis.xrange(fleet.keys.alerts)]


async def _recovered_on_new_conduit(fleet, old_id: str, subscriptions: int) -> None:
    async def recovered() -> bool:
        conduit_id = (await fleet.redis.hget(fleet.keys.conduit, "id") or b"").decode()
        if conduit_id in ("", old_id) or not await fleet.all_shards_enabled():
            return False
        page = await fleet.helix("GET", "/eventsub/subscriptions", status="enabled")
        on_new = [s for s in page["data"]
                  if s["transport"].get("conduit_id") == conduit_id and s["type"] == "stream.online"]
        return len(on_new) == subscriptions

    await fleet.wait_for(recovered, 30, "shards and subscriptions on a new conduit")


async def test_deleted_conduit_replaced_while_running(fleet):
    fleet.shard_count = 4
    fleet.extra_env["CF_SHARD_HEALTH_POLL_S"] = "10"
    await fleet.start(workers=2)
    await fleet.add_channels(8, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=8)
    old_id = (await fleet.redis.hget(fleet.keys.conduit, "id")).decode()

    deleted = await fleet.helix("DELETE", "/eventsub/conduits", id=old_id)
    assert deleted == {"status": 204}
    await _recovered_on_new_conduit(fleet, old_id, 8)

    lost = [alert for alert in await _alerts(fleet) if alert["name"] == "conduit_lost"]
    assert len(lost) == 1
    assert lost[0]["value"] == old_id
    await fleet.generate(rate=500, count=500)
    await fleet.wait_published(500)


async def test_cached_conduit_gone_before_restart(fleet):
    fleet.shard_count = 4
    await fleet.start(workers=1)
    await fleet.add_channels(4, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=4)
    old_id = (await fleet.redis.hget(fleet.keys.conduit, "id")).decode()

    await fleet.close_process("coordinator")
    await fleet.helix("DELETE", "/eventsub/conduits", id=old_id)
    fleet.start_coordinator()

    await _recovered_on_new_conduit(fleet, old_id, 4)
    assert [alert["value"] for alert in await _alerts(fleet) if alert["name"] == "conduit_lost"] == [old_id]
