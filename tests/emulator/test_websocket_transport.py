"""Plain WebSocket transport: user tokens, per-connection and per-user limits, cost, the 10 s rule."""

from __future__ import annotations

import asyncio

from emu_helpers import EmulatorClient, receive_json, receive_until_closed, wait_for


async def _session(emu: EmulatorClient):
    ws, welcome = await emu.connect()
    return ws, welcome["payload"]["session"]["id"]


async def test_websocket_subscription_with_user_token(emu: EmulatorClient) -> None:
    token = await emu.user_token("1001", ["user:read:chat"])
    ws, session_id = await _session(emu)
    reply = await emu.subscribe_ws(session_id, token, condition={"broadcaster_user_id": "1001"})
    assert reply.status == 202, reply.body
    data = reply.body["data"][0]
    assert data["transport"]["method"] == "websocket"
    assert data["transport"]["session_id"] == session_id
    assert "connected_at" in data["transport"]
    assert data["cost"] == 0
    assert reply.body["max_total_cost"] == 10
    assert reply.body["total"] == 1
    await ws.close()


async def test_websocket_transport_rejects_app_token(emu: EmulatorClient) -> None:
    ws, session_id = await _session(emu)
    reply = await emu.subscribe_ws(session_id, emu.token)
    assert reply.status == 400
    assert "user access token" in reply.body["message"]
    await ws.close()


async def test_conduit_transport_rejects_user_token(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(1)
    token = await emu.user_token("1001")
    body = {"type": "stream.online", "version": "1", "condition": {"broadcaster_user_id": "1001"},
            "transport": {"method": "conduit", "conduit_id": conduit_id}}
    reply = await emu.helix("POST", "/eventsub/subscriptions", json=body, token=token)
    assert reply.status == 400
    assert "app access token" in reply.body["message"]


async def test_websocket_unknown_session_400(emu: EmulatorClient) -> None:
    token = await emu.user_token("1001")
    reply = await emu.subscribe_ws("no-such-session", token)
    assert reply.status == 400
    assert reply.body["message"] == "websocket transport session does not exist or has already disconnected"


async def test_websocket_subscription_satisfies_10s_rule(start_emulator) -> None:
    emu = await start_emulator(time_scale=0.02)
    token = await emu.user_token("1001")
    ws, session_id = await _session(emu)
    assert (await emu.subscribe_ws(session_id, token, condition={"broadcaster_user_id": "1001"})).status == 202
    await asyncio.sleep(0.5)
    assert not ws.closed
    await ws.close()


async def test_websocket_unused_session_closed_4003(start_emulator) -> None:
    emu = await start_emulator(time_scale=0.02)
    ws, _ = await _session(emu)
    await receive_until_closed(ws)
    assert ws.close_code == 4003


async def test_websocket_connection_limit_per_user(start_emulator) -> None:
    emu = await start_emulator(bind_deadline_s=1000)
    token = await emu.user_token("1001")
    sockets = []
    for index in range(3):
        ws, session_id = await _session(emu)
        sockets.append(ws)
        reply = await emu.subscribe_ws(session_id, token, condition={"broadcaster_user_id": str(2000 + index)})
        assert reply.status == 202, reply.body
    ws, session_id = await _session(emu)
    sockets.append(ws)
    fourth = await emu.subscribe_ws(session_id, token, condition={"broadcaster_user_id": "1001"})
    assert fourth.status == 429
    assert fourth.body["message"] == "number of websocket transports limit exceeded"
    assert int(fourth.headers["Ratelimit-Remaining"]) > 0
    other_user = await emu.user_token("1002")
    assert (await emu.subscribe_ws(session_id, other_user, condition={"broadcaster_user_id": "1002"})).status == 202
    for ws in sockets:
        await ws.close()


async def test_websocket_limit_status_setting(start_emulator) -> None:
    emu = await start_emulator(bind_deadline_s=1000, ws_max_connections_per_user=1, ws_limit_status=400)
    token = await emu.user_token("1001")
    first, first_id = await _session(emu)
    second, second_id = await _session(emu)
    assert (await emu.subscribe_ws(first_id, token, condition={"broadcaster_user_id": "1001"})).status == 202
    reply = await emu.subscribe_ws(second_id, token, condition={"broadcaster_user_id": "1001"})
    assert reply.status == 400
    await first.close()
    await second.close()


async def test_websocket_per_connection_limit(start_emulator) -> None:
    emu = await start_emulator(ws_max_subscriptions_per_connection=2)
    token = await emu.user_token("1001")
    ws, session_id = await _session(emu)
    for broadcaster in ("1001", "1002"):
        condition = {"broadcaster_user_id": broadcaster, "moderator_user_id": "1001"}
        assert (await emu.subscribe_ws(session_id, token, "channel.follow", "2", condition)).status == 202
    condition = {"broadcaster_user_id": "1003", "moderator_user_id": "1001"}
    reply = await emu.subscribe_ws(session_id, token, "channel.follow", "2", condition)
    assert reply.status == 429
    assert reply.body["message"] == "number of subscriptions per websocket transport limit exceeded"
    await ws.close()


async def test_websocket_max_total_cost_10(emu: EmulatorClient) -> None:
    token = await emu.user_token("1001")
    ws, session_id = await _session(emu)
    for index in range(10):
        reply = await emu.subscribe_ws(session_id, token, condition={"broadcaster_user_id": str(5000 + index)})
        assert reply.status == 202
        assert reply.body["data"][0]["cost"] == 1
    assert reply.body["total_cost"] == 10
    over = await emu.subscribe_ws(session_id, token, condition={"broadcaster_user_id": "5999"})
    assert over.status == 429
    assert over.body["message"] == "cost limit exceeded"
    await ws.close()


async def test_websocket_identical_subscription_409(emu: EmulatorClient) -> None:
    token = await emu.user_token("1001")
    ws, session_id = await _session(emu)
    assert (await emu.subscribe_ws(session_id, token)).status == 202
    assert (await emu.subscribe_ws(session_id, token)).status == 409
    await ws.close()


async def test_same_type_condition_limit_429(start_emulator) -> None:
    emu = await start_emulator(max_same_type_condition=1, bind_deadline_s=1000)
    token = await emu.user_token("1001")
    first, first_id = await _session(emu)
    second, second_id = await _session(emu)
    assert (await emu.subscribe_ws(first_id, token)).status == 202
    reply = await emu.subscribe_ws(second_id, token)
    assert reply.status == 429
    assert reply.body["message"] == "too many subscriptions with the same type and condition"
    assert int(reply.headers["Ratelimit-Remaining"]) > 0
    await first.close()
    await second.close()


async def test_user_and_app_listings_are_separate(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(1)
    assert (await emu.subscribe(conduit_id)).status == 202
    token = await emu.user_token("1001")
    ws, session_id = await _session(emu)
    assert (await emu.subscribe_ws(session_id, token)).status == 202
    app_list = await emu.helix("GET", "/eventsub/subscriptions")
    user_list = await emu.helix("GET", "/eventsub/subscriptions", token=token)
    assert [s["transport"]["method"] for s in app_list.body["data"]] == ["conduit"]
    assert [s["transport"]["method"] for s in user_list.body["data"]] == ["websocket"]
    assert user_list.body["max_total_cost"] == 10
    assert app_list.body["max_total_cost"] == 10_000
    await ws.close()


async def test_websocket_notification_delivered(emu: EmulatorClient) -> None:
    token = await emu.user_token("1002")
    ws, session_id = await _session(emu)
    condition = {"broadcaster_user_id": "1001", "user_id": "1002"}
    assert (await emu.subscribe_ws(session_id, token, "channel.chat.message", "1", condition)).status == 202
    run = await emu.api.generate(100, count=1, wait=True)
    assert run["sent"] == 1
    frame = await receive_json(ws)
    assert frame["metadata"]["message_type"] == "notification"
    assert frame["payload"]["subscription"]["transport"]["method"] == "websocket"
    assert frame["payload"]["event"]["broadcaster_user_id"] == "1001"
    await ws.close()


async def test_disabled_websocket_subscription_listed_then_gone(start_emulator) -> None:
    emu = await start_emulator(time_scale=0.01)
    token = await emu.user_token("1001")
    ws, session_id = await _session(emu)
    assert (await emu.subscribe_ws(session_id, token)).status == 202
    await ws.close()

    async def status() -> str | None:
        listed = (await emu.helix("GET", "/eventsub/subscriptions", token=token)).body["data"]
        return listed[0]["status"] if listed else None

    await wait_for(lambda: _equals(status(), "websocket_disconnected"))
    await asyncio.sleep(0.3)
    assert await status() == "websocket_disconnected"

    await wait_for(lambda: _equals(status(), None), timeout_s=3)


async def _equals(awaitable, expected) -> bool:
    return (await awaitable) == expected


async def test_deauthorized_broadcaster_403(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(1)
    await emu.api.deauthorize(["1001"])
    condition = {"broadcaster_user_id": "1001", "user_id": "9"}
    reply = await emu.subscribe(conduit_id, "channel.chat.message", "1", condition)
    assert reply.status == 403
    assert "authorization" in reply.body["message"]
    await emu.api.authorize(["1001"])
    assert (await emu.subscribe(conduit_id, "channel.chat.message", "1", condition)).status == 202
