"""Fan-out of one event to every matching subscription, the delivery-drop fault, and what
a reconnect or a drop does to plain WebSocket subscriptions."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import aiohttp
import orjson
import pytest
from emu_helpers import EmulatorClient, receive_json, session_id_of, wait_for

from emulator import EmulatorSettings
from emulator.client import ControlError
from emulator.routing import Router
from emulator.state import EmulatorState

CHANNEL = {"broadcaster_user_id": "1001"}


async def _conduit_socket(emu: EmulatorClient) -> tuple[str, aiohttp.ClientWebSocketResponse, str]:
    """Create a one-shard conduit bound to a new socket and return (conduit id, socket, session id)."""
    conduit_id = await emu.create_conduit(1)
    ws, welcome = await emu.connect()
    session_id = session_id_of(welcome)
    reply = await emu.bind(conduit_id, {"0": session_id})
    assert reply.body["errors"] == []
    return conduit_id, ws, session_id


async def _websocket_subscription(
    emu: EmulatorClient, user_id: str, condition: dict[str, str] | None = None,
) -> tuple[aiohttp.ClientWebSocketResponse, str, str]:
    """Open a plain WebSocket session, subscribe it with ``user_id``'s token, and return (socket, session id, token)."""
    token = await emu.user_token(user_id)
    ws, welcome = await emu.connect()
    session_id = session_id_of(welcome)
    reply = await emu.subscribe_ws(session_id, token, condition=condition or CHANNEL)
    assert reply.status == 202, reply.body
    return ws, session_id, token


async def _raw_notification(ws: aiohttp.ClientWebSocketResponse) -> tuple[dict[str, Any], bytes]:
    """Read one notification frame and return it decoded, with the exact bytes of its ``event`` value."""
    message = await ws.receive(timeout=3)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    raw = message.data.encode()
    frame = orjson.loads(raw)
    assert frame["metadata"]["message_type"] == "notification"
    # The encoder writes "event" last, so the frame ends with the event object and "}}".
    event_bytes = raw.split(b'"event":', 1)[1][:-2]
    return frame, event_bytes


async def _session_notifications(emu: EmulatorClient, session_id: str) -> int:
    return (await emu.api.session(session_id))["counters"]["notifications"]


# Fan-out


async def test_fanout_conduit_and_websocket(emu: EmulatorClient) -> None:
    conduit_id, conduit_ws, _ = await _conduit_socket(emu)
    assert (await emu.subscribe(conduit_id, condition=CHANNEL)).status == 202
    plain_ws, plain_session_id, _ = await _websocket_subscription(emu, "1001")

    run = await emu.api.generate(100, count=1, wait=True)
    conduit_frame, conduit_event = await _raw_notification(conduit_ws)
    plain_frame, plain_event = await _raw_notification(plain_ws)

    assert conduit_event == plain_event
    assert conduit_frame["metadata"]["message_id"] != plain_frame["metadata"]["message_id"]
    conduit_subscription = conduit_frame["payload"]["subscription"]
    plain_subscription = plain_frame["payload"]["subscription"]
    assert conduit_subscription["id"] != plain_subscription["id"]
    assert conduit_subscription["transport"] == {"method": "conduit", "conduit_id": conduit_id}
    assert plain_subscription["transport"]["method"] == "websocket"
    assert plain_subscription["transport"]["session_id"] == plain_session_id
    assert run["sent"] == 1
    assert run["fanout_copies"] == 1
    counters = await emu.api.counters()
    assert counters["sent"] == 1
    assert counters["fanout_copies"] == 1
    assert counters["delivered"] == 2
    await conduit_ws.close()
    await plain_ws.close()


async def test_fanout_three_members_in_order(emu: EmulatorClient) -> None:
    conduit_id, conduit_ws, _ = await _conduit_socket(emu)
    assert (await emu.subscribe(conduit_id, condition=CHANNEL)).status == 202
    first_ws, _, _ = await _websocket_subscription(emu, "1001")
    second_ws, _, _ = await _websocket_subscription(emu, "2002")
    count = 50

    run = await emu.api.generate(1000, count=count, wait=True, seed=3)
    received = {
        name: [await _raw_notification(ws) for _ in range(count)]
        for name, ws in (("conduit", conduit_ws), ("first", first_ws), ("second", second_ws))
    }

    assert run["sent"] == count
    assert run["fanout_copies"] == 2 * count
    for index in range(count):
        events = {name: frames[index][1] for name, frames in received.items()}
        assert len(set(events.values())) == 1, f"event {index} differs between subscriptions"
    message_ids = [frame["metadata"]["message_id"] for frames in received.values() for frame, _ in frames]
    assert len(set(message_ids)) == 3 * count
    for ws in (conduit_ws, first_ws, second_ws):
        await ws.close()


async def test_fanout_chooses_sources_not_subscriptions(emu: EmulatorClient) -> None:
    conduit_id, conduit_ws, _ = await _conduit_socket(emu)
    assert (await emu.subscribe(conduit_id, condition=CHANNEL)).status == 202
    assert (await emu.subscribe(conduit_id, condition={"broadcaster_user_id": "1002"})).status == 202
    plain_ws, _, _ = await _websocket_subscription(emu, "1001")
    count = 400

    run = await emu.api.generate(2000, count=count, wait=True, seed=11)
    frames = [(await _raw_notification(conduit_ws))[0] for _ in range(count)]

    channels = collections.Counter(frame["payload"]["event"]["broadcaster_user_id"] for frame in frames)
    # Choosing among subscriptions would give channel 1001 two thirds of the events.
    assert 0.4 < channels["1001"] / count < 0.6, channels
    assert run["fanout_copies"] == channels["1001"]
    assert run["sent"] == count
    await conduit_ws.close()
    await plain_ws.close()


async def test_fanout_weights_count_sources_once(emu: EmulatorClient) -> None:
    conduit_id, conduit_ws, _ = await _conduit_socket(emu)
    assert (await emu.subscribe(conduit_id, condition=CHANNEL)).status == 202
    assert (await emu.subscribe(conduit_id, condition={"broadcaster_user_id": "1002"})).status == 202
    plain_ws, _, _ = await _websocket_subscription(emu, "1001")
    count = 400

    run = await emu.api.generate(2000, count=count, wait=True, seed=12, channel_weights={"1001": 1, "1002": 3})
    frames = [(await _raw_notification(conduit_ws))[0] for _ in range(count)]

    channels = collections.Counter(frame["payload"]["event"]["broadcaster_user_id"] for frame in frames)
    assert 0.15 < channels["1001"] / count < 0.35, channels
    assert run["fanout_copies"] == channels["1001"]
    await conduit_ws.close()
    await plain_ws.close()


async def test_fanout_unreachable_member_dropped(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(1)
    assert (await emu.subscribe(conduit_id, condition=CHANNEL)).status == 202
    plain_ws, _, _ = await _websocket_subscription(emu, "1001")

    run = await emu.api.generate(100, count=1, wait=True)
    frame, _ = await _raw_notification(plain_ws)

    assert frame["payload"]["subscription"]["transport"]["method"] == "websocket"
    assert run["sent"] == 1
    assert run["fanout_copies"] == 1
    assert run["dropped_disabled"] == 1
    counters = await emu.api.counters()
    assert counters["dropped_disabled"] == 1
    assert counters["delivered"] == 1
    await plain_ws.close()


async def test_fanout_ends_when_member_disabled(emu: EmulatorClient) -> None:
    conduit_id, conduit_ws, _ = await _conduit_socket(emu)
    assert (await emu.subscribe(conduit_id, condition=CHANNEL)).status == 202
    plain_ws, _, token = await _websocket_subscription(emu, "1001")
    await plain_ws.close()

    async def plain_disabled() -> bool:
        listed = (await emu.helix("GET", "/eventsub/subscriptions", token=token)).body["data"]
        return listed[0]["status"] == "websocket_disconnected"

    await wait_for(plain_disabled)
    run = await emu.api.generate(1000, count=5, wait=True)

    assert run["sent"] == 5
    assert run["fanout_copies"] == 0
    assert run["dropped_disabled"] == 0
    for _ in range(5):
        await _raw_notification(conduit_ws)
    await conduit_ws.close()


async def test_fanout_follows_changes_mid_run(emu: EmulatorClient) -> None:
    conduit_id, conduit_ws, _ = await _conduit_socket(emu)
    assert (await emu.subscribe(conduit_id, condition=CHANNEL)).status == 202
    started = await emu.api.generate(200, duration_s=10)
    run_id = started["id"]
    await _raw_notification(conduit_ws)

    plain_ws, _, token = await _websocket_subscription(emu, "1001")
    frame, _ = await _raw_notification(plain_ws)
    assert frame["payload"]["subscription"]["transport"]["method"] == "websocket"
    await plain_ws.close()

    async def plain_disabled() -> bool:
        listed = (await emu.helix("GET", "/eventsub/subscriptions", token=token)).body["data"]
        return listed[0]["status"] == "websocket_disconnected"

    await wait_for(plain_disabled)
    await asyncio.sleep(0.2)
    before = await emu.api.generator(run_id)
    await asyncio.sleep(0.3)
    after = await emu.api.stop_generator(run_id)

    assert before["fanout_copies"] > 0
    assert after["sent"] > before["sent"]
    assert after["fanout_copies"] == before["fanout_copies"]
    await conduit_ws.close()


async def test_fanout_duplicates_per_notification(emu: EmulatorClient) -> None:
    conduit_id, conduit_ws, _ = await _conduit_socket(emu)
    assert (await emu.subscribe(conduit_id, condition=CHANNEL)).status == 202
    plain_ws, _, _ = await _websocket_subscription(emu, "1001")

    run = await emu.api.generate(100, count=1, wait=True, duplicate_ratio=1.0)
    conduit_frames = [(await _raw_notification(conduit_ws))[0] for _ in range(2)]
    plain_frames = [(await _raw_notification(plain_ws))[0] for _ in range(2)]

    assert run["duplicates"] == 2
    conduit_ids = {frame["metadata"]["message_id"] for frame in conduit_frames}
    plain_ids = {frame["metadata"]["message_id"] for frame in plain_frames}
    assert len(conduit_ids) == 1
    assert len(plain_ids) == 1
    assert conduit_ids != plain_ids
    await conduit_ws.close()
    await plain_ws.close()


# Delivery-drop fault


async def test_delivery_drop_conduit_ratio(emu: EmulatorClient) -> None:
    conduit_id, conduit_ws, conduit_session_id = await _conduit_socket(emu)
    assert (await emu.subscribe(conduit_id, condition=CHANNEL)).status == 202
    plain_ws, plain_session_id, _ = await _websocket_subscription(emu, "1001")
    ratios = await emu.api.set_delivery_drop("conduit", 0.2)
    assert ratios == {"conduit": 0.2, "websocket": 0.0}
    count = 1000

    run = await emu.api.generate(5000, count=count, wait=True)
    counters = await emu.api.counters()

    dropped = counters["dropped_fault_by_transport"]["conduit"]
    assert 100 <= dropped <= 300, dropped
    assert counters["dropped_fault_by_transport"]["websocket"] == 0
    assert counters["dropped_fault"] == dropped
    assert run["dropped_fault"] == dropped
    assert run["sent"] == count
    assert counters["delivered"] == 2 * count - dropped
    assert await _session_notifications(emu, conduit_session_id) == count - dropped
    assert await _session_notifications(emu, plain_session_id) == count
    deliveries = await emu.control("POST", "/deliveries", json={"since": 0})
    assert len(deliveries.body["deliveries"]) == 2 * count - dropped
    await conduit_ws.close()
    await plain_ws.close()


async def test_delivery_drop_websocket_all_then_off(emu: EmulatorClient) -> None:
    conduit_id, conduit_ws, conduit_session_id = await _conduit_socket(emu)
    assert (await emu.subscribe(conduit_id, condition=CHANNEL)).status == 202
    plain_ws, plain_session_id, _ = await _websocket_subscription(emu, "1001")

    await emu.api.set_delivery_drop("websocket", 1)
    await emu.api.generate(1000, count=20, wait=True)
    assert await _session_notifications(emu, plain_session_id) == 0
    assert await _session_notifications(emu, conduit_session_id) == 20

    assert await emu.api.set_delivery_drop("websocket", 0) == {"conduit": 0.0, "websocket": 0.0}
    await emu.api.generate(1000, count=20, wait=True)
    assert await _session_notifications(emu, plain_session_id) == 20
    counters = await emu.api.counters()
    assert counters["dropped_fault_by_transport"] == {"conduit": 0, "websocket": 20}
    await conduit_ws.close()
    await plain_ws.close()


async def test_delivery_drop_decides_each_duplicate(emu: EmulatorClient) -> None:
    conduit_id, conduit_ws, conduit_session_id = await _conduit_socket(emu)
    assert (await emu.subscribe(conduit_id, condition=CHANNEL)).status == 202
    await emu.api.set_delivery_drop("conduit", 0.5)
    count = 200

    run = await emu.api.generate(5000, count=count, wait=True, duplicate_ratio=1.0)

    writes = 2 * count
    # Dropping a notification together with its duplicate would lose about 100 writes in pairs.
    assert 140 <= run["dropped_fault"] <= 260, run
    assert await _session_notifications(emu, conduit_session_id) == writes - run["dropped_fault"]
    await conduit_ws.close()


async def _conduit_event_sequence(start_emulator, drop_ratio: float) -> list[tuple[str, str]]:
    """Return (channel, stream id) of each event of a seeded run, in the order the conduit socket receives them."""
    emu = await start_emulator()
    conduit_id, conduit_ws, _ = await _conduit_socket(emu)
    for broadcaster in ("1001", "1002"):
        assert (await emu.subscribe(conduit_id, condition={"broadcaster_user_id": broadcaster})).status == 202
    plain_ws, _, _ = await _websocket_subscription(emu, "1001")
    await emu.api.set_delivery_drop("websocket", drop_ratio)
    count = 30
    await emu.api.generate(1000, count=count, wait=True, seed=42)
    frames = [(await _raw_notification(conduit_ws))[0] for _ in range(count)]
    await conduit_ws.close()
    await plain_ws.close()
    return [(frame["payload"]["event"]["broadcaster_user_id"], frame["payload"]["event"]["id"]) for frame in frames]


async def test_delivery_drop_keeps_seeded_sequence(start_emulator) -> None:
    without_fault = await _conduit_event_sequence(start_emulator, 0.0)
    with_fault = await _conduit_event_sequence(start_emulator, 0.5)
    assert with_fault == without_fault
    assert {channel for channel, _ in without_fault} == {"1001", "1002"}


async def test_delivery_drop_spares_shard_disabled_and_revocation(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(2)
    sockets = {}
    for shard_id in ("0", "1"):
        ws, welcome = await emu.connect()
        await emu.bind(conduit_id, {shard_id: session_id_of(welcome)})
        sockets[shard_id] = ws
    condition = {"client_id": emu.settings.client_id, "conduit_id": conduit_id}
    assert (await emu.subscribe(conduit_id, "conduit.shard.disabled", "1", condition)).status == 202
    watched = await emu.subscribe(conduit_id, condition=CHANNEL)
    await emu.api.set_delivery_drop("conduit", 1)

    await sockets["1"].close()
    frame = await receive_json(sockets["0"])
    assert frame["metadata"]["subscription_type"] == "conduit.shard.disabled"
    revoked = await emu.api.revoke([watched.body["data"][0]["id"]])
    assert revoked["frames_sent"] == [watched.body["data"][0]["id"]]
    assert (await receive_json(sockets["0"]))["metadata"]["message_type"] == "revocation"
    assert (await emu.api.counters())["dropped_fault"] == 0
    await sockets["0"].close()


@pytest.mark.parametrize(("body", "named"), [
    ({"ratio": 0.2}, "invalid transport None"),
    ({"transport": "webhook", "ratio": 0.2}, "invalid transport 'webhook'"),
    ({"transport": "conduit"}, "missing ratio"),
    ({"transport": "conduit", "ratio": -0.1}, "invalid ratio -0.1"),
    ({"transport": "conduit", "ratio": 1.5}, "invalid ratio 1.5"),
    ({"transport": "conduit", "ratio": "0.2"}, "invalid ratio '0.2'"),
    ({"transport": "conduit", "ratio": True}, "invalid ratio True"),
    ({"transport": "conduit", "ratio": None}, "invalid ratio None"),
])
async def test_delivery_drop_invalid_400(emu: EmulatorClient, body: dict[str, Any], named: str) -> None:
    reply = await emu.control("POST", "/delivery-drop", json=body)
    assert reply.status == 400
    assert reply.body["message"].startswith(named), reply.body
    assert "expected" in reply.body["message"]
    assert await emu.api.delivery_drop() == {"conduit": 0.0, "websocket": 0.0}


async def test_delivery_drop_client_raises(emu: EmulatorClient) -> None:
    with pytest.raises(ControlError) as caught:
        await emu.api.set_delivery_drop("conduit", 2)
    assert caught.value.status == 400


async def test_counters_reset_clears_new_counters(emu: EmulatorClient) -> None:
    conduit_id, conduit_ws, _ = await _conduit_socket(emu)
    assert (await emu.subscribe(conduit_id, condition=CHANNEL)).status == 202
    plain_ws, _, _ = await _websocket_subscription(emu, "1001")
    await emu.api.set_delivery_drop("conduit", 1)
    await emu.api.generate(1000, count=10, wait=True)
    before = await emu.api.counters()
    assert before["fanout_copies"] == 10
    assert before["dropped_fault"] == 10

    await emu.api.reset_counters()
    after = await emu.api.counters()

    assert after["sent"] == 0
    assert after["fanout_copies"] == 0
    assert after["dropped_fault"] == 0
    assert after["dropped_fault_by_transport"] == {"conduit": 0, "websocket": 0}
    # The fault is a setting, not a counter, so a reset keeps it.
    assert await emu.api.delivery_drop() == {"conduit": 1.0, "websocket": 0.0}
    await conduit_ws.close()
    await plain_ws.close()


class _FakeSession:
    """Fake open WebSocket session that accepts every frame and keeps it."""

    def __init__(self, session_id: str) -> None:
        self.id = session_id
        self.state = "connected"
        self.counters: collections.Counter[str] = collections.Counter()
        self.frames: list[bytes] = []

    async def send_tracked(self, data: bytes) -> bool:
        self.frames.append(data)
        return True


async def test_router_notify_applies_drop() -> None:
    state = EmulatorState(EmulatorSettings(seed=7))
    session = _FakeSession("session-1")
    state.sessions[session.id] = session  # type: ignore[assignment]
    transport = {"method": "websocket", "session_id": session.id}
    subscription = state.add_subscription("client", "stream.online", "1", CHANNEL, transport, 0, "1001", user_id="1001")
    router = Router(state)
    state.delivery_drop_ratios["websocket"] = 0.5
    count = 1000

    results = [await router.notify(subscription, {"broadcaster_user_id": "1001"}) for _ in range(count)]

    dropped = results.count(False)
    assert 400 <= dropped <= 600, dropped
    assert state.counters.dropped_fault == dropped
    assert state.counters.dropped_fault_by_transport["websocket"] == dropped
    assert state.counters.delivered == count - dropped
    assert len(session.frames) == count - dropped


# Plain WebSocket subscriptions across a reconnect and a drop


async def test_reconnect_keeps_websocket_subscriptions(emu: EmulatorClient) -> None:
    old_ws, session_id, token = await _websocket_subscription(emu, "1001")
    reply = await emu.api.reconnect(session_ids=[session_id])
    assert reply["session_ids"] == [session_id]
    reconnect = await receive_json(old_ws)
    new_ws, welcome = await emu.connect(reconnect["payload"]["session"]["reconnect_url"])
    assert session_id_of(welcome) == session_id
    closing = await old_ws.receive(timeout=3)
    assert closing.type == aiohttp.WSMsgType.CLOSE

    listed = (await emu.helix("GET", "/eventsub/subscriptions", token=token)).body["data"]
    assert [s["status"] for s in listed] == ["enabled"]
    assert listed[0]["transport"]["session_id"] == session_id
    assert len((await emu.api.session(session_id))["subscription_ids"]) == 1
    await emu.api.generate(100, count=1, wait=True)
    frame, _ = await _raw_notification(new_ws)
    assert frame["payload"]["subscription"]["id"] == listed[0]["id"]
    await new_ws.close()


async def test_dropped_session_subscriptions_not_moved(emu: EmulatorClient) -> None:
    old_ws, old_session_id, token = await _websocket_subscription(emu, "1001")
    await emu.api.drop(session_ids=[old_session_id])

    async def disabled() -> bool:
        listed = (await emu.helix("GET", "/eventsub/subscriptions", token=token)).body["data"]
        return [s["status"] for s in listed] == ["websocket_disconnected"]

    await wait_for(disabled)
    new_ws, welcome = await emu.connect()
    new_session_id = session_id_of(welcome)

    assert new_session_id != old_session_id
    new_session = await emu.api.session(new_session_id)
    assert new_session["subscription_ids"] == []
    assert new_session["websocket_subscriptions"] == 0
    listed = (await emu.helix("GET", "/eventsub/subscriptions", token=token)).body["data"]
    assert listed[0]["transport"]["session_id"] == old_session_id
    with pytest.raises(ControlError) as caught:
        await emu.api.generate(100, count=1, wait=True)
    assert caught.value.status == 409
    await old_ws.close()
    await new_ws.close()
