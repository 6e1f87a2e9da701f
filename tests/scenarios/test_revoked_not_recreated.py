"""A revoked chat subscription is published as a revocation, marked "needs re-consent" and not
created again until an operator clears it."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from common.channels import EntryStateStore

pytestmark = pytest.mark.timeout(120)


async def _chat_subscription(fleet, broadcaster_id: str) -> dict | None:
    page = await fleet.helix("GET", "/eventsub/subscriptions", status="enabled")
    for sub in page["data"]:
        if sub["type"] == "channel.chat.message" and sub["condition"]["broadcaster_user_id"] == broadcaster_id:
            return sub
    return None


async def test_revoked_chat_waits_for_clear(fleet):
    fleet.shard_count = 2
    fleet.extra_env["CF_RECONCILE_INTERVAL_S"] = "5"
    await fleet.start(workers=1)
    await fleet.add_channels(2, ["channel.chat.message:1"])
    await fleet.wait_ready(subscriptions=3)
    revoked = await _chat_subscription(fleet, "1000")
    store = EntryStateStore(fleet.redis, fleet.keys)

    await fleet.control("POST", "/revoke", {"subscription_ids": [revoked["id"]], "status": "authorization_revoked"})

    async def revocation_published() -> bool:
        return any(entry.get("kind") == b"revocation" and entry.get("subscription_id") == revoked["id"].encode()
                   for entry in await fleet.stream_entries())

    async def marked() -> bool:
        states = await store.load()
        return any(s.state == "needs_reconsent" and s.broadcaster_user_id == "1000" for s in states.values())

    await fleet.wait_for(revocation_published, 15, "the revocation entry in the stream")
    await fleet.wait_for(marked, 15, "the entry marked needs_reconsent")
    counters = await fleet.control("GET", "/counters")
    creates_before = counters["helix_calls"].get("POST /eventsub/subscriptions", 0)
    await asyncio.sleep(3.0)  # three reconcile intervals at time scale 0.2
    counters = await fleet.control("GET", "/counters")
    state = next(iter((await store.load()).values()))

    assert counters["helix_calls"].get("POST /eventsub/subscriptions", 0) == creates_before
    assert await _chat_subscription(fleet, "1000") is None
    assert "authorization_revoked" in state.reason
    assert await fleet.redis.hexists(fleet.keys.channels, "1000")

    cleared = subprocess.run([sys.executable, "-m", "common.cli", "channels", "clear", "1000"], env=fleet.env(),
                             capture_output=True, text=True, timeout=30)

    async def recreated() -> bool:
        return await _chat_subscription(fleet, "1000") is not None

    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.startswith("cleared 1 ")
    await fleet.wait_for(recreated, 15, "the chat subscription created again after the clear")
