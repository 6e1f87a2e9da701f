"""Conformance of the emulator to Twitch's documented Helix, OAuth and EventSub behaviour.

Each test checks the status code and the body shape (keys and types) of one documented
fact. The "Conformance" section of docs/emulator.md maps every fact to its tests, here or
in the other files of this folder, and lists the facts the emulator does not model.
"""

from __future__ import annotations

import asyncio
import time
import zlib

import pytest
from emu_helpers import (
    SHARD_STATUSES, TIMESTAMP, EmulatorClient, Reply, assert_conduit_list, assert_error_reply,
    assert_frame_metadata, assert_shard_page, assert_shard_shape, assert_subscription_list, ratelimit_values,
    receive_json, receive_until_closed, session_id_of, wait_for,
)

from emulator import EmulatorSettings

CONDUIT_ENDPOINTS = (
    ("GET", "/eventsub/conduits"),
    ("POST", "/eventsub/conduits"),
    ("PATCH", "/eventsub/conduits"),
    ("DELETE", "/eventsub/conduits"),
    ("GET", "/eventsub/conduits/shards"),
    ("PATCH", "/eventsub/conduits/shards"),
)


@pytest.fixture
async def emu(start_emulator) -> EmulatorClient:
    """Start an emulator that does not close sockets for missing pongs.

    aiohttp sends a pong only while a test reads the socket, and these tests leave
    sockets unread between steps. Ping handling has its own tests in test_lifecycle.py.
    """
    return await start_emulator(expect_pongs=False)


async def _bound_socket(emu: EmulatorClient, conduit_id: str, shard_id: str = "0"):
    ws, welcome = await emu.connect()
    session_id = session_id_of(welcome)
    reply = await emu.bind(conduit_id, {shard_id: session_id})
    assert reply.body["errors"] == []
    return ws, session_id


async def _shard_page(emu: EmulatorClient, conduit_id: str, **params: str) -> Reply:
    return await emu.helix("GET", "/eventsub/conduits/shards", params={"conduit_id": conduit_id, **params})


async def _shard_status(emu: EmulatorClient, conduit_id: str, shard_id: str) -> str:
    return (await emu.shards(conduit_id))[shard_id]["status"]


async def _generate(emu: EmulatorClient, count: int) -> dict:
    reply = await emu.control("POST", "/generate", params={"wait": "1"}, json={"rate": 2000, "count": count})
    assert reply.status == 200, reply.body
    return reply.body


def _home_shard(broadcaster_id: str, shard_count: int) -> str:
    return str(zlib.crc32(broadcaster_id.encode()) % shard_count)


# 1. Conduit endpoints


async def test_conduit_endpoints_need_app_token(emu: EmulatorClient) -> None:
    """API reference: every conduit endpoint takes an app access token only."""
    user_token = await emu.user_token("1001")
    for method, path in CONDUIT_ENDPOINTS:
        reply = await emu.helix(method, path, token=user_token)
        assert_error_reply(reply, 401)
        anonymous = await emu.request(method, f"{emu.base_url}/helix{path}", headers={"Client-Id": emu.settings.client_id})
        assert_error_reply(anonymous, 401)


async def test_get_conduits_200_shape(emu: EmulatorClient) -> None:
    """API reference, Get Conduits: 200 with ``data`` of ``{"id", "shard_count"}``."""
    empty = await emu.helix("GET", "/eventsub/conduits")
    assert empty.status == 200
    assert assert_conduit_list(empty.body) == []

    conduit_id = await emu.create_conduit(3)
    reply = await emu.helix("GET", "/eventsub/conduits")
    assert reply.status == 200
    assert assert_conduit_list(reply.body) == [{"id": conduit_id, "shard_count": 3}]


async def test_create_conduit_200_shape(emu: EmulatorClient) -> None:
    """API reference, Create Conduits: 200 (not 201 or 202) with the new conduit in ``data``."""
    reply = await emu.helix("POST", "/eventsub/conduits", json={"shard_count": 2})
    assert reply.status == 200
    data = assert_conduit_list(reply.body)
    assert len(data) == 1
    assert data[0]["shard_count"] == 2


async def test_create_conduit_invalid_count_400(emu: EmulatorClient) -> None:
    """API reference, Create Conduits: 400 for an invalid shard count."""
    for bad in (0, 20_001, "2", None):
        reply = await emu.helix("POST", "/eventsub/conduits", json={"shard_count": bad})
        assert_error_reply(reply, 400)
    missing = await emu.helix("POST", "/eventsub/conduits", json={})
    assert_error_reply(missing, 400)


async def test_create_conduit_limit_429(emu: EmulatorClient) -> None:
    """API reference, Create Conduits: the sixth conduit of a client gets 429, not a rate limit."""
    for _ in range(5):
        await emu.create_conduit(1)
    reply = await emu.helix("POST", "/eventsub/conduits", json={"shard_count": 1})
    assert_error_reply(reply, 429)
    assert ratelimit_values(reply)["Ratelimit-Remaining"] > 0
    listed = await emu.helix("GET", "/eventsub/conduits")
    assert len(assert_conduit_list(listed.body)) == 5


async def test_update_conduit_200_and_errors(emu: EmulatorClient) -> None:
    """API reference, Update Conduits: 200 with ``data``; 400 and 404."""
    conduit_id = await emu.create_conduit(2)
    reply = await emu.helix("PATCH", "/eventsub/conduits", json={"id": conduit_id, "shard_count": 4})
    assert reply.status == 200
    assert assert_conduit_list(reply.body) == [{"id": conduit_id, "shard_count": 4}]

    no_id = await emu.helix("PATCH", "/eventsub/conduits", json={"shard_count": 4})
    assert_error_reply(no_id, 400)
    bad_count = await emu.helix("PATCH", "/eventsub/conduits", json={"id": conduit_id, "shard_count": 0})
    assert_error_reply(bad_count, 400)
    unknown = await emu.helix("PATCH", "/eventsub/conduits", json={"id": "no-such-conduit", "shard_count": 1})
    assert_error_reply(unknown, 404)


async def test_delete_conduit_204_and_errors(emu: EmulatorClient) -> None:
    """API reference, Delete Conduit: 204 with no body; 400 without ``id``; 404 for an unknown id."""
    conduit_id = await emu.create_conduit(1)
    reply = await emu.helix("DELETE", "/eventsub/conduits", params={"id": conduit_id})
    assert reply.status == 204
    assert reply.body is None

    assert_error_reply(await emu.helix("DELETE", "/eventsub/conduits"), 400)
    assert_error_reply(await emu.helix("DELETE", "/eventsub/conduits", params={"id": conduit_id}), 404)


async def test_get_shards_200_and_errors(emu: EmulatorClient) -> None:
    """API reference, Get Conduit Shards: 200 with ``data`` and ``pagination``; 400 and 404."""
    conduit_id = await emu.create_conduit(3)
    ws, session_id = await _bound_socket(emu, conduit_id, "1")
    reply = await _shard_page(emu, conduit_id)
    assert reply.status == 200
    shards = assert_shard_page(reply.body)
    assert reply.body["pagination"] == {}
    assert [shard["id"] for shard in shards] == ["0", "1", "2"]
    assert shards[1]["status"] == "enabled"
    assert shards[1]["transport"]["session_id"] == session_id

    enabled = await _shard_page(emu, conduit_id, status="enabled")
    assert [shard["id"] for shard in assert_shard_page(enabled.body)] == ["1"]

    assert_error_reply(await emu.helix("GET", "/eventsub/conduits/shards"), 400)
    assert_error_reply(await _shard_page(emu, "no-such-conduit"), 404)
    assert_error_reply(await _shard_page(emu, conduit_id, after="!!not-a-cursor"), 400)
    await ws.close()


async def test_update_shards_202_partial(emu: EmulatorClient) -> None:
    """API reference, Update Conduit Shards: 202 with ``data`` and ``errors`` of ``{"id", "message", "code"}``."""
    conduit_id = await emu.create_conduit(2)
    ws, welcome = await emu.connect()
    session_id = session_id_of(welcome)
    reply = await emu.bind(conduit_id, {"0": session_id, "1": "no-such-session", "2": session_id})
    assert reply.status == 202
    assert set(reply.body) == {"data", "errors"}
    assert [shard["id"] for shard in reply.body["data"]] == ["0"]
    for shard in reply.body["data"]:
        assert_shard_shape(shard)
    for error in reply.body["errors"]:
        assert set(error) == {"id", "message", "code"}
        assert all(isinstance(value, str) for value in error.values())
        assert error["code"] == "invalid_parameter"
    messages = {error["id"]: error["message"] for error in reply.body["errors"]}
    assert messages == {
        "1": "The websocket session is not connected.",
        "2": "The shard id is outside of the conduit's range.",
    }
    await ws.close()


async def test_update_shards_malformed_entry_400(emu: EmulatorClient) -> None:
    """API reference, Update Conduit Shards: an entry without ``id`` fails the whole request with 400."""
    conduit_id = await emu.create_conduit(2)
    ws, welcome = await emu.connect()
    good = {"id": "0", "transport": {"method": "websocket", "session_id": session_id_of(welcome)}}
    body = {"conduit_id": conduit_id, "shards": [good, {"transport": good["transport"]}]}
    reply = await emu.helix("PATCH", "/eventsub/conduits/shards", json=body)
    assert_error_reply(reply, 400)
    assert await _shard_status(emu, conduit_id, "0") == "websocket_disconnected"
    assert_error_reply(await emu.helix("PATCH", "/eventsub/conduits/shards", json={"shards": [good]}), 400)
    await ws.close()


async def test_update_shards_deleted_conduit_404(emu: EmulatorClient) -> None:
    """API reference, Update Conduit Shards: a conduit that no longer exists gives 404, not 202."""
    conduit_id = await emu.create_conduit(1)
    ws, welcome = await emu.connect()
    assert (await emu.helix("DELETE", "/eventsub/conduits", params={"id": conduit_id})).status == 204
    reply = await emu.bind(conduit_id, {"0": session_id_of(welcome)})
    assert_error_reply(reply, 404)
    await ws.close()


async def test_shard_ids_are_strings(emu: EmulatorClient) -> None:
    """API reference, Get Conduit Shards: shard ids are the strings "0" to "N-1"."""
    conduit_id = await emu.create_conduit(5)
    reply = await _shard_page(emu, conduit_id)
    shards = assert_shard_page(reply.body)
    assert [shard["id"] for shard in shards] == ["0", "1", "2", "3", "4"]
    assert shards[0] == {"id": "0", "status": "websocket_disconnected", "transport": {"method": "websocket"}}


@pytest.mark.parametrize(("callback", "secret", "status"), [
    ("https://127.0.0.1/eventsub", "s" * 10, 202),
    ("https://127.0.0.1:443/eventsub", "s" * 100, 202),
    ("http://127.0.0.1/eventsub", "s" * 10, 400),
    ("https://127.0.0.1:8443/eventsub", "s" * 10, 400),
    ("https://127.0.0.1/eventsub", "s" * 9, 400),
    ("https://127.0.0.1/eventsub", "s" * 101, 400),
])
async def test_webhook_shard_transport_rules(emu: EmulatorClient, callback: str, secret: str, status: int) -> None:
    """API reference, Update Conduit Shards: a webhook callback is HTTPS on port 443 with a 10-100 character secret."""
    conduit_id = await emu.create_conduit(1)
    transport = {"method": "webhook", "callback": callback, "secret": secret}
    body = {"conduit_id": conduit_id, "shards": [{"id": "0", "transport": transport}]}
    reply = await emu.helix("PATCH", "/eventsub/conduits/shards", json=body)
    if status == 400:
        assert_error_reply(reply, 400)
        return
    assert reply.status == 202
    assert reply.body["errors"] == []
    shard = reply.body["data"][0]
    assert_shard_shape(shard)
    assert shard["status"] == "webhook_callback_verification_pending"
    assert shard["transport"] == {"method": "webhook", "callback": callback}


async def test_conduit_limits_default(emu: EmulatorClient) -> None:
    """Handling conduit events: 5 conduits per client id and 20,000 shards per conduit."""
    defaults = EmulatorSettings()
    assert defaults.max_conduits == 5
    assert defaults.max_shards == 20_000
    largest = await emu.helix("POST", "/eventsub/conduits", json={"shard_count": 20_000})
    assert largest.status == 200
    assert assert_conduit_list(largest.body)[0]["shard_count"] == 20_000
    assert_error_reply(await emu.helix("POST", "/eventsub/conduits", json={"shard_count": 20_001}), 400)


async def test_update_shards_many_entries(emu: EmulatorClient) -> None:
    """API reference, Update Conduit Shards: no documented entry count per request, so 250 entries pass."""
    conduit_id = await emu.create_conduit(250)
    ws, welcome = await emu.connect()
    session_id = session_id_of(welcome)
    reply = await emu.bind(conduit_id, {str(index): session_id for index in range(250)})
    assert reply.status == 202
    assert reply.body["errors"] == []
    assert len(reply.body["data"]) == 250
    await ws.close()


async def test_no_subscription_cap_per_conduit(start_emulator) -> None:
    """Handling conduit events: no per-conduit subscription cap; only the cost budget limits app tokens."""
    emu = await start_emulator(page_size=100)
    conduit_id = await emu.create_conduit(1)
    for index in range(150):
        reply = await emu.subscribe(conduit_id, condition={"broadcaster_user_id": str(10_000 + index)})
        assert reply.status == 202, reply.body
    first = await emu.helix("GET", "/eventsub/subscriptions")
    assert len(assert_subscription_list(first.body, paginated=True)) == 100
    assert first.body["total"] == 150
    assert first.body["total_cost"] == 150
    cursor = first.body["pagination"]["cursor"]
    second = await emu.helix("GET", "/eventsub/subscriptions", params={"after": cursor})
    assert len(assert_subscription_list(second.body, paginated=True)) == 50
    assert second.body["pagination"] == {}


# 2. Shards: statuses, routing, failure


async def test_shard_status_filter_documented(emu: EmulatorClient) -> None:
    """API reference, Get Conduit Shards: the ``status`` filter takes every documented shard status."""
    conduit_id = await emu.create_conduit(2)
    for status in sorted(SHARD_STATUSES):
        reply = await _shard_page(emu, conduit_id, status=status)
        assert reply.status == 200, status
        shards = assert_shard_page(reply.body)
        expected = ["0", "1"] if status == "websocket_disconnected" else []
        assert [shard["id"] for shard in shards] == expected, status


@pytest.mark.parametrize(("code", "status"), [
    (4000, "websocket_internal_error"),
    (4005, "websocket_network_timeout"),
    (4006, "websocket_network_error"),
])
async def test_closed_shard_status_and_shape(emu: EmulatorClient, code: int, status: str) -> None:
    """API reference, Get Conduit Shards: a closed socket's shard shows the status and ``disconnected_at``."""
    conduit_id = await emu.create_conduit(1)
    ws, session_id = await _bound_socket(emu, conduit_id)
    await emu.api.drop(shard_ids=["0"], mode="close", code=code)
    await receive_until_closed(ws)
    assert ws.close_code == code
    await wait_for(lambda: _status_is(emu, conduit_id, "0", status))
    shard = (await emu.shards(conduit_id))["0"]
    assert_shard_shape(shard)
    assert set(shard["transport"]) == {"method", "session_id", "connected_at", "disconnected_at"}
    assert shard["transport"]["session_id"] == session_id


async def _status_is(emu: EmulatorClient, conduit_id: str, shard_id: str, status: str) -> bool:
    return await _shard_status(emu, conduit_id, shard_id) == status


async def test_routing_hashes_channel_id(emu: EmulatorClient) -> None:
    """Handling conduit events: the channel id's hash picks the shard; only that shard gets the event."""
    conduit_id = await emu.create_conduit(4)
    sockets = {str(index): await _bound_socket(emu, conduit_id, str(index)) for index in range(4)}
    broadcaster = "777001"
    assert (await emu.subscribe(conduit_id, condition={"broadcaster_user_id": broadcaster})).status == 202
    await _generate(emu, 2)
    home = _home_shard(broadcaster, 4)
    for _ in range(2):
        frame = await receive_json(sockets[home][0])
        assert_frame_metadata(frame, "notification")
    counters = (await emu.control("GET", "/counters")).body
    assert counters["per_shard"] == {home: {"delivered": 2, "dropped": 0}}
    for ws, _ in sockets.values():
        await ws.close()


async def test_disabled_shards_drop_without_replay(emu: EmulatorClient) -> None:
    """Handling conduit events: home and retry shard both disabled means dropped, and never replayed."""
    conduit_id = await emu.create_conduit(2)
    first, _ = await _bound_socket(emu, conduit_id, "0")
    second, _ = await _bound_socket(emu, conduit_id, "1")
    assert (await emu.subscribe(conduit_id)).status == 202
    await first.close()
    await second.close()
    await wait_for(lambda: _status_is(emu, conduit_id, "1", "websocket_disconnected"))
    await wait_for(lambda: _status_is(emu, conduit_id, "0", "websocket_disconnected"))

    result = await _generate(emu, 3)
    assert result["sent"] == 3
    assert result["dropped_disabled"] == 3

    ws, welcome = await emu.connect()
    rebound = await emu.bind(conduit_id, {"0": session_id_of(welcome), "1": session_id_of(welcome)})
    assert rebound.body["errors"] == []
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=0.3)
    await ws.close()


async def test_socket_drop_disables_shard(emu: EmulatorClient) -> None:
    """Handling conduit events: a WebSocket shard is disabled as soon as its socket drops."""
    conduit_id = await emu.create_conduit(1)
    ws, _ = await _bound_socket(emu, conduit_id)
    await emu.api.drop(shard_ids=["0"])
    await receive_until_closed(ws)
    assert ws.close_code == 1006
    await wait_for(lambda: _status_is(emu, conduit_id, "0", "websocket_disconnected"), timeout_s=0.5)
    reply = await _shard_page(emu, conduit_id)
    shard = assert_shard_page(reply.body)[0]
    assert TIMESTAMP.match(shard["transport"]["disconnected_at"])


async def test_idle_conduit_deleted(start_emulator) -> None:
    """Handling conduit events: a conduit whose shards all stay disabled is deleted; its subscriptions show conduit_deleted."""
    emu = await start_emulator(time_scale=0.01, conduit_idle_delete_s=10)
    conduit_id = await emu.create_conduit(2)
    created = await emu.subscribe(conduit_id)
    assert created.status == 202

    async def conduit_gone() -> bool:
        listed = await emu.helix("GET", "/eventsub/conduits")
        return assert_conduit_list(listed.body) == []

    await wait_for(conduit_gone)
    reply = await emu.helix("GET", "/eventsub/subscriptions")
    assert reply.status == 200
    listed = assert_subscription_list(reply.body, paginated=True)
    assert [subscription["status"] for subscription in listed] == ["conduit_deleted"]
    assert reply.body["total"] == 0


async def test_lower_shard_count_removes_top(emu: EmulatorClient) -> None:
    """Handling conduit events: move the last shard's transport into a middle shard, then lower the count."""
    conduit_id = await emu.create_conduit(4)
    sockets = {str(index): await _bound_socket(emu, conduit_id, str(index)) for index in range(4)}
    last_session = sockets["3"][1]
    moved = await emu.bind(conduit_id, {"1": last_session})
    assert moved.status == 202
    assert moved.body["data"][0]["transport"]["session_id"] == last_session

    reply = await emu.helix("PATCH", "/eventsub/conduits", json={"id": conduit_id, "shard_count": 3})
    assert reply.status == 200
    assert assert_conduit_list(reply.body) == [{"id": conduit_id, "shard_count": 3}]
    shards = assert_shard_page((await _shard_page(emu, conduit_id)).body)
    assert [shard["id"] for shard in shards] == ["0", "1", "2"]
    assert [shard["status"] for shard in shards] == ["enabled"] * 3
    assert shards[1]["transport"]["session_id"] == last_session
    for ws, _ in sockets.values():
        await ws.close()


async def test_shard_disabled_event_shape(emu: EmulatorClient) -> None:
    """Handling conduit events, conduit.shard.disabled v1: ``conduit_id``, ``shard_id``, ``status``, ``transport``."""
    conduit_id = await emu.create_conduit(2)
    sockets = {str(index): await _bound_socket(emu, conduit_id, str(index)) for index in range(2)}
    condition = {"client_id": emu.settings.client_id, "conduit_id": conduit_id}
    created = await emu.subscribe(conduit_id, "conduit.shard.disabled", "1", condition)
    assert created.status == 202
    assert_subscription_list(created.body, paginated=False)

    home = str(zlib.crc32(conduit_id.encode()) % 2)
    other = "1" if home == "0" else "0"
    await sockets[other][0].close()
    frame = await receive_json(sockets[home][0])
    metadata = assert_frame_metadata(frame, "notification")
    assert metadata["subscription_type"] == "conduit.shard.disabled"
    assert metadata["subscription_version"] == "1"
    event = frame["payload"]["event"]
    assert set(event) == {"conduit_id", "shard_id", "status", "transport"}
    assert event["conduit_id"] == conduit_id
    assert event["shard_id"] == other
    assert event["status"] == "websocket_disconnected"
    assert set(event["transport"]) == {"method", "session_id", "connected_at", "disconnected_at"}
    assert event["transport"]["session_id"] == sockets[other][1]
    await sockets[home][0].close()


async def test_shard_disabled_needs_app_token(emu: EmulatorClient) -> None:
    """Handling conduit events, conduit.shard.disabled: app access token only, ``client_id`` required."""
    conduit_id = await emu.create_conduit(1)
    no_client = await emu.subscribe(conduit_id, "conduit.shard.disabled", "1", {"conduit_id": conduit_id})
    assert_error_reply(no_client, 400)
    token = await emu.user_token("1001")
    ws, welcome = await emu.connect()
    condition = {"client_id": emu.settings.client_id}
    reply = await emu.subscribe_ws(session_id_of(welcome), token, "conduit.shard.disabled", "1", condition)
    assert_error_reply(reply, 403)
    await ws.close()


# 3. The WebSocket transport


async def test_welcome_frame_shape(emu: EmulatorClient) -> None:
    """WebSocket reference, Welcome message: metadata keys and ``payload.session`` keys."""
    ws, welcome = await emu.connect()
    assert_frame_metadata(welcome, "session_welcome")
    assert set(welcome["payload"]) == {"session"}
    session = welcome["payload"]["session"]
    assert set(session) == {"id", "status", "connected_at", "keepalive_timeout_seconds", "reconnect_url"}
    assert isinstance(session["id"], str)
    assert session["status"] == "connected"
    assert TIMESTAMP.match(session["connected_at"])
    assert session["keepalive_timeout_seconds"] == 10
    assert session["reconnect_url"] is None
    await ws.close()


@pytest.mark.parametrize(("raw", "expected"), [("10", 10), ("600", 600), ("9", 10), ("601", 600), ("-5", 10)])
async def test_keepalive_timeout_clamped(emu: EmulatorClient, raw: str, expected: int) -> None:
    """WebSocket reference: ``keepalive_timeout_seconds`` is 10-600 and other numbers are clamped."""
    ws, welcome = await emu.connect(f"{emu.ws_url}?keepalive_timeout_seconds={raw}")
    assert welcome["payload"]["session"]["keepalive_timeout_seconds"] == expected
    await ws.close()


async def test_keepalive_frame_shape(start_emulator) -> None:
    """WebSocket reference, Keepalive message: an empty payload, sent after the keepalive timeout of silence."""
    emu = await start_emulator(time_scale=0.02, bind_deadline_s=1000)
    ws, _ = await emu.connect()
    frame = await receive_json(ws, timeout_s=2)
    assert_frame_metadata(frame, "session_keepalive")
    assert frame["payload"] == {}
    await ws.close()


async def test_server_pings_do_not_delay_keepalive(start_emulator) -> None:
    """Handling WebSocket events: pings do not reset the keepalive timer."""
    emu = await start_emulator(time_scale=0.02, bind_deadline_s=1000, ping_interval_s=2)
    ws, _ = await emu.connect()
    started = asyncio.get_running_loop().time()
    frame = await receive_json(ws, timeout_s=2)
    elapsed = asyncio.get_running_loop().time() - started
    assert frame["metadata"]["message_type"] == "session_keepalive"
    assert elapsed < 0.5
    sessions = (await emu.control("GET", "/sessions")).body
    assert sessions[0]["counters"]["pings_sent"] >= 2
    await ws.close()


async def test_notification_frame_shape(emu: EmulatorClient) -> None:
    """WebSocket reference, Notification message: subscription keys; conduit transport ``{"method", "conduit_id"}``."""
    conduit_id = await emu.create_conduit(1)
    ws, _ = await _bound_socket(emu, conduit_id)
    created = await emu.subscribe(conduit_id)
    await _generate(emu, 1)
    frame = await receive_json(ws)
    metadata = assert_frame_metadata(frame, "notification")
    assert metadata["subscription_type"] == "stream.online"
    assert metadata["subscription_version"] == "1"
    assert set(frame["payload"]) == {"subscription", "event"}
    subscription = frame["payload"]["subscription"]
    assert subscription == created.body["data"][0]
    assert subscription["transport"] == {"method": "conduit", "conduit_id": conduit_id}
    assert frame["payload"]["event"]["broadcaster_user_id"] == "1001"
    await ws.close()


async def test_reconnect_frame_and_handoff(emu: EmulatorClient) -> None:
    """WebSocket reference, Reconnect message: same session id on the new socket; shards stay enabled."""
    conduit_id = await emu.create_conduit(1)
    old_ws, session_id = await _bound_socket(emu, conduit_id)
    reply = await emu.control("POST", "/sessions/reconnect", json={"session_ids": [session_id]})
    assert reply.body == {"session_ids": [session_id]}
    frame = await receive_json(old_ws)
    assert_frame_metadata(frame, "session_reconnect")
    session = frame["payload"]["session"]
    assert set(session) == {"id", "status", "keepalive_timeout_seconds", "reconnect_url", "connected_at"}
    assert session["id"] == session_id
    assert session["status"] == "reconnecting"
    assert session["keepalive_timeout_seconds"] is None
    assert session["reconnect_url"].startswith(emu.ws_url)
    assert TIMESTAMP.match(session["connected_at"])

    new_ws, welcome = await emu.connect(session["reconnect_url"])
    assert_frame_metadata(welcome, "session_welcome")
    assert session_id_of(welcome) == session_id
    assert welcome["payload"]["session"]["reconnect_url"] is None
    await receive_until_closed(old_ws)
    assert old_ws.close_code == 1000
    assert await _shard_status(emu, conduit_id, "0") == "enabled"
    await new_ws.close()


async def test_drop_gives_new_session(emu: EmulatorClient) -> None:
    """Handling WebSocket events: after an unexpected drop the new socket has a new session that needs a bind."""
    conduit_id = await emu.create_conduit(1)
    ws, old_session = await _bound_socket(emu, conduit_id)
    await emu.api.drop(shard_ids=["0"])
    await receive_until_closed(ws)
    new_ws, welcome = await emu.connect()
    assert session_id_of(welcome) != old_session
    await wait_for(lambda: _status_is(emu, conduit_id, "0", "websocket_disconnected"))
    reply = await emu.bind(conduit_id, {"0": session_id_of(welcome)})
    assert reply.status == 202
    assert reply.body["data"][0]["status"] == "enabled"
    await new_ws.close()


@pytest.mark.parametrize("kind", ["text", "binary"])
async def test_inbound_frame_closes_4001(emu: EmulatorClient, kind: str) -> None:
    """Handling WebSocket events: a client may send only Pong frames; anything else is closed with 4001."""
    conduit_id = await emu.create_conduit(1)
    ws, _ = await _bound_socket(emu, conduit_id)
    if kind == "text":
        await ws.send_str("{}")
    else:
        await ws.send_bytes(b"\x00")
    await receive_until_closed(ws)
    assert ws.close_code == 4001
    await wait_for(lambda: _status_is(emu, conduit_id, "0", "websocket_received_inbound_traffic"))


async def test_revocation_frame_sent_once(emu: EmulatorClient) -> None:
    """WebSocket reference, Revocation message: sent once, with the subscription's new status."""
    conduit_id = await emu.create_conduit(1)
    ws, _ = await _bound_socket(emu, conduit_id)
    created = await emu.subscribe(conduit_id)
    subscription_id = created.body["data"][0]["id"]
    first = await emu.control("POST", "/revoke", json={"subscription_ids": [subscription_id], "status": "version_removed"})
    assert first.body["frames_sent"] == [subscription_id]
    frame = await receive_json(ws)
    metadata = assert_frame_metadata(frame, "revocation")
    assert metadata["subscription_type"] == "stream.online"
    assert set(frame["payload"]) == {"subscription"}
    assert frame["payload"]["subscription"]["status"] == "version_removed"
    assert frame["payload"]["subscription"]["id"] == subscription_id

    again = await emu.control("POST", "/revoke", json={"subscription_ids": [subscription_id], "status": "user_removed"})
    assert again.status == 200
    assert again.body["frames_sent"] == []
    assert again.body["not_enabled"] == [subscription_id]
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=0.2)
    listed = await emu.helix("GET", "/eventsub/subscriptions", params={"subscription_id": subscription_id})
    assert listed.body["data"][0]["status"] == "version_removed"
    await ws.close()


async def test_websocket_subscription_202_shape(emu: EmulatorClient) -> None:
    """Handling WebSocket events: a user token creates WebSocket subscriptions with a budget of 10."""
    token = await emu.user_token("1001")
    ws, welcome = await emu.connect()
    session_id = session_id_of(welcome)
    reply = await emu.subscribe_ws(session_id, token)
    assert reply.status == 202
    data = assert_subscription_list(reply.body, paginated=False)
    assert reply.body["max_total_cost"] == 10
    transport = data[0]["transport"]
    assert set(transport) == {"method", "session_id", "connected_at"}
    assert transport["session_id"] == session_id

    app_reply = await emu.subscribe_ws(session_id, emu.token or "", condition={"broadcaster_user_id": "1002"})
    assert_error_reply(app_reply, 400)
    await ws.close()


async def test_websocket_limit_errors_shape(start_emulator) -> None:
    """Handling WebSocket events: 3 connections per user and 300 subscriptions per connection."""
    # Pongs are not required because this test never reads the sockets, so aiohttp never sends pongs.
    emu = await start_emulator(bind_deadline_s=1000, ws_max_total_cost=1000, expect_pongs=False)
    defaults = EmulatorSettings()
    assert defaults.ws_max_connections_per_user == 3
    assert defaults.ws_max_subscriptions_per_connection == 300
    token = await emu.user_token("1001")
    sockets = [await emu.connect() for _ in range(4)]
    session_ids = [session_id_of(welcome) for _, welcome in sockets]
    for index in range(300):
        reply = await emu.subscribe_ws(session_ids[0], token, condition={"broadcaster_user_id": str(20_000 + index)})
        assert reply.status == 202, reply.body
    per_connection = await emu.subscribe_ws(session_ids[0], token, condition={"broadcaster_user_id": "29999"})
    assert_error_reply(per_connection, 429)
    assert ratelimit_values(per_connection)["Ratelimit-Remaining"] > 0

    for session_id in session_ids[1:3]:
        assert (await emu.subscribe_ws(session_id, token)).status == 202
    fourth = await emu.subscribe_ws(session_ids[3], token, condition={"broadcaster_user_id": "1002"})
    assert_error_reply(fourth, 429)
    for ws, _ in sockets:
        await ws.close()


# 4. Subscriptions


async def test_create_subscription_202_shape(emu: EmulatorClient) -> None:
    """API reference, Create EventSub Subscription: 202 with ``data``, ``total``, ``total_cost``, ``max_total_cost``."""
    conduit_id = await emu.create_conduit(1)
    reply = await emu.subscribe(conduit_id)
    assert reply.status == 202
    data = assert_subscription_list(reply.body, paginated=False)
    assert len(data) == 1
    assert data[0]["status"] == "enabled"
    assert data[0]["transport"] == {"method": "conduit", "conduit_id": conduit_id}
    assert data[0]["condition"] == {"broadcaster_user_id": "1001"}
    assert reply.body["total"] == 1
    assert reply.body["total_cost"] == 1
    assert reply.body["max_total_cost"] == 10_000


async def test_create_subscription_400(emu: EmulatorClient) -> None:
    """API reference, Create EventSub Subscription: 400 for a bad type, version, condition or conduit id."""
    conduit_id = await emu.create_conduit(1)
    cases = [
        await emu.subscribe(conduit_id, sub_type="stream.nonexistent"),
        await emu.subscribe(conduit_id, version="9"),
        await emu.subscribe(conduit_id, condition={}),
        await emu.subscribe(conduit_id, condition={"broadcaster_user_id": "1001", "extra": "1"}),
        await emu.helix("POST", "/eventsub/subscriptions", json={
            "type": "stream.online", "version": "1", "condition": {"broadcaster_user_id": "1"},
            "transport": {"method": "conduit"},
        }),
    ]
    for reply in cases:
        assert_error_reply(reply, 400)


async def test_create_subscription_401_403(emu: EmulatorClient) -> None:
    """API reference, Create EventSub Subscription: 401 without a valid token, 403 without authorization."""
    conduit_id = await emu.create_conduit(1)
    body = {
        "type": "stream.online", "version": "1", "condition": {"broadcaster_user_id": "1001"},
        "transport": {"method": "conduit", "conduit_id": conduit_id},
    }
    no_token = await emu.helix("POST", "/eventsub/subscriptions", json=body, token="not-a-token")
    assert_error_reply(no_token, 401)

    await emu.api.deauthorize(["1001"])
    condition = {"broadcaster_user_id": "1001", "user_id": "9"}
    forbidden = await emu.subscribe(conduit_id, "channel.chat.message", "1", condition)
    assert_error_reply(forbidden, 403)


async def test_create_subscription_409(emu: EmulatorClient) -> None:
    """API reference, Create EventSub Subscription: 409 for the same type, version and condition."""
    conduit_id = await emu.create_conduit(1)
    assert (await emu.subscribe(conduit_id)).status == 202
    reply = await emu.subscribe(conduit_id)
    assert_error_reply(reply, 409)
    listed = await emu.helix("GET", "/eventsub/subscriptions")
    assert len(assert_subscription_list(listed.body, paginated=True)) == 1


async def test_limit_429_told_apart_by_headers(start_emulator) -> None:
    """API reference: a limit 429 keeps ``Ratelimit-Remaining`` above 0; a rate-limit 429 shows 0."""
    # A slow clock keeps the emptied bucket from refilling before the next call.
    emu = await start_emulator(time_scale=100)
    conduit_id = await emu.create_conduit(1)
    await emu.api.add_fault(kind="subscription_limit", count=1)
    limit = await emu.subscribe(conduit_id)
    assert_error_reply(limit, 429)
    assert ratelimit_values(limit)["Ratelimit-Remaining"] > 0

    await emu.api.empty_rate_limit()
    rate = await emu.subscribe(conduit_id)
    assert_error_reply(rate, 429)
    assert ratelimit_values(rate)["Ratelimit-Remaining"] == 0
    assert limit.body["message"] != rate.body["message"]


async def test_same_type_condition_429(start_emulator) -> None:
    """API reference, Create EventSub Subscription: 429 for too many subscriptions with one type and condition."""
    emu = await start_emulator(bind_deadline_s=1000, max_same_type_condition=1)
    token = await emu.user_token("1001")
    first, first_welcome = await emu.connect()
    second, second_welcome = await emu.connect()
    assert (await emu.subscribe_ws(session_id_of(first_welcome), token)).status == 202
    reply = await emu.subscribe_ws(session_id_of(second_welcome), token)
    assert_error_reply(reply, 429)
    assert reply.body["message"] == "too many subscriptions with the same type and condition"
    assert ratelimit_values(reply)["Ratelimit-Remaining"] > 0
    await first.close()
    await second.close()


async def test_list_subscriptions_filters(emu: EmulatorClient) -> None:
    """API reference, Get EventSub Subscriptions: one of ``status``, ``type``, ``user_id``, ``subscription_id``."""
    conduit_id = await emu.create_conduit(1)
    online = (await emu.subscribe(conduit_id, condition={"broadcaster_user_id": "1001"})).body["data"][0]
    update = (await emu.subscribe(conduit_id, "channel.update", "2", {"broadcaster_user_id": "1002"})).body["data"][0]
    await emu.api.revoke([update["id"]], status="authorization_revoked")

    cases = {
        "status": ("enabled", [online["id"]]),
        "type": ("channel.update", [update["id"]]),
        "user_id": ("1001", [online["id"]]),
        "subscription_id": (update["id"], [update["id"]]),
    }
    for name, (value, expected) in cases.items():
        reply = await emu.helix("GET", "/eventsub/subscriptions", params={name: value})
        assert reply.status == 200, name
        data = assert_subscription_list(reply.body, paginated=True)
        assert [subscription["id"] for subscription in data] == expected, name

    both = await emu.helix("GET", "/eventsub/subscriptions", params={"status": "enabled", "type": "stream.online"})
    assert_error_reply(both, 400)


async def test_list_subscriptions_pagination(start_emulator) -> None:
    """API reference, Get EventSub Subscriptions: page with ``after`` until ``pagination`` has no cursor."""
    emu = await start_emulator(page_size=2)
    conduit_id = await emu.create_conduit(1)
    created = []
    for index in range(5):
        reply = await emu.subscribe(conduit_id, condition={"broadcaster_user_id": str(3000 + index)})
        created.append(reply.body["data"][0]["id"])
    seen: list[str] = []
    params: dict[str, str] = {}
    while True:
        reply = await emu.helix("GET", "/eventsub/subscriptions", params=params)
        assert reply.status == 200
        seen.extend(subscription["id"] for subscription in assert_subscription_list(reply.body, paginated=True))
        cursor = reply.body["pagination"].get("cursor")
        if cursor is None:
            break
        params = {"after": cursor}
    assert seen == created


async def test_disabled_websocket_subscription_listed(start_emulator) -> None:
    """API reference, Get EventSub Subscriptions: a disabled WebSocket subscription stays listed for a minute."""
    assert EmulatorSettings().disabled_subscription_ttl_s >= 60
    emu = await start_emulator(time_scale=0.01)
    token = await emu.user_token("1001")
    ws, welcome = await emu.connect()
    assert (await emu.subscribe_ws(session_id_of(welcome), token)).status == 202
    await ws.close()

    async def listed_status() -> str | None:
        reply = await emu.helix("GET", "/eventsub/subscriptions", token=token)
        data = assert_subscription_list(reply.body, paginated=True)
        return data[0]["status"] if data else None

    await wait_for(lambda: _equals(listed_status(), "websocket_disconnected"))
    await asyncio.sleep(0.3)
    assert await listed_status() == "websocket_disconnected"


async def _equals(awaitable, expected) -> bool:
    return (await awaitable) == expected


async def test_delete_subscription_204_404(emu: EmulatorClient) -> None:
    """API reference, Delete EventSub Subscription: 204, then 404 for the same id."""
    conduit_id = await emu.create_conduit(1)
    subscription_id = (await emu.subscribe(conduit_id)).body["data"][0]["id"]
    reply = await emu.helix("DELETE", "/eventsub/subscriptions", params={"id": subscription_id})
    assert reply.status == 204
    assert reply.body is None
    again = await emu.helix("DELETE", "/eventsub/subscriptions", params={"id": subscription_id})
    assert_error_reply(again, 404)
    assert_error_reply(await emu.helix("DELETE", "/eventsub/subscriptions"), 400)


@pytest.mark.parametrize("status", ["authorization_revoked", "moderator_removed", "user_removed", "version_removed"])
async def test_revoked_subscription_status(emu: EmulatorClient, status: str) -> None:
    """API reference, Get EventSub Subscriptions: revoked subscriptions show the documented status."""
    conduit_id = await emu.create_conduit(1)
    subscription_id = (await emu.subscribe(conduit_id)).body["data"][0]["id"]
    result = await emu.api.revoke([subscription_id], status=status)
    assert result["revoked"] == [subscription_id]
    reply = await emu.helix("GET", "/eventsub/subscriptions", params={"subscription_id": subscription_id})
    data = assert_subscription_list(reply.body, paginated=True)
    assert data[0]["status"] == status
    assert reply.body["total_cost"] == 0


async def test_subscription_cost_rules(emu: EmulatorClient) -> None:
    """Managing subscriptions: cost 0 for types that need the user's authorization or an authorizing user, else 1."""
    conduit_id = await emu.create_conduit(1)
    unauthorized = await emu.subscribe(conduit_id, condition={"broadcaster_user_id": "4001"})
    follow = await emu.subscribe(conduit_id, "channel.follow", "2", {"broadcaster_user_id": "4001", "moderator_user_id": "4001"})
    chat = await emu.subscribe(conduit_id, "channel.chat.message", "1", {"broadcaster_user_id": "4001", "user_id": "9"})
    await emu.api.authorize(["4002"])
    authorized = await emu.subscribe(conduit_id, condition={"broadcaster_user_id": "4002"})
    costs = [reply.body["data"][0]["cost"] for reply in (unauthorized, follow, chat, authorized)]
    assert costs == [1, 0, 0, 0]
    assert authorized.body["total_cost"] == 1
    assert authorized.body["max_total_cost"] == 10_000


# 5. Rate limits


async def test_ratelimit_headers_on_responses(start_emulator) -> None:
    """API guide, rate limits: ``Ratelimit-Limit``, ``-Remaining`` and ``-Reset`` (Unix seconds) on Helix responses."""
    # A slow clock keeps the bucket from refilling a point between two calls.
    emu = await start_emulator(time_scale=100)
    first = await emu.helix("GET", "/eventsub/conduits")
    values = ratelimit_values(first)
    assert values["Ratelimit-Limit"] == 800
    assert values["Ratelimit-Remaining"] == 799
    assert values["Ratelimit-Reset"] >= int(time.time())

    replies = [
        await emu.helix("POST", "/eventsub/conduits", json={"shard_count": 1}),
        await emu.helix("DELETE", "/eventsub/conduits", params={"id": "no-such-conduit"}),
        await emu.helix("GET", "/eventsub/subscriptions"),
    ]
    remaining = [ratelimit_values(reply)["Ratelimit-Remaining"] for reply in replies]
    assert remaining == [798, 797, 796]


async def test_ratelimit_429_until_reset(start_emulator) -> None:
    """API guide, rate limits: an empty bucket gives 429 with remaining 0 until ``Ratelimit-Reset``."""
    # Two points a minute, 50 times faster: one point comes back every 0.6 s (real).
    emu = await start_emulator(time_scale=0.02, rate_limit_per_min=2)
    await emu.api.empty_rate_limit()
    reply = await emu.helix("POST", "/eventsub/conduits", json={"shard_count": 1})
    assert_error_reply(reply, 429)
    values = ratelimit_values(reply)
    assert values["Ratelimit-Limit"] == 2
    assert values["Ratelimit-Remaining"] == 0
    assert values["Ratelimit-Reset"] >= int(time.time())

    await asyncio.sleep(max(0.0, values["Ratelimit-Reset"] - time.time()) + 0.05)
    listed = await emu.helix("GET", "/eventsub/conduits")
    assert listed.status == 200
    assert assert_conduit_list(listed.body) == []
    assert ratelimit_values(listed)["Ratelimit-Remaining"] >= 1


async def test_ratelimit_bucket_shared(start_emulator) -> None:
    """API guide, rate limits: app-token requests of one client id share one bucket."""
    emu = await start_emulator(time_scale=100)
    first_token = emu.token
    second_token = await emu.app_token()
    assert first_token != second_token
    first = await emu.helix("GET", "/eventsub/conduits", token=first_token)
    second = await emu.helix("GET", "/eventsub/conduits", token=second_token)
    assert ratelimit_values(second)["Ratelimit-Remaining"] == ratelimit_values(first)["Ratelimit-Remaining"] - 1


async def test_ratelimit_user_tokens_have_own_buckets(start_emulator) -> None:
    """API guide, rate limits: user-token requests use a bucket per client id and user, apart from the app's."""
    emu = await start_emulator(time_scale=100, rate_limit_per_min=3)
    first_user = await emu.user_token("501")
    second_user = await emu.user_token("502")
    for _ in range(3):
        assert (await emu.helix("GET", "/eventsub/subscriptions", token=first_user)).status == 200
    assert (await emu.helix("GET", "/eventsub/subscriptions", token=first_user)).status == 429

    other_user = await emu.helix("GET", "/eventsub/subscriptions", token=second_user)
    app = await emu.helix("GET", "/eventsub/conduits")
    assert other_user.status == 200
    assert ratelimit_values(other_user)["Ratelimit-Remaining"] == 2
    assert app.status == 200
    assert ratelimit_values(app)["Ratelimit-Remaining"] == 2


# 6. App access token


async def _token_form(emu: EmulatorClient, **fields: str) -> Reply:
    form = {"client_id": emu.settings.client_id, "client_secret": emu.settings.client_secret, **fields}
    return await emu.request("POST", f"{emu.base_url}/oauth2/token", data=form)


async def test_app_token_shape(emu: EmulatorClient) -> None:
    """Authentication, client credentials grant: ``access_token``, ``expires_in`` and ``token_type`` only."""
    reply = await _token_form(emu, grant_type="client_credentials")
    assert reply.status == 200
    assert set(reply.body) == {"access_token", "expires_in", "token_type"}
    assert isinstance(reply.body["access_token"], str)
    assert type(reply.body["expires_in"]) is int
    assert reply.body["expires_in"] == 5_000_000
    assert reply.body["token_type"] == "bearer"


async def test_app_token_cannot_refresh(emu: EmulatorClient) -> None:
    """Authentication, refreshing tokens: app tokens have no refresh token; a refresh grant fails."""
    reply = await _token_form(emu, grant_type="refresh_token", refresh_token=emu.token or "")
    assert reply.status == 400
    assert set(reply.body) == {"status", "message"}
    assert reply.body["status"] == 400


async def test_invalid_token_401_then_new(emu: EmulatorClient) -> None:
    """Authentication: after a 401 the client gets a new app token, and it works."""
    result = await emu.api.invalidate_app_tokens()
    assert result["invalidated"] >= 1
    assert_error_reply(await emu.helix("GET", "/eventsub/conduits"), 401)
    await emu.app_token()
    reply = await emu.helix("GET", "/eventsub/conduits")
    assert reply.status == 200
    assert_conduit_list(reply.body)


async def test_validate_app_token_shape(emu: EmulatorClient) -> None:
    """Authentication, validating tokens: ``OAuth`` header; null ``login`` and ``user_id`` for an app token."""
    headers = {"Authorization": f"OAuth {emu.token}"}
    reply = await emu.request("GET", f"{emu.base_url}/oauth2/validate", headers=headers)
    assert reply.status == 200
    assert set(reply.body) == {"client_id", "login", "scopes", "user_id", "expires_in"}
    assert reply.body["client_id"] == emu.settings.client_id
    assert reply.body["login"] is None
    assert reply.body["user_id"] is None
    assert isinstance(reply.body["scopes"], list)
    assert type(reply.body["expires_in"]) is int
    assert 0 < reply.body["expires_in"] <= 5_000_000

    unknown = await emu.request("GET", f"{emu.base_url}/oauth2/validate", headers={"Authorization": "OAuth nope"})
    assert unknown.status == 401
    assert set(unknown.body) == {"status", "message"}


async def test_revoke_app_token(emu: EmulatorClient) -> None:
    """Authentication, revoking tokens: form ``client_id`` and ``token``; 200, then the token gets 401."""
    form = {"client_id": emu.settings.client_id, "token": emu.token or ""}
    reply = await emu.request("POST", f"{emu.base_url}/oauth2/revoke", data=form)
    assert reply.status == 200
    headers = {"Authorization": f"OAuth {emu.token}"}
    validated = await emu.request("GET", f"{emu.base_url}/oauth2/validate", headers=headers)
    assert validated.status == 401
    assert_error_reply(await emu.helix("GET", "/eventsub/conduits"), 401)
