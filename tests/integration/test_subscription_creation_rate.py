"""Creating many subscriptions from scratch: the pace the shared bucket allows, no 429 from running it
empty, and a coordinator killed halfway whose successor finishes without duplicates.

The default run creates 5,000; `pytest -m scale` runs the 100,000 of docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from common.channels import ChannelStore, make_channel
from common.keys import Keys
from common.local import LOOPBACK, ManagedProcess, emulator_env, fleet_env, free_port, python_module, wait_for_port

RATE_PER_MIN = 800  # Twitch's observed bucket; the emulator's default


class CreationRun:
    """An emulator and coordinator processes with no workers: only the reconciler does Helix work."""

    def __init__(self, tmp_path, redis_port: int, redis_client, *, time_scale: float) -> None:
        self.tmp_path = tmp_path
        self.redis_port = redis_port
        self.redis = redis_client
        self.time_scale = time_scale
        self.emulator_port = free_port()
        self.keys = Keys()
        self.processes: list[ManagedProcess] = []

    @property
    def bucket_rate_per_s(self) -> float:
        return RATE_PER_MIN / (60 * self.time_scale)

    async def start_emulator(self) -> None:
        env = emulator_env(port=self.emulator_port, time_scale=self.time_scale, extra={
            "EMULATOR_MAX_TOTAL_COST": "10000000", "EMULATOR_HELIX_LOG_SIZE": "0",
        })
        self.processes.append(ManagedProcess("emulator", python_module("common.cli", "emulator"), env,
                                             self.tmp_path).start())
        await asyncio.to_thread(wait_for_port, self.emulator_port)

    def start_coordinator(self, name: str) -> ManagedProcess:
        # Leases are in Twitch seconds and shrink with the time scale, so they are lengthened here
        # to stay above a busy event loop's pauses.
        env = fleet_env(redis_port=self.redis_port, emulator_port=self.emulator_port, time_scale=self.time_scale,
                        http_port=free_port(), extra={
                            "CF_SHARD_COUNT": "1", "CF_LEADER_LEASE_S": "100", "CF_LEADER_RENEW_S": "10",
                            "CF_RECONCILE_INTERVAL_S": "100000", "CF_RECONCILE_CONCURRENCY": "16",
                            "CF_SUBSCRIPTIONS_PER_SHARD": "0", "CF_STATS_INTERVAL_S": "600",
                        })
        process = ManagedProcess(name, python_module("common.cli", "coordinator"), env, self.tmp_path).start()
        self.processes.append(process)
        return process

    async def progress(self) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.reconcile)
        return {key.decode(): value.decode() for key, value in raw.items()}

    async def emulator(self, path: str) -> dict:
        import aiohttp
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{LOOPBACK}:{self.emulator_port}/_emulator{path}") as response:
                return await response.json()

    async def wait_for(self, check, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await check():
                return
            await asyncio.sleep(0.2)
        logs = "\n".join(f"== {p.name}\n{p.output()[-3000:]}" for p in self.processes)
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{logs}")

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop(10)


async def _create_from_scratch(tmp_path, redis_port, redis_client, *, channels: int, time_scale: float) -> dict:
    run = CreationRun(tmp_path, redis_port, redis_client, time_scale=time_scale)
    try:
        await run.start_emulator()
        await ChannelStore(redis_client, run.keys).add(
            make_channel(str(10_000_000 + i), types=["stream.online:1"]) for i in range(channels))
        expected = channels + 1  # and conduit.shard.disabled
        first = run.start_coordinator("coordinator-1")

        async def created(count: int):
            async def check() -> bool:
                return int((await run.progress()).get("created", 0)) >= count
            return check

        budget_s = expected / run.bucket_rate_per_s * 3 + 60
        await run.wait_for(await created(expected // 10), budget_s, "10 % created")
        steady_from = (time.monotonic(), int((await run.progress())["created"]))
        await run.wait_for(await created(expected // 2), budget_s, "half created")
        steady_to = (time.monotonic(), int((await run.progress())["created"]))
        first.kill()
        killed_at = time.monotonic()
        run.start_coordinator("coordinator-2")

        async def finished() -> bool:
            state = await run.emulator("/state")
            return state["subscriptions"]["by_status"].get("enabled", 0) >= expected

        await run.wait_for(finished, budget_s, f"{expected} enabled subscriptions")
        finished_at = time.monotonic()

        async def successor_done() -> bool:
            progress = await run.progress()
            return progress.get("state") == "done" and progress.get("run") == "1"

        await run.wait_for(successor_done, 60, "the successor's pass to finish")
        state = await run.emulator("/state")
        counters = await run.emulator("/counters")
        progress = await run.progress()
        return {
            "expected": expected,
            "subscriptions": state["subscriptions"]["total"],
            "enabled": state["subscriptions"]["by_status"].get("enabled", 0),
            "posts": counters["helix_calls"].get("POST /eventsub/subscriptions", 0),
            "list_pages": counters["helix_calls"].get("GET /eventsub/subscriptions", 0),
            "rate_limited": counters["rate_limited"],
            "bucket_rate_per_s": run.bucket_rate_per_s,
            "steady_rate_per_s": (steady_to[1] - steady_from[1]) / (steady_to[0] - steady_from[0]),
            "successor_existing": int(progress["existing"]),
            "successor_created": int(progress["created"]),
            "successor_exists": int(progress["exists"]),
            "resume_s": finished_at - killed_at,
        }
    finally:
        run.close()


def _check(result: dict) -> None:
    print("subscription creation:", result)
    assert result["rate_limited"] == 0
    assert result["subscriptions"] == result["expected"]
    assert result["enabled"] == result["expected"]
    assert result["steady_rate_per_s"] >= 0.95 * result["bucket_rate_per_s"]
    # The successor adopts what exists; only calls in flight at the kill may be sent twice (409).
    assert result["successor_existing"] + result["successor_created"] + result["successor_exists"] == result["expected"]
    assert result["successor_exists"] <= 16
    assert result["posts"] - result["expected"] <= 16


@pytest.mark.timeout(300)
async def test_5k_created_at_bucket_rate(tmp_path, redis_client, redis_port):
    # 800 points per Twitch minute at time scale 0.1 is 133 points per real second.
    result = await _create_from_scratch(tmp_path, redis_port, redis_client, channels=5_000, time_scale=0.1)
    _check(result)


@pytest.mark.scale
@pytest.mark.timeout(3600)
async def test_100k_created_at_bucket_rate(tmp_path, redis_client, redis_port):
    time_scale = float(os.environ.get("CF_SCALE_TIME_SCALE", "0.04"))
    result = await _create_from_scratch(tmp_path, redis_port, redis_client, channels=100_000, time_scale=time_scale)
    _check(result)
