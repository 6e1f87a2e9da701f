"""The parallel run's dedup and comparison through the real publish script and Redis."""

from __future__ import annotations

import time

from common.keys import Keys
from common.settings import Settings
from coordinator.comparison import Comparison, summarize
from shard_worker.publisher import Publisher

SETTINGS = Settings.from_env({}, stream_partitions=2, migration_compare_grace_s=30)


def _values(message_id: str, transport: str) -> list:
    return [message_id, "notification", "stream.online", "1", "2026-12-04T00:00:00Z", int(time.time() * 1000),
            transport, "0", "sub", "1000", b'{"id":"1"}']


async def test_copies_published_once_and_compared(redis_client):
    publisher = Publisher(SETTINGS, redis_client)
    publisher.start()
    # e1 arrives on both transports, e2 only on websocket, e3 only on the conduit.
    publisher.submit(0, "e:e1", _values("m1", "websocket"), "websocket|5|e1")
    publisher.submit(0, "e:e1", _values("m2", "conduit"), "conduit|40|e1")
    publisher.submit(1, "e:e2", _values("m3", "websocket"), "websocket|7|e2")
    publisher.submit(1, "e:e3", _values("m4", "conduit"), "conduit|20|e3")
    assert await publisher.drain(5)
    await publisher.close()
    keys = Keys()
    assert await redis_client.xlen(keys.events(0)) + await redis_client.xlen(keys.events(1)) == 3
    assert await redis_client.hget(keys.counters(0), "duplicates_conduit") == b"1"

    comparison = Comparison(SETTINGS, redis_client, redis_client)
    assert await comparison.poll(now_ms=int(time.time() * 1000)) == 0  # inside the grace window
    assert await comparison.poll(now_ms=int(time.time() * 1000) + 31_000) == 3
    summary = summarize(comparison.totals)
    assert summary["compared"] == 3
    assert summary["transports"]["conduit"] == {"seen": 2, "missed": 1, "loss_ratio": 0.3333, "mean_latency_ms": 30.0}
    assert summary["transports"]["websocket"]["missed"] == 1
    assert summary["transports"]["websocket"]["mean_latency_ms"] == 6.0

    # A new leader continues from the stored positions and totals; nothing is counted twice.
    again = Comparison(SETTINGS, redis_client, redis_client)
    assert await again.poll(now_ms=int(time.time() * 1000) + 60_000) == 0
    assert again.totals["compared"] == 3
    baseline = again.snapshot()
    assert summarize(again.totals, baseline)["compared"] == 0


async def test_event_ttl_overrides_the_default(redis_client):
    publisher = Publisher(SETTINGS, redis_client)
    publisher.start()
    publisher.submit(0, "e:hashed", _values("m9", "conduit"), ttl_s=10)
    publisher.submit(0, "plain", _values("m10", "conduit"))
    assert await publisher.drain(5)
    await publisher.close()
    keys = Keys()
    assert 0 < await redis_client.ttl(keys.dedup(0, "e:hashed")) <= 10
    assert await redis_client.ttl(keys.dedup(0, "plain")) > 10
