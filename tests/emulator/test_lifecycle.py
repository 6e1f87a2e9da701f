"""Conduit deletion and every shard status reached through its cause."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from emu_helpers import EmulatorClient, receive_json, receive_until_closed, wait_for


async def _bound(emu: EmulatorClient, shard_count: int = 1):
    conduit_id = await emu.create_conduit(shard_count)
    ws, welcome = await emu.connect()
    session_id = welcome["payload"]["session"]["id"]
    reply = await emu.bind(conduit_id, {str(i): session_id for i in range(shard_count)})
    assert reply.status == 202
    return conduit_id, ws, session_id


def test_idle_conduit_default_is_72_hours() -> None:
    from emulator import EmulatorSettings

    assert EmulatorSettings().conduit_idle_delete_s == 72 * 3600


async def test_idle_conduit_deleted_when_all_shards_disabled(start_emulator) -> None:
    # 16 Twitch seconds x 0.05 = 0.8 real seconds stand in for the 72 hours.
    emu = await start_emulator(conduit_idle_delete_s=16)
    conduit_id, ws, _ = await _bound(emu)
    subscription = (await emu.subscribe(conduit_id)).body["data"][0]
    await asyncio.sleep(1.2)
    assert [c["id"] for c in (await emu.helix("GET", "/eventsub/conduits")).body["data"]] == [conduit_id]

    await ws.close()

    async def conduit_gone() -> bool:
        return not (await emu.helix("GET", "/eventsub/conduits")).body["data"]

    await wait_for(conduit_gone, timeout_s=4)
    listed = await emu.helix("GET", "/eventsub/subscriptions", params={"subscription_id": subscription["id"]})
    assert listed.body["data"][0]["status"] == "conduit_deleted"
    bind = await emu.bind(conduit_id, {"0": "whatever"})
    assert bind.status == 404


async def test_conduit_idle_setting_shorter(start_emulator) -> None:
    emu = await start_emulator(conduit_idle_delete_s=4)
    conduit_id = await emu.create_conduit(2)

    async def conduit_gone() -> bool:
        return conduit_id not in [c["id"] for c in (await emu.api.state())["conduits"]]

    await wait_for(conduit_gone, timeout_s=2)


async def test_control_delete_conduit(emu: EmulatorClient) -> None:
    conduit_id, ws, _ = await _bound(emu)
    subscription = (await emu.subscribe(conduit_id)).body["data"][0]
    assert await emu.api.delete_conduit(conduit_id) == {"deleted": conduit_id}
    listed = await emu.helix("GET", "/eventsub/subscriptions", params={"subscription_id": subscription["id"]})
    assert listed.body["data"][0]["status"] == "conduit_deleted"
    assert (await emu.bind(conduit_id, {"0": "x"})).status == 404
    missing = await emu.control("POST", f"/conduits/{conduit_id}/delete")
    assert missing.status == 404
    await ws.close()


@pytest.mark.parametrize(("code", "status"), [
    (4000, "websocket_internal_error"),
    (4001, "websocket_received_inbound_traffic"),
    (4002, "websocket_failed_ping_pong"),
    (4004, "websocket_failed_to_reconnect"),
    (4005, "websocket_network_timeout"),
    (4006, "websocket_network_error"),
    (4999, "websocket_disconnected"),
])
async def test_shard_status_after_close_code(emu: EmulatorClient, code: int, status: str) -> None:
    conduit_id, ws, _ = await _bound(emu)
    await emu.api.drop(shard_ids=["0"], mode="close", code=code)
    await receive_until_closed(ws)
    assert ws.close_code == code
    await wait_for(lambda: _shard_status_is(emu, conduit_id, status))


async def _shard_status_is(emu: EmulatorClient, conduit_id: str, status: str) -> bool:
    return (await emu.shards(conduit_id))["0"]["status"] == status


async def test_inbound_traffic_sets_shard_status(emu: EmulatorClient) -> None:
    conduit_id, ws, _ = await _bound(emu)
    await ws.send_str("{}")
    await receive_until_closed(ws)
    assert ws.close_code == 4001
    await wait_for(lambda: _shard_status_is(emu, conduit_id, "websocket_received_inbound_traffic"))


async def test_missing_pongs_close_4002(start_emulator) -> None:
    emu = await start_emulator(time_scale=0.02)
    ws = await emu.http.ws_connect(emu.ws_url, autoping=False)
    session_id = (await receive_json(ws))["payload"]["session"]["id"]
    conduit_id = await emu.create_conduit(1)
    await emu.bind(conduit_id, {"0": session_id})
    pings = 0
    while True:
        message = await ws.receive(timeout=3)
        if message.type == aiohttp.WSMsgType.PING:
            pings += 1
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            break
    assert pings >= 1
    assert ws.close_code == 4002
    await wait_for(lambda: _shard_status_is(emu, conduit_id, "websocket_failed_ping_pong"))


async def test_pong_expectation_off_keeps_session(start_emulator) -> None:
    emu = await start_emulator(time_scale=0.02)
    ws = await emu.http.ws_connect(emu.ws_url, autoping=False)
    session_id = (await receive_json(ws))["payload"]["session"]["id"]
    conduit_id = await emu.create_conduit(1)
    await emu.bind(conduit_id, {"0": session_id})
    answer = await emu.api.expect_pongs(False, session_ids=[session_id])
    assert answer == {"session_ids": [session_id], "expect": False}
    deadline = asyncio.get_running_loop().time() + 0.8
    while asyncio.get_running_loop().time() < deadline:
        try:
            await ws.receive(timeout=0.1)
        except asyncio.TimeoutError:
            pass
    assert not ws.closed
    session = await emu.api.session(session_id)
    assert session["counters"]["pings_sent"] >= 2
    assert session["counters"]["pongs_received"] == 0
    await ws.close()


async def test_pongs_answered_keep_session(start_emulator) -> None:
    emu = await start_emulator(time_scale=0.02)
    conduit_id, ws, session_id = await _bound(emu)
    deadline = asyncio.get_running_loop().time() + 0.8
    while asyncio.get_running_loop().time() < deadline:
        try:
            await ws.receive(timeout=0.1)
        except asyncio.TimeoutError:
            pass
    assert not ws.closed
    session = await emu.api.session(session_id)
    assert session["counters"]["pongs_received"] >= 1
    await ws.close()


async def test_reconnect_grace_sets_failed_to_reconnect(start_emulator) -> None:
    emu = await start_emulator(time_scale=0.01)
    conduit_id, ws, _ = await _bound(emu)
    await emu.api.reconnect(everything=True)
    await receive_until_closed(ws)
    assert ws.close_code == 4004
    await wait_for(lambda: _shard_status_is(emu, conduit_id, "websocket_failed_to_reconnect"))


async def test_webhook_shard_statuses(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(1)
    transport = {"method": "webhook", "callback": "https://example.invalid/hook", "secret": "s3cret-value-123"}
    body = {"conduit_id": conduit_id, "shards": [{"id": "0", "transport": transport}]}
    reply = await emu.helix("PATCH", "/eventsub/conduits/shards", json=body)
    assert reply.body["data"][0]["status"] == "webhook_callback_verification_pending"
    for status in ("webhook_callback_verification_failed", "notification_failures_exceeded", "enabled"):
        await emu.api.set_webhook_shard_status(["0"], status, conduit_id)
        shard = (await emu.shards(conduit_id))["0"]
        assert shard["status"] == status
        assert shard["transport"] == {"method": "webhook", "callback": "https://example.invalid/hook"}


async def test_webhook_status_rejects_websocket_shard(emu: EmulatorClient) -> None:
    conduit_id, ws, _ = await _bound(emu)
    reply = await emu.control("POST", "/shards/status", json={"shard_ids": ["0"], "status": "enabled"})
    assert reply.status == 400
    await ws.close()
