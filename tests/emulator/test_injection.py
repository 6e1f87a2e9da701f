"""Fault injection and observation: Helix faults, rate limit, latency, malformed frames, logs, pages."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import orjson
import pytest
from emu_helpers import EmulatorClient, receive_json

from emulator.client import ControlError


async def _bound(emu: EmulatorClient, shard_count: int = 1):
    conduit_id = await emu.create_conduit(shard_count)
    ws, welcome = await emu.connect()
    session_id = welcome["payload"]["session"]["id"]
    await emu.bind(conduit_id, {str(i): session_id for i in range(shard_count)})
    return conduit_id, ws, session_id


async def test_fault_rate_limit_remaining_zero(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(1)
    await emu.api.add_fault(kind="rate_limit", count=1)
    reply = await emu.subscribe(conduit_id)
    assert reply.status == 429
    assert reply.headers["Ratelimit-Remaining"] == "0"
    assert reply.body == {"error": "Too Many Requests", "status": 429, "message": "Too Many Requests"}
    assert (await emu.subscribe(conduit_id)).status == 202


async def test_fault_subscription_limit_remaining_nonzero(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(1)
    await emu.api.add_fault(kind="subscription_limit", count=2)
    for _ in range(2):
        reply = await emu.subscribe(conduit_id)
        assert reply.status == 429
        assert reply.body["message"] == "too many subscriptions with the same type and condition"
        assert int(reply.headers["Ratelimit-Remaining"]) > 0
    assert (await emu.subscribe(conduit_id)).status == 202


async def test_fault_401_and_custom_body(emu: EmulatorClient) -> None:
    await emu.api.add_fault(method="GET", path="/eventsub/conduits", status=401, count=1)
    await emu.api.add_fault(method="GET", path="/eventsub/conduits", status=503, body={"custom": True}, count=1)
    first = await emu.helix("GET", "/eventsub/conduits")
    second = await emu.helix("GET", "/eventsub/conduits")
    third = await emu.helix("GET", "/eventsub/conduits")
    assert (first.status, first.body["error"]) == (401, "Unauthorized")
    assert (second.status, second.body) == (503, {"custom": True})
    assert third.status == 200


async def test_fault_bad_kind_400(emu: EmulatorClient) -> None:
    with pytest.raises(ControlError) as caught:
        await emu.api.add_fault(kind="nonsense")
    assert caught.value.status == 400


async def test_ratelimit_empty(emu: EmulatorClient) -> None:
    answer = await emu.api.empty_rate_limit()
    assert answer == {"client_id": emu.settings.client_id, "remaining": 0}
    reply = await emu.helix("GET", "/eventsub/conduits")
    assert reply.status == 429
    assert reply.headers["Ratelimit-Remaining"] == "0"
    assert int(reply.headers["Ratelimit-Reset"]) >= int(asyncio.get_running_loop().time() * 0)


async def test_helix_latency(emu: EmulatorClient) -> None:
    await emu.api.set_latency(helix_ms=150)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await emu.helix("GET", "/eventsub/conduits")).status == 200
    assert loop.time() - started >= 0.14
    assert await emu.api.latency() == {"helix_ms": 150, "websocket_ms": 0}
    await emu.api.set_latency(helix_ms=0)


async def test_websocket_latency(emu: EmulatorClient) -> None:
    conduit_id, ws, _ = await _bound(emu)
    await emu.subscribe(conduit_id)
    await emu.api.set_latency(websocket_ms=200)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await emu.api.generate(100, count=1)
    frame = await receive_json(ws)
    assert frame["metadata"]["message_type"] == "notification"
    assert loop.time() - started >= 0.19
    await ws.close()


async def test_latency_bad_input_400(emu: EmulatorClient) -> None:
    assert (await emu.control("POST", "/latency", json={"helix_ms": -1})).status == 400
    assert (await emu.control("POST", "/latency", json={})).status == 400


@pytest.mark.parametrize("kind", ["invalid_json", "unknown_message_type", "unknown_subscription_type", "null_array"])
async def test_malformed_text_frames(emu: EmulatorClient, kind: str) -> None:
    conduit_id, ws, session_id = await _bound(emu)
    answer = await emu.api.send_malformed(kind, shard_ids=["0"])
    assert answer == {"session_ids": [session_id], "kind": kind}
    message = await ws.receive(timeout=3)
    assert message.type == aiohttp.WSMsgType.TEXT
    if kind == "invalid_json":
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(message.data)
        return
    frame = orjson.loads(message.data)
    if kind == "unknown_message_type":
        assert frame["metadata"]["message_type"] == "session_unknown"
    elif kind == "unknown_subscription_type":
        assert frame["metadata"]["subscription_type"] == "emulator.unknown_type"
    else:
        assert frame["payload"]["event"]["badges"] is None
        assert frame["payload"]["event"]["message"]["fragments"] is None
    await ws.close()


async def test_malformed_binary_frame(emu: EmulatorClient) -> None:
    _, ws, _ = await _bound(emu)
    await emu.api.send_malformed("binary", everything=True)
    message = await ws.receive(timeout=3)
    assert message.type == aiohttp.WSMsgType.BINARY
    await ws.close()


async def test_malformed_huge_frame(emu: EmulatorClient) -> None:
    _, ws, session_id = await _bound(emu)
    await emu.api.send_malformed("huge", session_ids=[session_id])
    message = await ws.receive(timeout=5)
    assert message.type == aiohttp.WSMsgType.TEXT
    assert 1_000_000 <= len(message.data.encode()) <= 1_200_000
    frame = orjson.loads(message.data)
    assert frame["metadata"]["subscription_type"] == "channel.chat.message"
    session = await emu.api.session(session_id)
    assert session["counters"]["malformed_sent"] == 1
    await ws.close()


async def test_malformed_bad_kind_400(emu: EmulatorClient) -> None:
    reply = await emu.control("POST", "/sessions/malformed", json={"all": True, "kind": "weird"})
    assert reply.status == 400


async def test_helix_log_records_results(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(1)
    await emu.api.add_fault(method="GET", path="/eventsub/conduits", status=500, count=1)
    await emu.helix("GET", "/eventsub/conduits")
    await emu.helix("GET", "/eventsub/conduits/shards", params={"conduit_id": conduit_id})
    log = await emu.api.helix_log(limit=3)
    assert [(e["method"], e["path"], e["status"]) for e in log] == [
        ("POST", "/eventsub/conduits", 200),
        ("GET", "/eventsub/conduits", 500),
        ("GET", "/eventsub/conduits/shards", 200),
    ]
    assert log[1]["injected"] is True
    assert log[1]["message"] == "injected fault"
    assert log[2]["query"] == {"conduit_id": conduit_id}
    assert log[2]["token"] == "app"
    assert emu.token not in orjson.dumps(log).decode()


async def test_overview_page_lists_everything(emu: EmulatorClient) -> None:
    conduit_id, ws, session_id = await _bound(emu, 2)
    page = await emu.api.overview_html()
    assert page.startswith("<!DOCTYPE html>")
    assert conduit_id in page
    assert session_id in page
    assert "<script" not in page and "http" not in page.split("<body>")[1]
    await ws.close()


async def test_per_session_counters(emu: EmulatorClient) -> None:
    conduit_id, ws, session_id = await _bound(emu)
    await emu.subscribe(conduit_id)
    await emu.api.generate(200, count=5, wait=True)
    for _ in range(5):
        await receive_json(ws)
    sessions = await emu.api.sessions()
    assert sessions[0]["counters"]["notifications"] == 5
    assert sessions[0]["counters"]["frames_sent"] >= 6
    assert set(sessions[0]) >= {"id", "state", "connected_at", "keepalive_timeout_seconds", "shard_ids"}
    await ws.close()


@pytest.mark.parametrize(("digits", "pattern"), [
    ("3", r"\.\d{3}Z$"), ("6", r"\.\d{6}Z$"), ("9", r"\.\d{9}Z$"),
])
async def test_timestamp_digits_setting(start_emulator, digits: str, pattern: str) -> None:
    emu = await start_emulator(timestamp_digits=digits, time_scale=0.02, bind_deadline_s=1000)
    ws, welcome = await emu.connect()
    assert re.search(pattern, welcome["metadata"]["message_timestamp"])
    keepalive = await receive_json(ws)
    assert re.search(pattern, keepalive["metadata"]["message_timestamp"])
    await ws.close()


async def test_timestamp_digits_mixed_default(start_emulator) -> None:
    emu = await start_emulator(time_scale=0.01, bind_deadline_s=1000)
    ws, welcome = await emu.connect()
    lengths = {len(welcome["metadata"]["message_timestamp"].split(".")[1]) - 1}
    for _ in range(5):
        frame = await receive_json(ws)
        lengths.add(len(frame["metadata"]["message_timestamp"].split(".")[1]) - 1)
    assert lengths == {3, 6, 9}
    await ws.close()
