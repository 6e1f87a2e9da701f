"""Resizing the conduit while it runs: grow, then shrink below the original count."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)


def _resize(fleet, count: int) -> str:
    result = subprocess.run([sys.executable, "-m", "common.cli", "conduit", "resize", str(count)], env=fleet.env(),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def _settled_at(fleet, count: int) -> None:
    fleet.shard_count = count

    async def settled() -> bool:
        owned = set(await fleet.assignment())
        return owned == {str(i) for i in range(count)} and await fleet.settled()

    await fleet.wait_for(settled, 20, f"{count} shards bound and assigned")


async def test_grow_then_shrink(fleet):
    fleet.shard_count = 4
    await fleet.start(workers=2)
    await fleet.add_channels(12, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=12)

    assert _resize(fleet, 6).startswith("requested 6 shards")
    await _settled_at(fleet, 6)
    _resize(fleet, 3)
    await _settled_at(fleet, 3)
    await fleet.generate(rate=500, count=600)
    await fleet.wait_published(600)
    counters = await fleet.control("GET", "/counters")

    assert len(await fleet.twitch_shards()) == 3
    assert counters["dropped_disabled"] == 0
    assert await fleet.redis.hlen(fleet.keys.shards) == 3
