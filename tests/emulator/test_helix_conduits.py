"""Helix conduit and conduit-shard endpoints."""

from __future__ import annotations

from emu_helpers import EmulatorClient


async def test_conduit_create_and_list(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(4)
    reply = await emu.helix("GET", "/eventsub/conduits")
    assert reply.status == 200
    assert reply.body == {"data": [{"id": conduit_id, "shard_count": 4}]}


async def test_conduit_limit_429(start_emulator) -> None:
    emu = await start_emulator(max_conduits=2)
    await emu.create_conduit(1)
    await emu.create_conduit(1)
    reply = await emu.helix("POST", "/eventsub/conduits", json={"shard_count": 1})
    assert reply.status == 429
    assert reply.body == {"error": "Too Many Requests", "status": 429, "message": "conduit limit reached"}
    assert int(reply.headers["Ratelimit-Remaining"]) > 0


async def test_conduit_bad_shard_count_400(emu: EmulatorClient) -> None:
    for bad in (0, -1, 20_001, "3", 1.5, True, None):
        reply = await emu.helix("POST", "/eventsub/conduits", json={"shard_count": bad})
        assert reply.status == 400, bad
        assert reply.body["error"] == "Bad Request"


async def test_conduit_resize_removes_shards(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(5)
    reply = await emu.helix("PATCH", "/eventsub/conduits", json={"id": conduit_id, "shard_count": 2})
    assert reply.status == 200
    assert reply.body["data"] == [{"id": conduit_id, "shard_count": 2}]
    assert sorted(await emu.shards(conduit_id)) == ["0", "1"]
    grown = await emu.helix("PATCH", "/eventsub/conduits", json={"id": conduit_id, "shard_count": 3})
    assert grown.body["data"][0]["shard_count"] == 3
    unknown = await emu.helix("PATCH", "/eventsub/conduits", json={"id": "nope", "shard_count": 2})
    assert unknown.status == 404


async def test_conduit_delete_marks_subscriptions(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(1)
    created = await emu.subscribe(conduit_id)
    assert created.status == 202
    reply = await emu.helix("DELETE", "/eventsub/conduits", params={"id": conduit_id})
    assert reply.status == 204
    listed = await emu.helix("GET", "/eventsub/subscriptions")
    assert [s["status"] for s in listed.body["data"]] == ["conduit_deleted"]
    again = await emu.helix("DELETE", "/eventsub/conduits", params={"id": conduit_id})
    assert again.status == 404


async def test_shards_never_bound_shape(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(1)
    shards = await emu.shards(conduit_id)
    assert shards["0"] == {"id": "0", "status": "websocket_disconnected", "transport": {"method": "websocket"}}


async def test_shards_pagination(start_emulator) -> None:
    emu = await start_emulator(page_size=3)
    conduit_id = await emu.create_conduit(8)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"conduit_id": conduit_id, **({"after": cursor} if cursor else {})}
        reply = await emu.helix("GET", "/eventsub/conduits/shards", params=params)
        assert reply.status == 200
        seen.extend(shard["id"] for shard in reply.body["data"])
        pages += 1
        cursor = reply.body["pagination"].get("cursor")
        if not cursor:
            break
    assert seen == [str(i) for i in range(8)]
    assert pages == 3


async def test_shards_status_filter(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(3)
    ws, welcome = await emu.connect()
    session_id = welcome["payload"]["session"]["id"]
    await emu.bind(conduit_id, {"1": session_id})
    reply = await emu.helix("GET", "/eventsub/conduits/shards", params={"conduit_id": conduit_id, "status": "enabled"})
    assert [shard["id"] for shard in reply.body["data"]] == ["1"]
    transport = reply.body["data"][0]["transport"]
    assert transport["session_id"] == session_id
    assert transport["connected_at"].endswith("Z")
    await ws.close()


async def test_shards_errors_404_400(emu: EmulatorClient) -> None:
    missing = await emu.helix("GET", "/eventsub/conduits/shards")
    assert missing.status == 400
    unknown = await emu.helix("GET", "/eventsub/conduits/shards", params={"conduit_id": "nope"})
    assert unknown.status == 404


async def test_update_shards_partial_success(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(2)
    ws, welcome = await emu.connect()
    session_id = welcome["payload"]["session"]["id"]
    reply = await emu.bind(conduit_id, {"0": session_id, "1": "no-such-session", "5": session_id})
    assert reply.status == 202
    assert [shard["id"] for shard in reply.body["data"]] == ["0"]
    assert reply.body["data"][0]["status"] == "enabled"
    assert reply.body["errors"] == [
        {"id": "1", "message": "The websocket session is not connected.", "code": "invalid_parameter"},
        {"id": "5", "message": "The shard id is outside of the conduit's range.", "code": "invalid_parameter"},
    ]
    await ws.close()


async def test_update_shards_malformed_400(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(2)
    ws, welcome = await emu.connect()
    session_id = welcome["payload"]["session"]["id"]
    good = {"id": "0", "transport": {"method": "websocket", "session_id": session_id}}
    for bad in ({"transport": good["transport"]}, {"id": "1"}, {"id": "1", "transport": {"method": "carrier-pigeon"}}):
        reply = await emu.helix("PATCH", "/eventsub/conduits/shards", json={"conduit_id": conduit_id, "shards": [good, bad]})
        assert reply.status == 400, bad
    assert (await emu.shards(conduit_id))["0"]["status"] == "websocket_disconnected"
    await ws.close()


async def test_update_shards_unknown_conduit_404(emu: EmulatorClient) -> None:
    reply = await emu.bind("no-such-conduit", {"0": "x"})
    assert reply.status == 404


async def test_update_shards_webhook(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(1)
    transport = {"method": "webhook", "callback": "https://example.invalid/cb", "secret": "0123456789"}
    body = {"conduit_id": conduit_id, "shards": [{"id": "0", "transport": transport}]}
    reply = await emu.helix("PATCH", "/eventsub/conduits/shards", json=body)
    assert reply.status == 202
    assert reply.body["data"][0]["status"] == "webhook_callback_verification_pending"
    assert reply.body["data"][0]["transport"] == {"method": "webhook", "callback": "https://example.invalid/cb"}


async def test_shards_share_and_move_session(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(2)
    old_ws, old_welcome = await emu.connect()
    new_ws, new_welcome = await emu.connect()
    old_id = old_welcome["payload"]["session"]["id"]
    new_id = new_welcome["payload"]["session"]["id"]
    await emu.bind(conduit_id, {"0": old_id, "1": old_id})
    await emu.bind(conduit_id, {"0": new_id})
    await old_ws.close()
    shards = await emu.shards(conduit_id)
    assert shards["0"]["status"] == "enabled"
    assert shards["0"]["transport"]["session_id"] == new_id
    assert shards["1"]["status"] == "websocket_disconnected"
    assert "disconnected_at" in shards["1"]["transport"]
    await new_ws.close()
