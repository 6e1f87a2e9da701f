"""LeaderLease election and takeover, and Fence epoch checks, against the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from common.keys import Keys
from common.settings import Settings
from common.tasks import cancel_and_wait
from coordinator.fence import Deposed, Fence
from coordinator.leader import LeaderLease

# Lease 10 s and renew 3 s times 0.02: a 200 ms lease renewed every 60 ms, standbys poll every 20 ms.
SETTINGS = Settings.from_env({}, leader_lease_s=10.0, leader_renew_s=3.0, time_scale=0.02)
KEYS = Keys("cf:")


class Candidate:
    """One LeaderLease running in a task, recording its callbacks."""

    def __init__(self, client: redis.Redis, owner_id: str) -> None:
        self.lease = LeaderLease(SETTINGS, client, owner_id)
        self.elected_epochs: list[int] = []
        self.deposed = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def _on_elected(self, epoch: int) -> None:
        self.elected_epochs.append(epoch)

    async def _on_deposed(self) -> None:
        self.deposed.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self.lease.run(self._on_elected, self._on_deposed))

    async def stop(self) -> None:
        if self.task is not None:
            await cancel_and_wait([self.task])
            assert self.task.done(), "the lease task ignored its cancellation"
            self.task = None


async def wait_until(condition, timeout_s: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


@pytest.fixture
async def second_client(redis_port: int, redis_client: redis.Redis) -> AsyncIterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    yield client
    await client.aclose()


@pytest.fixture
async def candidates(redis_client: redis.Redis, second_client: redis.Redis) -> AsyncIterator[tuple[Candidate, Candidate]]:
    first = Candidate(redis_client, "coord-a")
    second = Candidate(second_client, "coord-b")
    yield first, second
    await first.stop()
    await second.stop()


async def test_lease_one_leader_elected(candidates: tuple[Candidate, Candidate], redis_client: redis.Redis) -> None:
    first, second = candidates
    first.start()
    second.start()

    await wait_until(lambda: first.lease.is_leader or second.lease.is_leader)
    # Three lease lengths: renewals must keep the same single leader.
    await asyncio.sleep(0.6)

    leaders = [c for c in (first, second) if c.lease.is_leader]
    assert len(leaders) == 1
    assert leaders[0].elected_epochs == [1]
    assert await redis_client.get(KEYS.leader) == leaders[0].lease.owner_id.encode()
    assert await redis_client.get(KEYS.leader_epoch) == b"1"


async def test_lease_takeover_after_expiry(candidates: tuple[Candidate, Candidate], redis_client: redis.Redis) -> None:
    first, second = candidates
    first.start()
    await wait_until(lambda: first.lease.is_leader)
    second.start()

    # The leader stops renewing, as if paused; its key expires after 200 ms.
    await first.stop()
    await wait_until(lambda: second.lease.is_leader)

    assert first.elected_epochs == [1]
    assert second.elected_epochs == [2]
    assert await redis_client.get(KEYS.leader) == b"coord-b"


async def test_lease_deposed_leader_steps_down(candidates: tuple[Candidate, Candidate]) -> None:
    first, second = candidates
    first.start()
    await wait_until(lambda: first.lease.is_leader)
    second.start()
    await first.stop()
    await wait_until(lambda: second.lease.is_leader)

    # The paused leader wakes up still believing it leads; its first renewal must fail.
    first.start()
    await asyncio.wait_for(first.deposed.wait(), 2.0)

    assert first.lease.is_leader is False
    assert second.lease.is_leader is True


async def test_lease_release_hands_over(candidates: tuple[Candidate, Candidate], redis_client: redis.Redis) -> None:
    first, second = candidates
    first.start()
    await wait_until(lambda: first.lease.is_leader)
    await first.stop()

    await first.lease.release()

    assert await redis_client.exists(KEYS.leader) == 0
    second.start()
    await wait_until(lambda: second.lease.is_leader, timeout_s=0.15)
    assert second.elected_epochs == [2]


async def test_fence_stale_epoch_deposed(redis_client: redis.Redis) -> None:
    await redis_client.set(KEYS.leader_epoch, 4)
    await redis_client.hset("cf:assignment", mapping={"0": "w1", "1": "w2"})
    stale = Fence(redis_client, KEYS, epoch=3)

    with pytest.raises(Deposed, match="epoch 3"):
        await stale.hash_update("cf:assignment", {"0": "w9", "5": "w9"}, ["1"])

    assert await redis_client.hgetall("cf:assignment") == {b"0": b"w1", b"1": b"w2"}


async def test_fence_after_takeover_deposed(candidates: tuple[Candidate, Candidate], redis_client: redis.Redis) -> None:
    first, second = candidates
    first.start()
    await wait_until(lambda: first.lease.is_leader)
    old_fence = Fence(redis_client, KEYS, first.lease.epoch)
    await old_fence.hash_update("cf:assignment", {"0": "w1"})
    second.start()
    await first.stop()
    await wait_until(lambda: second.lease.is_leader)

    with pytest.raises(Deposed):
        await old_fence.hash_update("cf:assignment", {"0": "stale"}, ["0"])

    assert await redis_client.hgetall("cf:assignment") == {b"0": b"w1"}


async def test_fence_missing_epoch_deposed(redis_client: redis.Redis) -> None:
    with pytest.raises(Deposed):
        await Fence(redis_client, KEYS, epoch=1).hash_update("cf:assignment", {"0": "w1"})

    assert await redis_client.exists("cf:assignment") == 0


async def test_fence_current_epoch_writes(redis_client: redis.Redis) -> None:
    await redis_client.set(KEYS.leader_epoch, 2)
    await redis_client.hset("cf:assignment", mapping={"0": "w1", "1": "w2"})

    await Fence(redis_client, KEYS, epoch=2).hash_update("cf:assignment", {"0": "w3", "2": b"w4"}, ["1"])

    assert await redis_client.hgetall("cf:assignment") == {b"0": b"w3", b"2": b"w4"}


async def test_fence_empty_update_noop(redis_client: redis.Redis) -> None:
    await redis_client.set(KEYS.leader_epoch, 1)
    await redis_client.hset("cf:assignment", "0", "w1")

    await Fence(redis_client, KEYS, epoch=1).hash_update("cf:assignment")

    assert await redis_client.hgetall("cf:assignment") == {b"0": b"w1"}


async def test_fence_sets_over_2000_fields(redis_client: redis.Redis) -> None:
    await redis_client.set(KEYS.leader_epoch, 1)
    values = {str(i): f"worker-{i % 7}" for i in range(5001)}

    await Fence(redis_client, KEYS, epoch=1).hash_update("cf:assignment", values)

    stored = await redis_client.hgetall("cf:assignment")
    assert len(stored) == 5001
    assert stored == {key.encode(): value.encode() for key, value in values.items()}


async def test_fence_deletes_over_2000_fields(redis_client: redis.Redis) -> None:
    await redis_client.set(KEYS.leader_epoch, 1)
    await redis_client.hset("cf:assignment", mapping={str(i): "old" for i in range(4500)})
    fence = Fence(redis_client, KEYS, epoch=1)
    new_values = {str(i): "new" for i in range(4500, 6999)}

    await fence.hash_update("cf:assignment", new_values, [str(i) for i in range(4001)])

    stored = await redis_client.hgetall("cf:assignment")
    assert len(stored) == 499 + 2499
    assert set(stored) == {str(i).encode() for i in range(4001, 6999)}
    assert stored[b"4001"] == b"old"
    assert stored[b"6998"] == b"new"


async def test_fence_publishes_epoch(redis_client: redis.Redis) -> None:
    await redis_client.set(KEYS.leader_epoch, 7)
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(KEYS.assignment_channel)
    await pubsub.get_message(timeout=1.0)

    await Fence(redis_client, KEYS, epoch=7).hash_update("cf:assignment", {"0": "w1"}, channel=KEYS.assignment_channel)

    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
    await pubsub.aclose()
    assert message is not None
    assert message["data"] == b"7"
