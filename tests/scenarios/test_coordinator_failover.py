"""S20 and S5: the leader dies or stalls; a standby takes over and every shard ends up bound."""

from __future__ import annotations

import signal
import time

import msgspec
import pytest

from common.models import ShardState
from coordinator.fence import Deposed, Fence
from tests.fleet import TIME_SCALE

pytestmark = pytest.mark.timeout(150)

LEADER_LEASE_S = 10.0  # CF_LEADER_LEASE_S default, in Twitch-scale seconds


async def _leader(fleet) -> tuple[str, int]:
    owner = await fleet.redis.get(fleet.keys.leader)
    epoch = await fleet.redis.get(fleet.keys.leader_epoch)
    return (owner or b"").decode(), int(epoch or 0)


async def test_standby_takes_over_killed_leader(fleet):
    fleet.shard_count = 6
    await fleet.start(workers=2)
    await fleet.add_channels(6, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=6)
    fleet.start_coordinator("standby")
    old_owner, old_epoch = await _leader(fleet)

    fleet.kill("coordinator")
    killed_at = time.monotonic()
    # Sessions dropped during the gap enqueue bind jobs that only the next leader can serve.
    await fleet.control("POST", "/sessions/drop", {"shard_ids": ["0", "3"], "mode": "abrupt"})

    async def new_leader() -> bool:
        owner, _ = await _leader(fleet)
        return owner not in ("", old_owner)

    await fleet.wait_for(new_leader, (LEADER_LEASE_S + 5) * TIME_SCALE, "the standby to take the lease")
    took_s = (time.monotonic() - killed_at) / TIME_SCALE
    _, new_epoch = await _leader(fleet)
    await fleet.wait_for(fleet.all_shards_enabled, 20, "every shard enabled under the new leader")
    states = {k.decode(): msgspec.json.decode(v, type=ShardState) for k, v in (await fleet.redis.hgetall(fleet.keys.shards)).items()}

    assert took_s <= LEADER_LEASE_S + 5
    assert new_epoch == old_epoch + 1
    assert states["0"].epoch == new_epoch
    assert states["3"].epoch == new_epoch

    # A write of the deposed leader is rejected by the epoch check.
    stale = Fence(fleet.redis, fleet.keys, old_epoch)
    with pytest.raises(Deposed):
        await stale.hash_update(fleet.keys.assignment, {"0": "ghost"})
    assert (await fleet.assignment())["0"] != "ghost"


async def test_stalled_leader_binds_after_4003(fleet):
    fleet.shard_count = 4
    await fleet.start(workers=1)
    await fleet.add_channels(4, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=4)
    coordinator = fleet.processes["coordinator"]

    # Freeze the only coordinator for longer than Twitch's bind window, then drop every session.
    coordinator.signal(signal.SIGSTOP)
    try:
        await fleet.control("POST", "/sessions/drop", {"all": True, "mode": "abrupt"})

        async def closed_unused() -> bool:
            return (await fleet.control("GET", "/counters"))["closed_4003"] > 0

        await fleet.wait_for(closed_unused, 10, "Twitch to close an unbound session with 4003")
    finally:
        coordinator.signal(signal.SIGCONT)

    await fleet.wait_for(fleet.all_shards_enabled, 30, "every shard bound once the coordinator is back")
