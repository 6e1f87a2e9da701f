"""Get Subscriptions lists a status the client does not know."""

from __future__ import annotations

import logging

import pytest

from tests.reconcile_harness import make_harness

pytestmark = pytest.mark.timeout(60)


async def test_unknown_status_not_enabled_logged_once(start_emulator, redis_client, http, caplog):
    harness = await make_harness(start_emulator, redis_client, http)
    await harness.add_channels(["5000"], ["stream.online:1"])
    await harness.reconciler.reconcile_once()
    real = [s for s in await harness.twitch_subscriptions() if s["type"] == "stream.online"][0]
    conduit = {"method": "conduit", "conduit_id": harness.conduit.conduit_id}
    odd = {**real, "version": "1", "status": "some_new_status", "transport": conduit}
    page = {"data": [odd], "total": 1, "total_cost": 1, "max_total_cost": 10000, "pagination": {}}
    await harness.control("POST", "/faults", {"method": "GET", "path": "/eventsub/subscriptions", "status": 200,
                                              "body": page, "count": 2})

    with caplog.at_level(logging.WARNING, logger="coordinator.reconciler"):
        first = await harness.reconciler.reconcile_once()
        second = await harness.reconciler.reconcile_once()
    mentions = [record for record in caplog.records if "some_new_status" in record.getMessage()]

    assert len(mentions) == 1
    assert first.existing == 0
    assert first.deleted == 1
    assert first.created + first.exists == 2
    assert second.failed == 0
