"""EventSub WebSocket: welcome, keepalive, close codes, drops and reconnect."""

from __future__ import annotations

import asyncio
import re

import aiohttp
from emu_helpers import EmulatorClient, receive_json, receive_until_closed, wait_for

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.(\d{3}|\d{6}|\d{9})Z$")


async def _bound_session(emu: EmulatorClient, shard_count: int = 1, url: str | None = None):
    conduit_id = await emu.create_conduit(shard_count)
    ws, welcome = await emu.connect(url)
    session_id = welcome["payload"]["session"]["id"]
    await emu.bind(conduit_id, {str(i): session_id for i in range(shard_count)})
    return conduit_id, ws, session_id


async def test_welcome_shape(emu: EmulatorClient) -> None:
    ws, welcome = await emu.connect()
    assert TIMESTAMP.match(welcome["metadata"]["message_timestamp"])
    session = welcome["payload"]["session"]
    assert session["status"] == "connected"
    assert session["keepalive_timeout_seconds"] == 10
    assert session["reconnect_url"] is None
    assert TIMESTAMP.match(session["connected_at"])
    await ws.close()


async def test_keepalive_param_clamped(emu: EmulatorClient) -> None:
    for raw, expected in (("3", 10), ("30", 30), ("9000", 600)):
        ws, welcome = await emu.connect(f"{emu.ws_url}?keepalive_timeout_seconds={raw}")
        assert welcome["payload"]["session"]["keepalive_timeout_seconds"] == expected
        await ws.close()


async def test_keepalive_only_when_idle(start_emulator) -> None:
    emu = await start_emulator(time_scale=0.02, bind_deadline_s=1000)
    ws, _ = await emu.connect()
    loop = asyncio.get_running_loop()
    started = loop.time()
    keepalive = await receive_json(ws, timeout_s=2)
    elapsed = loop.time() - started
    assert keepalive["metadata"]["message_type"] == "session_keepalive"
    assert keepalive["payload"] == {}
    assert 0.15 <= elapsed <= 0.6
    await ws.close()


async def test_notifications_delay_keepalive(start_emulator) -> None:
    emu = await start_emulator(time_scale=0.05)
    conduit_id, ws, _ = await _bound_session(emu)
    await emu.subscribe(conduit_id)
    await emu.control("POST", "/generate", json={"rate": 50, "duration_s": 0.8})
    types = []
    for _ in range(30):
        types.append((await receive_json(ws))["metadata"]["message_type"])
    assert set(types) == {"notification"}
    await ws.close()


async def test_inbound_data_4001(emu: EmulatorClient) -> None:
    ws, _ = await emu.connect()
    await ws.send_str("hello")
    await receive_until_closed(ws)
    assert ws.close_code == 4001


async def test_client_ping_answered(emu: EmulatorClient) -> None:
    ws, _ = await emu.connect()
    await ws.ping(b"x")
    await asyncio.sleep(0.05)
    assert not ws.closed
    await ws.close()


async def test_bind_deadline_4003(emu: EmulatorClient) -> None:
    ws, _ = await emu.connect()
    await receive_until_closed(ws, timeout_s=3)
    assert ws.close_code == 4003
    counters = await emu.control("GET", "/counters")
    assert counters.body["closed_4003"] == 1


async def test_bound_session_survives_deadline(emu: EmulatorClient) -> None:
    _, ws, _ = await _bound_session(emu)
    await asyncio.sleep(0.8)
    assert not ws.closed
    await ws.close()


async def test_unanswered_pings_4002(start_emulator) -> None:
    emu = await start_emulator(time_scale=0.02)
    _, ws, _ = await _bound_session(emu)
    await ws.close()
    ws = await emu.http.ws_connect(emu.ws_url, autoping=False)
    welcome = await receive_json(ws)
    conduit_id = await emu.create_conduit(1)
    await emu.bind(conduit_id, {"0": welcome["payload"]["session"]["id"]})
    while True:
        message = await ws.receive(timeout=3)
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            break
    assert ws.close_code == 4002
    shards = await emu.shards(conduit_id)
    assert shards["0"]["status"] == "websocket_failed_ping_pong"


async def test_close_marks_shards_disconnected(emu: EmulatorClient) -> None:
    conduit_id, ws, session_id = await _bound_session(emu, 2)
    assert {s["status"] for s in (await emu.shards(conduit_id)).values()} == {"enabled"}
    await ws.close()

    async def disconnected() -> bool:
        shards = await emu.shards(conduit_id)
        return all(s["status"] == "websocket_disconnected" for s in shards.values())

    await wait_for(disconnected)
    transport = (await emu.shards(conduit_id))["0"]["transport"]
    assert transport["session_id"] == session_id
    assert TIMESTAMP.match(transport["disconnected_at"])


async def test_drop_abrupt_gives_1006(emu: EmulatorClient) -> None:
    conduit_id, ws, session_id = await _bound_session(emu)
    reply = await emu.control("POST", "/sessions/drop", json={"session_ids": [session_id]})
    assert reply.body["session_ids"] == [session_id]
    await receive_until_closed(ws)
    assert ws.close_code == 1006
    await wait_for(lambda: _shard_status_is(emu, conduit_id, "websocket_disconnected"))


async def test_drop_close_with_code(emu: EmulatorClient) -> None:
    conduit_id, ws, _ = await _bound_session(emu, 2)
    reply = await emu.control("POST", "/sessions/drop", json={"shard_ids": ["1"], "mode": "close", "code": 4005})
    assert len(reply.body["session_ids"]) == 1
    await receive_until_closed(ws)
    assert ws.close_code == 4005
    await wait_for(lambda: _shard_status_is(emu, conduit_id, "websocket_network_timeout"))


async def test_drop_silent_stops_keepalives(start_emulator) -> None:
    emu = await start_emulator(time_scale=0.02)
    _, ws, _ = await _bound_session(emu)
    assert (await receive_json(ws))["metadata"]["message_type"] == "session_keepalive"
    await emu.control("POST", "/sessions/drop", json={"all": True, "mode": "silent"})
    message = None
    try:
        message = await ws.receive(timeout=0.8)
    except asyncio.TimeoutError:
        pass
    assert message is None, message
    assert not ws.closed
    sessions = await emu.control("GET", "/sessions")
    assert sessions.body[0]["state"] == "silent"
    await ws.close()


async def test_drop_bad_input_400(emu: EmulatorClient) -> None:
    assert (await emu.control("POST", "/sessions/drop", json={"mode": "abrupt"})).status == 400
    assert (await emu.control("POST", "/sessions/drop", json={"all": True, "mode": "x"})).status == 400
    bad_code = {"all": True, "mode": "close", "code": 1234}
    assert (await emu.control("POST", "/sessions/drop", json=bad_code)).status == 400


async def _shard_status_is(emu: EmulatorClient, conduit_id: str, status: str) -> bool:
    return {s["status"] for s in (await emu.shards(conduit_id)).values()} == {status}


async def test_sessions_listing(emu: EmulatorClient) -> None:
    _, ws, session_id = await _bound_session(emu, 2)
    sessions = await emu.control("GET", "/sessions")
    assert sessions.body[0]["id"] == session_id
    assert sessions.body[0]["shard_ids"] == ["0", "1"]
    assert sessions.body[0]["state"] == "connected"
    await ws.close()
