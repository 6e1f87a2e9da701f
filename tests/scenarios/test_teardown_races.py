"""S2 and S6: teardown racing a new bind stays confined to its shard; only the newest session binds."""

from __future__ import annotations

import asyncio

import pytest

from common.settings import Settings
from shard_worker.worker import ShardWorker

pytestmark = pytest.mark.timeout(120)


async def test_teardown_during_rebind_is_confined(fleet):
    fleet.shard_count = 4
    await fleet.start_emulator()
    fleet.start_coordinator()
    worker = ShardWorker(Settings.from_env(fleet.env(CF_WORKER_ID="in-process")))
    await worker.start()
    try:
        await fleet.add_channels(4, ["stream.online:1"])
        await fleet.wait_ready(subscriptions=4)

        async def all_bound() -> bool:
            # Twitch shows a shard enabled a moment before the worker has the bind result.
            return len(worker.sessions) == 4 and all(
                session.current is not None and session.state.value == "bound" for session in worker.sessions.values())

        await fleet.wait_for(all_bound, 10, "the worker to see every bind result")
        before = {shard_id: session.current for shard_id, session in worker.sessions.items()}

        # Keepalive loss on shard 1: the watchdog tears the old socket down while the new one binds.
        await fleet.control("POST", "/sessions/drop", {"shard_ids": ["1"], "mode": "silent"})
        old = before["1"]

        async def replaced() -> bool:
            session = worker.sessions["1"]
            return session.current is not old and session.state.value == "bound"

        await fleet.wait_for(replaced, 15, "shard 1 bound on a new socket")
        # More teardown calls on the retired socket, at once, change nothing.
        await asyncio.gather(old.close("again"), old.close("and again"), old.close("once more"))
        await fleet.wait_for(fleet.all_shards_enabled, 5, "every shard enabled")

        for shard_id in ("0", "2", "3"):
            assert worker.sessions[shard_id].current is before[shard_id], f"shard {shard_id} got a new socket"
        assert not worker.sessions["1"].current.closed
        assert not worker.crashed.is_set()
        assert worker.watchdog.timeouts == 1
    finally:
        await worker.close()


async def test_stale_session_loses_to_newest(fleet):
    fleet.shard_count = 2
    await fleet.start(workers=1)
    await fleet.add_channels(2, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=2)
    current = (await fleet.twitch_shards())["0"]["transport"]["session_id"]

    # A session that closed before its bind is reported "not connected": the worker keeps going
    # with a fresh session and binds only the newest one.
    await fleet.control("POST", "/faults", {"kind": "shard_error", "shard_ids": ["0"], "count": 1})
    await fleet.control("POST", "/sessions/drop", {"shard_ids": ["0"], "mode": "abrupt"})

    async def rebound() -> bool:
        shard = (await fleet.twitch_shards())["0"]
        return shard["status"] == "enabled" and shard["transport"]["session_id"] != current

    await fleet.wait_for(rebound, 15, "shard 0 bound again")
    sessions = await fleet.sessions_of("0")
    newest = (await fleet.twitch_shards())["0"]["transport"]["session_id"]

    assert [s["id"] for s in sessions] == [newest]
