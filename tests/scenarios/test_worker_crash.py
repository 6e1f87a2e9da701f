"""S18: a worker holding 50 shards is killed under load."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.fleet import TIME_SCALE

pytestmark = pytest.mark.timeout(180)

WORKER_LEASE_S = 10.0  # CF_WORKER_LEASE_S default, in Twitch-scale seconds


async def test_killed_worker_under_load(fleet):
    fleet.shard_count = 100
    await fleet.start(workers=2)
    await fleet.add_channels(200, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=200, timeout_s=90)
    victim = {s for s, w in (await fleet.assignment()).items() if w == "worker-1"}
    assert len(victim) == 50

    run = await fleet.control("POST", "/generate", {"rate": 1000, "count": 10_000})
    await fleet.wait_published(2000)
    fleet.kill("worker-1")
    killed_at = time.monotonic()
    await fleet.wait_for(fleet.all_shards_enabled, (WORKER_LEASE_S + 5) * TIME_SCALE + 3, "every shard enabled again")
    took_s = (time.monotonic() - killed_at) / TIME_SCALE

    async def finished() -> bool:
        return (await fleet.control("GET", f"/generate/{run['id']}"))["done"]

    await fleet.wait_for(finished, 30, "the generator to finish")
    counters = await fleet.control("GET", "/counters")
    expected = counters["sent"] - counters["dropped_disabled"]
    await fleet.wait_published(expected - 50)
    await asyncio.sleep(1)
    published = await fleet.published_count()
    lost_by_us = expected - published
    print(f"rebind {took_s:.1f} s (emulator time); Twitch dropped {counters['dropped_disabled']}, "
          f"lost by us {lost_by_us}")

    assert took_s <= WORKER_LEASE_S + 5
    assert counters["dropped_disabled"] > 0
    assert published <= expected
    assert lost_by_us <= 20
