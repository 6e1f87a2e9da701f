"""A coordinator and two other processes making Helix calls share one bucket of 100 points and never
run it empty. Workers make no Helix calls, so `tests.helix_caller` takes their place."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)


async def test_processes_share_budget_without_429(fleet):
    # 100 points per Twitch minute at time scale 0.2: the bucket has 100 points and refills 8.3 per s.
    fleet.shard_count = 2
    fleet.extra_env["CF_RECONCILE_CONCURRENCY"] = "4"
    await fleet.start_emulator(EMULATOR_RATE_LIMIT_PER_MIN="100")
    fleet.start_coordinator()
    fleet.start_worker("worker-1")
    fleet.start_worker("worker-2")
    await fleet.add_channels(60, ["stream.online:1"])

    callers = [asyncio.to_thread(subprocess.run, [sys.executable, "-m", "tests.helix_caller", "40"],
                                 env=fleet.env(), capture_output=True, text=True, timeout=90)
               for _ in range(2)]
    results = await asyncio.gather(*callers)
    await fleet.wait_ready(subscriptions=61, timeout_s=60)
    counters = await fleet.control("GET", "/counters")

    for result in results:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "rate_limited_429=0"
    assert counters["rate_limited"] == 0
    assert counters["helix_calls"]["GET /eventsub/conduits"] >= 80
