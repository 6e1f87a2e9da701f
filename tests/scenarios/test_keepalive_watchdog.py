"""S15: a silent socket is declared dead by the watchdog; a retired socket's timer never fires."""

from __future__ import annotations

import asyncio

import pytest

from common.settings import Settings
from shard_worker.worker import ShardWorker
from tests.fleet import KEEPALIVE_GRACE, TIME_SCALE

pytestmark = pytest.mark.timeout(120)

KEEPALIVE_S = 10  # CF_KEEPALIVE_TIMEOUT_S default, in Twitch seconds


async def test_silent_socket_replaced(fleet):
    fleet.shard_count = 4
    await fleet.start(workers=1)
    await fleet.add_channels(4, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=4)
    old = (await fleet.twitch_shards())["1"]["transport"]["session_id"]

    await fleet.control("POST", "/sessions/drop", {"shard_ids": ["1"], "mode": "silent"})

    async def replaced() -> bool:
        shard = (await fleet.twitch_shards())["1"]
        return shard["status"] == "enabled" and shard["transport"]["session_id"] != old

    # Dead after keepalive x grace of silence, then one bind.
    took_s = await fleet.wait_for(replaced, KEEPALIVE_S * KEEPALIVE_GRACE * TIME_SCALE + 5, "shard 1 on a new session")
    assert took_s >= KEEPALIVE_S * TIME_SCALE
    assert await fleet.worker_metric("worker-1", "cf_worker_keepalive_timeouts_total") == 1


async def test_retired_socket_timer_never_fires(fleet):
    fleet.shard_count = 4
    await fleet.start_emulator()
    fleet.start_coordinator()
    worker = ShardWorker(Settings.from_env(fleet.env(CF_WORKER_ID="in-process")))
    await worker.start()
    try:
        await fleet.add_channels(4, ["stream.online:1"])
        await fleet.wait_ready(subscriptions=4)
        old_connections = {shard_id: session.current for shard_id, session in worker.sessions.items()}

        await fleet.control("POST", "/sessions/reconnect", {"all": True})

        async def handed_over() -> bool:
            return all(session.current is not old_connections[shard_id] for shard_id, session in worker.sessions.items())

        await fleet.wait_for(handed_over, 10, "every shard on its reconnected socket")
        # Stay idle for twice the dead-socket limit: only the new sockets' keepalives may arrive.
        await asyncio.sleep(KEEPALIVE_S * KEEPALIVE_GRACE * TIME_SCALE * 2)

        assert len(worker.watchdog) == 4
        assert all(old.closed for old in old_connections.values())
        assert all(old not in worker.watchdog._connections for old in old_connections.values())
        assert worker.watchdog.timeouts == 0
        assert all(session.reconnects == 1 for session in worker.sessions.values())
    finally:
        await worker.close()
