"""The downstream consumer helper against a real Redis stream."""

from __future__ import annotations

from common.consumer import StreamConsumer


async def test_consumer_acks_and_claims(redis_client):
    stream = "cf:events:{0}"
    for number in range(3):
        await redis_client.xadd(stream, {"message_id": f"m{number}"})
    seen: list[bytes] = []

    async def fail_on_m1(entry_id: bytes, fields: dict) -> None:
        if fields[b"message_id"] == b"m1":
            raise ValueError("downstream unavailable")
        seen.append(fields[b"message_id"])

    async def record(entry_id: bytes, fields: dict) -> None:
        seen.append(fields[b"message_id"])

    first = StreamConsumer(redis_client, stream, "site", "a", fail_on_m1, block_ms=10)
    await first.ensure_group()
    await first.ensure_group()
    acknowledged = await first.run_once()
    second = StreamConsumer(redis_client, stream, "site", "b", record, block_ms=10, claim_idle_ms=0)
    claimed = await second.run_once()
    pending = await redis_client.xpending(stream, "site")

    assert acknowledged == 2
    assert first.failed == 1
    assert claimed == 1
    assert seen == [b"m0", b"m2", b"m1"]
    assert pending["pending"] == 0
