"""Memory per idle shard and bind latency at start, for the fleet, a bare client and TwitchIO.

Each run starts a fresh Redis and emulator, so no run inherits another's sessions or conduits.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from .stack import Stack, bench_env, rss_bytes
from .throughput import percentiles, rfc3339_ms

PATCH_SHARDS = "PATCH /eventsub/conduits/shards"
MEMORY_SETTLE_S = 3.0


def _bench_emulator(**extra: str) -> dict[str, str]:
    return {"EMULATOR_MAX_CONDUITS": "10", "EMULATOR_QUERY_FIELDS_AS_BODY": "true", **extra}


def _spawn_twitchio(stack: Stack, log_dir: Path, conduit_id: str, shards: int) -> None:
    argv = [sys.executable, "-m", "bench.tio", "--emulator", stack.emulator_url, "--conduit-id", conduit_id,
            "--shards", str(shards), "--mode", "hold"]
    stack.spawn("twitchio", argv, bench_env(stack.fleet_env()), cwd=log_dir)


async def memory_run(log_dir: Path, shards: int) -> dict:
    """Return the RSS in bytes of a worker, a bare client and TwitchIO, each holding `shards` idle shards."""
    stack = Stack(log_dir, _bench_emulator(EMULATOR_RATE_LIMIT_PER_MIN="1000000"))
    await stack.start()
    try:
        fleet_conduit = await stack.create_conduit(shards)
        stack.start_coordinator(CF_CONDUIT_ID=fleet_conduit, CF_SHARD_COUNT=str(shards))
        stack.start_worker("worker-1")
        await stack.wait_fleet_settled(["worker-1"], shards, timeout_s=180)

        bare_conduit = await stack.create_conduit(shards)
        stack.spawn("bare", [sys.executable, "-m", "bench.bare", "--emulator", stack.emulator_url,
                             "--conduit-id", bare_conduit, "--shards", str(shards)], bench_env(stack.fleet_env()))
        await stack.wait_enabled(bare_conduit, shards, 120, "the bare client's shards")

        tio_conduit = await stack.create_conduit(shards)
        started = time.monotonic()
        _spawn_twitchio(stack, log_dir, tio_conduit, shards)
        await stack.wait_enabled(tio_conduit, shards, 300, "TwitchIO's shards")
        twitchio_bind_s = time.monotonic() - started

        await asyncio.sleep(MEMORY_SETTLE_S)
        stack.check_alive()
        return {"shards": shards, "worker": rss_bytes(stack.pid("worker-1")), "bare": rss_bytes(stack.pid("bare")),
                "twitchio": rss_bytes(stack.pid("twitchio")), "twitchio_bind_s": twitchio_bind_s}
    finally:
        await stack.close()


async def _watch_enabled(stack: Stack, conduit_of, shards: int, timeout_s: float) -> tuple[str, dict[str, float], float]:
    """Poll the emulator state until `shards` shards are enabled; return the conduit, first-seen times, end time.

    `conduit_of(state)` picks the conduit id to watch, or "" while there is none yet.
    """
    first_seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    conduit_id = ""
    while time.monotonic() < deadline:
        state = await stack.control("GET", "/state")
        now = time.time()
        conduit_id = conduit_id or conduit_of(state)
        for conduit in state["conduits"]:
            if conduit["id"] != conduit_id:
                continue
            for shard in conduit["shards"]:
                if shard["status"] == "enabled":
                    first_seen.setdefault(shard["id"], now)
        if len(first_seen) >= shards:
            return conduit_id, first_seen, now
        stack.check_alive()
        await asyncio.sleep(0.025)
    raise RuntimeError(f"only {len(first_seen)} of {shards} shards enabled within {timeout_s:.0f} s; "
                       f"logs in {stack.log_dir}")


async def _bind_report(stack: Stack, conduit_id: str, first_seen: dict[str, float], started_s: float,
                       all_enabled_s: float) -> dict:
    """Turn first-seen times into welcome-to-enabled latencies, refined by the Update Conduit Shards log.

    A shard became enabled when the Update Conduit Shards call that enabled it returned: the newest
    call logged (at its end) no later than the poll that first saw the shard enabled.
    """
    log = await stack.control("GET", "/helix-log?limit=100000")
    patch_ends = sorted(rfc3339_ms(entry["at"]) / 1000 for entry in log
                        if entry["method"] == "PATCH" and entry["path"] == "/eventsub/conduits/shards"
                        and entry["status"] < 400)
    shards = {shard["id"]: shard for conduit in (await stack.control("GET", "/state"))["conduits"]
              if conduit["id"] == conduit_id for shard in conduit["shards"]}
    latencies, welcomes = [], []
    for shard_id, seen in first_seen.items():
        enabled = max((end for end in patch_ends if end <= seen + 0.002), default=seen)
        welcome = rfc3339_ms(shards[shard_id]["transport"]["connected_at"]) / 1000
        welcomes.append(welcome)
        latencies.append((enabled - welcome) * 1000)
    counters = await stack.control("GET", "/counters")
    return {"welcome_to_enabled_ms": percentiles(latencies),
            "start_to_all_enabled_s": all_enabled_s - started_s,
            "first_welcome_to_all_enabled_s": all_enabled_s - min(welcomes),
            "update_shards_calls": int(counters["helix_calls"].get(PATCH_SHARDS, 0)),
            "sessions_opened": int(counters.get("sessions_opened", 0))}


async def bind_fleet_run(log_dir: Path, shards: int, workers: int) -> dict:
    """Start a coordinator and `workers` workers from cold on a new conduit of `shards` shards."""
    stack = Stack(log_dir, _bench_emulator(EMULATOR_HELIX_LOG_SIZE="100000"))
    await stack.start()
    try:
        started = time.time()
        stack.start_coordinator(CF_SHARD_COUNT=str(shards))
        for index in range(workers):
            stack.start_worker(f"worker-{index + 1}")

        def fleet_conduit(state: dict) -> str:
            return state["conduits"][0]["id"] if state["conduits"] else ""

        conduit_id, first_seen, done = await _watch_enabled(stack, fleet_conduit, shards, timeout_s=180)
        result = await _bind_report(stack, conduit_id, first_seen, started, done)
        logs = "".join(stack.processes[f"worker-{index + 1}"].output() for index in range(workers))
        result["failed_binds_logged"] = logs.count("session failed (bind_failed")
        result["bind_enqueue_too_many_connections"] = logs.count("enqueueing the bind job failed: Too many connections")
        return result
    finally:
        await stack.close()


async def bind_twitchio_run(log_dir: Path, shards: int) -> dict:
    """Start TwitchIO's AutoClient with a new conduit of `shards` shards (it binds 10 per call)."""
    stack = Stack(log_dir, _bench_emulator(EMULATOR_HELIX_LOG_SIZE="100000"))
    await stack.start()
    try:
        started = time.time()
        _spawn_twitchio(stack, log_dir, "new", shards)

        def new_conduit(state: dict) -> str:
            return state["conduits"][0]["id"] if state["conduits"] else ""

        conduit_id, first_seen, done = await _watch_enabled(stack, new_conduit, shards, timeout_s=300)
        return await _bind_report(stack, conduit_id, first_seen, started, done)
    finally:
        await stack.close()
