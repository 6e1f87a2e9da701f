"""Legacy placement: least-loaded slot, 300 per connection, 900 in all, all or nothing."""

from __future__ import annotations

import pytest

from common.channels import ChannelError, ChannelStore, make_channel
from common.keys import Keys
from common.legacy import LegacyCapacityError, LegacySlots
from common.settings import Settings

SETTINGS = Settings.from_env({})


async def test_least_loaded_slot_and_per_connection_limit(redis_client):
    slots = LegacySlots(redis_client, Keys(), SETTINGS)
    placed = await slots.place({str(1000 + i): 1 for i in range(6)})
    assert sorted(placed.values()) == [0, 0, 1, 1, 2, 2]
    await redis_client.hset(Keys().legacy_load, mapping={"0": 300, "1": 299, "2": 299})
    placed = await slots.place({"2000": 1, "2001": 1})
    assert sorted(placed.values()) == [1, 2]
    with pytest.raises(LegacyCapacityError):
        await slots.place({"2002": 1})


async def test_placement_keeps_channel_on_one_slot(redis_client):
    slots = LegacySlots(redis_client, Keys(), SETTINGS)
    await redis_client.hset(Keys().legacy_load, mapping={"0": 298, "1": 297, "2": 299})
    assert await slots.place({"3000": 3}) == {"3000": 1}
    with pytest.raises(LegacyCapacityError) as refused:
        await slots.place({"3001": 3})
    assert "3001" in str(refused.value)
    assert "needs 3" in str(refused.value)


async def test_all_or_nothing_and_release(redis_client):
    slots = LegacySlots(redis_client, Keys(), SETTINGS.replace(legacy_connections=1, legacy_subscriptions_per_connection=2))
    with pytest.raises(LegacyCapacityError):
        await slots.place({"1": 1, "2": 1, "3": 1})
    assert await slots.placements() == {}
    assert await slots.load() == {0: 0}
    await slots.place({"1": 1, "2": 1})
    await slots.release(["1"])
    assert await slots.placements() == {"2": (0, 1)}
    assert await slots.load() == {0: 1}


async def test_mode_changes_place_release_and_mark_identity(redis_client):
    keys = Keys()
    store = ChannelStore(redis_client, keys, SETTINGS)
    await store.add([make_channel(str(100 + i), types=["stream.online:1"]) for i in range(3)])
    assert await LegacySlots(redis_client, keys, SETTINGS).placements() == {}

    changed = await store.set_mode(["100", "101"], "both")
    assert [c.transport_mode for c in changed] == ["both", "both"]
    assert set((await LegacySlots(redis_client, keys, SETTINGS).placements())) == {"100", "101"}
    marks = await redis_client.hgetall(keys.identity_dedup)
    assert marks == {b"100": b"0", b"101": b"0"}

    await store.set_mode(["100"], "conduit")
    assert set(await LegacySlots(redis_client, keys, SETTINGS).placements()) == {"101"}
    assert int(await redis_client.hget(keys.identity_dedup, "100")) > 0  # grace while legacy subs go away

    await store.set_mode(["102"], "websocket", fallback=True)
    assert await redis_client.hget(keys.identity_dedup, "102") == b"-1"
    assert [c.fallback for c in await store.list() if c.broadcaster_user_id == "102"] == [True]

    assert await store.set_mode(["101"], "both") == []  # no change, nothing written
    with pytest.raises(ChannelError):
        await store.set_mode(["999"], "both")

    await store.remove(["101", "102"])
    assert await LegacySlots(redis_client, keys, SETTINGS).placements() == {}


async def test_add_refuses_legacy_channels_beyond_capacity(redis_client):
    settings = SETTINGS.replace(legacy_connections=1, legacy_subscriptions_per_connection=2)
    store = ChannelStore(redis_client, Keys(), settings)
    await store.add([make_channel("1", types=["stream.online:1"], transport_mode="websocket")])
    with pytest.raises(LegacyCapacityError):
        await store.add([make_channel("2", types=["stream.online:1", "stream.offline:1"], transport_mode="websocket")])
    assert [c.broadcaster_user_id for c in await store.list()] == ["1"]
