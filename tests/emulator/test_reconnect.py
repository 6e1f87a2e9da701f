"""session_reconnect handoff: same session id, overlap resend, 4004 and 4007."""

from __future__ import annotations

import asyncio

from emu_helpers import EmulatorClient, receive_json, receive_until_closed, wait_for


async def _setup(emu: EmulatorClient):
    conduit_id = await emu.create_conduit(1)
    ws, welcome = await emu.connect()
    session_id = welcome["payload"]["session"]["id"]
    await emu.bind(conduit_id, {"0": session_id})
    await emu.subscribe(conduit_id)
    return conduit_id, ws, session_id


async def _notifications(emu: EmulatorClient, ws, count: int) -> list[dict]:
    await emu.control("POST", "/generate", params={"wait": "1"}, json={"rate": 1000, "count": count})
    return [await receive_json(ws) for _ in range(count)]


async def _reconnect_url(emu: EmulatorClient, ws, session_id: str) -> str:
    reply = await emu.control("POST", "/sessions/reconnect", json={"session_ids": [session_id]})
    assert reply.body["session_ids"] == [session_id]
    frame = await receive_json(ws)
    assert frame["metadata"]["message_type"] == "session_reconnect"
    session = frame["payload"]["session"]
    assert session["id"] == session_id
    assert session["status"] == "reconnecting"
    assert session["keepalive_timeout_seconds"] is None
    return session["reconnect_url"]


async def test_reconnect_same_session_and_overlap(emu: EmulatorClient) -> None:
    conduit_id, old_ws, session_id = await _setup(emu)
    before = await _notifications(emu, old_ws, 5)
    url = await _reconnect_url(emu, old_ws, session_id)
    assert url.startswith(emu.ws_url + "?reconnect=")

    new_ws, welcome = await emu.connect(url)
    assert welcome["payload"]["session"]["id"] == session_id
    resent = [await receive_json(new_ws) for _ in range(3)]
    assert [m["metadata"]["message_id"] for m in resent] == [m["metadata"]["message_id"] for m in before[-3:]]

    await receive_until_closed(old_ws)
    assert old_ws.close_code == 1000
    assert (await emu.shards(conduit_id))["0"]["status"] == "enabled"
    after = await _notifications(emu, new_ws, 2)
    assert all(m["metadata"]["message_type"] == "notification" for m in after)
    await new_ws.close()


async def test_events_stay_on_old_socket_until_welcome(emu: EmulatorClient) -> None:
    _, old_ws, session_id = await _setup(emu)
    await _reconnect_url(emu, old_ws, session_id)
    received = await _notifications(emu, old_ws, 3)
    assert len(received) == 3
    await old_ws.close()


async def test_reconnect_url_used_twice_4007(emu: EmulatorClient) -> None:
    _, old_ws, session_id = await _setup(emu)
    url = await _reconnect_url(emu, old_ws, session_id)
    new_ws, _ = await emu.connect(url)
    again = await emu.http.ws_connect(url)
    await receive_until_closed(again)
    assert again.close_code == 4007
    await new_ws.close()
    await old_ws.close()


async def test_unknown_reconnect_token_4007(emu: EmulatorClient) -> None:
    ws = await emu.http.ws_connect(f"{emu.ws_url}?reconnect=bogus")
    await receive_until_closed(ws)
    assert ws.close_code == 4007


async def test_old_closed_first_ends_session(emu: EmulatorClient) -> None:
    conduit_id, old_ws, session_id = await _setup(emu)
    url = await _reconnect_url(emu, old_ws, session_id)
    await old_ws.close()

    async def disconnected() -> bool:
        return (await emu.shards(conduit_id))["0"]["status"] == "websocket_disconnected"

    await wait_for(disconnected)
    late = await emu.http.ws_connect(url)
    await receive_until_closed(late)
    assert late.close_code == 4007


async def test_grace_expiry_4004(start_emulator) -> None:
    emu = await start_emulator(reconnect_grace_s=5, time_scale=0.05)
    conduit_id, old_ws, session_id = await _setup(emu)
    await _reconnect_url(emu, old_ws, session_id)
    await receive_until_closed(old_ws, timeout_s=3)
    assert old_ws.close_code == 4004
    await asyncio.sleep(0.05)
    assert (await emu.shards(conduit_id))["0"]["status"] == "websocket_failed_to_reconnect"
