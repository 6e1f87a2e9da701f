"""S10: the same message_id delivered twice, possibly on another shard and worker, is published once."""

from __future__ import annotations

import collections

import pytest

from common.keys import Keys
from common.redisconn import Scripts
from shard_worker.publisher import ENTRY_FIELDS

pytestmark = pytest.mark.timeout(120)


def _entry(message_id: str) -> list:
    values = [message_id, "notification", "stream.online", "1", "2026-01-01T00:00:00.000Z", 1, "conduit", "0",
              "sub-1", "1000", b'{"id":"1"}']
    args = ["", ""]  # the default dedup ttl, no comparison note
    for name, value in zip(ENTRY_FIELDS, values):
        args += [name, value]
    return args


async def _publish(client, keys: Keys, message_ids: list[str]) -> list[int]:
    script = Scripts(client).publish_events
    args = [900, 1000, 2 + 2 * len(ENTRY_FIELDS), 1000]
    for message_id in message_ids:
        args += _entry(message_id)
    dedup_keys = [keys.dedup(0, message_id) for message_id in message_ids]
    return await script(keys=[keys.events(0), keys.counters(0), keys.compare_stream(0), *dedup_keys], args=args)


async def test_claim_and_append_are_atomic(redis_client):
    keys = Keys()
    assert await _publish(redis_client, keys, ["a", "b", "a"]) == [2, 1]
    # A batch re-sent after a lost reply adds nothing.
    assert await _publish(redis_client, keys, ["a", "b"]) == [0, 2]
    assert await redis_client.xlen(keys.events(0)) == 2
    assert await redis_client.ttl(keys.dedup(0, "a")) > 0
    counters = await redis_client.hgetall(keys.counters(0))
    assert counters == {b"published": b"2", b"duplicates": b"3"}


async def test_duplicates_on_other_workers_published_once(fleet):
    fleet.shard_count = 8
    await fleet.start(workers=2)
    await fleet.add_channels(40, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=40)

    await fleet.generate(rate=1500, count=3000, duplicate_ratio=1.0, duplicate_other_shard_ratio=1.0)
    await fleet.wait_published(3000)
    entries = await fleet.stream_entries()
    per_id = collections.Counter(entry["message_id"] for entry in entries)
    counters = await fleet.control("GET", "/counters")
    duplicates = 0
    for partition in range(4):
        duplicates += int(await fleet.redis.hget(fleet.keys.counters(partition), "duplicates") or 0)

    assert counters["duplicates_injected"] == 3000
    assert len(entries) == 3000
    assert max(per_id.values()) == 1
    assert duplicates == 3000


async def test_killed_worker_leaves_no_claim_without_entry(fleet):
    fleet.shard_count = 8
    await fleet.start(workers=2)
    await fleet.add_channels(40, ["stream.online:1"])
    await fleet.wait_ready(subscriptions=40)

    run = await fleet.control("POST", "/generate", {"rate": 2000, "count": 6000, "duplicate_ratio": 0.2})
    await fleet.wait_published(1000)
    fleet.kill("worker-1")

    async def finished() -> bool:
        return (await fleet.control("GET", f"/generate/{run['id']}"))["done"]

    await fleet.wait_for(finished, 30, "the generator to finish")
    await fleet.wait_for(fleet.all_shards_enabled, 15, "every shard enabled again")
    entries = await fleet.stream_entries()
    published_ids = {entry["message_id"].decode() for entry in entries}
    claimed = set()
    async for key in fleet.redis.scan_iter(match="cf:dedup:*", count=1000):
        claimed.add(key.decode().rsplit(":", 1)[1])

    assert len(entries) == len(published_ids)
    assert claimed == published_ids
