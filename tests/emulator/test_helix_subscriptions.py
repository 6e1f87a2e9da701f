"""Helix subscription endpoints, rate limiting and fault injection."""

from __future__ import annotations

import time

from emu_helpers import EmulatorClient


async def test_subscription_create_shape(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(1)
    reply = await emu.subscribe(conduit_id)
    assert reply.status == 202
    data = reply.body["data"][0]
    assert data["status"] == "enabled"
    assert data["type"] == "stream.online"
    assert data["transport"] == {"method": "conduit", "conduit_id": conduit_id}
    assert data["cost"] == 1
    assert reply.body["total"] == 1
    assert reply.body["total_cost"] == 1
    assert reply.body["max_total_cost"] == 10_000


async def test_subscription_costs(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(1)
    chat = await emu.subscribe(conduit_id, "channel.chat.message", "1", {"broadcaster_user_id": "5", "user_id": "9"})
    assert chat.body["data"][0]["cost"] == 0
    await emu.control("POST", "/authorize", json={"user_ids": ["77"]})
    authorized = await emu.subscribe(conduit_id, condition={"broadcaster_user_id": "77"})
    assert authorized.body["data"][0]["cost"] == 0
    plain = await emu.subscribe(conduit_id, "channel.update", "2", {"broadcaster_user_id": "78"})
    assert plain.body["data"][0]["cost"] == 1


async def test_subscription_conflict_409(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(1)
    assert (await emu.subscribe(conduit_id)).status == 202
    reply = await emu.subscribe(conduit_id)
    assert reply.status == 409
    assert reply.body == {"error": "Conflict", "status": 409, "message": "subscription already exists"}


async def test_subscription_bad_requests_400(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(1)
    cases = [
        ("stream.online", "2", {"broadcaster_user_id": "1"}),
        ("no.such.type", "1", {"broadcaster_user_id": "1"}),
        ("channel.follow", "2", {"broadcaster_user_id": "1"}),
        ("stream.online", "1", {}),
    ]
    for sub_type, version, condition in cases:
        reply = await emu.subscribe(conduit_id, sub_type, version, condition)
        assert reply.status == 400, (sub_type, version, condition)
    body = {"type": "stream.online", "version": "1", "condition": {"broadcaster_user_id": "1"},
            "transport": {"method": "conduit"}}
    assert (await emu.helix("POST", "/eventsub/subscriptions", json=body)).status == 400
    body["transport"]["conduit_id"] = "no-such-conduit"
    unknown = await emu.helix("POST", "/eventsub/subscriptions", json=body)
    assert unknown.status == 400
    assert "not found" in unknown.body["message"]


async def test_subscription_cost_limit_429(start_emulator) -> None:
    emu = await start_emulator(max_total_cost=2)
    conduit_id = await emu.create_conduit(1)
    for user_id in ("1", "2"):
        assert (await emu.subscribe(conduit_id, condition={"broadcaster_user_id": user_id})).status == 202
    reply = await emu.subscribe(conduit_id, condition={"broadcaster_user_id": "3"})
    assert reply.status == 429
    assert reply.body["message"] == "cost limit exceeded"
    assert int(reply.headers["Ratelimit-Remaining"]) > 0


async def test_subscription_filters_and_pagination(start_emulator) -> None:
    emu = await start_emulator(page_size=2)
    conduit_id = await emu.create_conduit(1)
    for user_id in ("1", "2", "3"):
        await emu.subscribe(conduit_id, condition={"broadcaster_user_id": user_id})
    await emu.subscribe(conduit_id, "channel.update", "2", {"broadcaster_user_id": "2"})

    combined = await emu.helix("GET", "/eventsub/subscriptions", params={"type": "stream.online", "status": "enabled"})
    assert combined.status == 400
    by_type = await emu.helix("GET", "/eventsub/subscriptions", params={"type": "channel.update"})
    assert [s["type"] for s in by_type.body["data"]] == ["channel.update"]
    by_user = await emu.helix("GET", "/eventsub/subscriptions", params={"user_id": "2"})
    assert len(by_user.body["data"]) == 2

    ids: list[str] = []
    cursor = None
    while True:
        reply = await emu.helix("GET", "/eventsub/subscriptions", params={"after": cursor} if cursor else None)
        ids.extend(s["id"] for s in reply.body["data"])
        cursor = reply.body["pagination"].get("cursor")
        if not cursor:
            break
    assert len(ids) == len(set(ids)) == 4
    assert reply.body["total"] == 4


async def test_subscription_delete(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(1)
    created = await emu.subscribe(conduit_id)
    subscription_id = created.body["data"][0]["id"]
    assert (await emu.helix("DELETE", "/eventsub/subscriptions", params={"id": subscription_id})).status == 204
    assert (await emu.helix("DELETE", "/eventsub/subscriptions", params={"id": subscription_id})).status == 404
    assert (await emu.subscribe(conduit_id)).status == 202


async def test_ratelimit_headers_and_429(start_emulator) -> None:
    emu = await start_emulator(rate_limit_per_min=3, time_scale=1.0)
    first = await emu.helix("GET", "/eventsub/conduits")
    assert first.headers["Ratelimit-Limit"] == "3"
    assert first.headers["Ratelimit-Remaining"] == "2"
    assert int(first.headers["Ratelimit-Reset"]) >= int(time.time())
    await emu.helix("GET", "/eventsub/conduits")
    await emu.helix("GET", "/eventsub/conduits")
    limited = await emu.helix("POST", "/eventsub/conduits", json={"shard_count": 1})
    assert limited.status == 429
    assert limited.headers["Ratelimit-Remaining"] == "0"
    assert limited.body["error"] == "Too Many Requests"
    state = await emu.control("GET", "/state")
    assert state.body["conduits"] == []


async def test_ratelimit_refills_scaled(start_emulator) -> None:
    import asyncio

    emu = await start_emulator(rate_limit_per_min=2, time_scale=0.01)
    await emu.helix("GET", "/eventsub/conduits")
    await emu.helix("GET", "/eventsub/conduits")
    assert (await emu.helix("GET", "/eventsub/conduits")).status == 429
    await asyncio.sleep(0.35)
    assert (await emu.helix("GET", "/eventsub/conduits")).status == 200


async def test_observer_calls_skip_bucket_and_faults(start_emulator) -> None:
    emu = await start_emulator(rate_limit_per_min=2, time_scale=1.0)
    observer = {"Authorization": f"Bearer {emu.token}", "Client-Id": emu.settings.client_id,
                "X-Emulator-Observer": "1"}
    await emu.control("POST", "/faults", json={"method": "GET", "path": "/eventsub/conduits", "status": 503})
    for _ in range(5):
        watched = await emu.request("GET", f"{emu.base_url}/helix/eventsub/conduits", headers=observer)
        assert watched.status == 200
        assert watched.headers["Ratelimit-Remaining"] == "2"

    # The fault and both points are still there for the client being watched.
    assert (await emu.helix("GET", "/eventsub/conduits")).status == 503
    assert (await emu.helix("GET", "/eventsub/conduits")).status == 200
    assert (await emu.helix("GET", "/eventsub/conduits")).status == 429


async def test_fault_helix_status(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(1)
    fault = {"method": "PATCH", "path": "/eventsub/conduits/shards", "status": 500, "count": 1}
    assert (await emu.control("POST", "/faults", json=fault)).status == 201
    ws, welcome = await emu.connect()
    session_id = welcome["payload"]["session"]["id"]
    failed = await emu.bind(conduit_id, {"0": session_id})
    assert failed.status == 500
    assert (await emu.shards(conduit_id))["0"]["status"] == "websocket_disconnected"
    assert (await emu.bind(conduit_id, {"0": session_id})).status == 202
    await ws.close()


async def test_fault_shard_error(emu: EmulatorClient) -> None:
    conduit_id = await emu.create_conduit(2)
    await emu.control("POST", "/faults", json={"kind": "shard_error", "shard_ids": ["1"], "count": 1})
    ws, welcome = await emu.connect()
    session_id = welcome["payload"]["session"]["id"]
    reply = await emu.bind(conduit_id, {"0": session_id, "1": session_id})
    assert [shard["id"] for shard in reply.body["data"]] == ["0"]
    assert reply.body["errors"][0]["id"] == "1"
    assert reply.body["errors"][0]["message"] == "The websocket session is not connected."
    retry = await emu.bind(conduit_id, {"1": session_id})
    assert retry.body["errors"] == []
    await ws.close()


async def test_fault_clear(emu: EmulatorClient) -> None:
    fault = {"method": "GET", "path": "/eventsub/conduits", "status": 503, "count": 5, "body": {"custom": True}}
    await emu.control("POST", "/faults", json=fault)
    hit = await emu.helix("GET", "/eventsub/conduits")
    assert hit.status == 503
    assert hit.body == {"custom": True}
    assert (await emu.control("DELETE", "/faults")).status == 204
    assert (await emu.helix("GET", "/eventsub/conduits")).status == 200


async def test_helix_call_counters(emu: EmulatorClient) -> None:
    await emu.control("POST", "/counters/reset")
    await emu.helix("GET", "/eventsub/conduits")
    counters = await emu.control("GET", "/counters")
    assert counters.body["helix_calls"] == {"GET /eventsub/conduits": 1}
