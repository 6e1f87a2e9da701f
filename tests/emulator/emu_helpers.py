"""Test helpers: a small emulator client and WebSocket read helpers."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from emulator import EmulatorSettings
from emulator.client import EmulatorClient as ControlClient

FAST_SCALE = 0.05

# RFC 3339 UTC with 3, 6 or 9 fractional digits, the forms Twitch sends.
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.(\d{3}|\d{6}|\d{9})Z$")

# Shard statuses of the API reference (Get Conduit Shards).
SHARD_STATUSES = frozenset({
    "enabled", "webhook_callback_verification_pending", "webhook_callback_verification_failed",
    "notification_failures_exceeded", "websocket_disconnected", "websocket_failed_ping_pong",
    "websocket_received_inbound_traffic", "websocket_internal_error", "websocket_network_timeout",
    "websocket_network_error", "websocket_failed_to_reconnect",
})
# Subscription statuses: every shard status, the reference's own list, and conduit_deleted,
# which client authors report after a conduit is deleted.
SUBSCRIPTION_STATUSES = SHARD_STATUSES | {
    "authorization_revoked", "moderator_removed", "user_removed", "chat_user_banned", "version_removed",
    "beta_maintenance", "websocket_connection_unused", "conduit_deleted",
}
SUBSCRIPTION_KEYS = frozenset({"id", "status", "type", "version", "condition", "created_at", "transport", "cost"})
RATELIMIT_HEADERS = ("Ratelimit-Limit", "Ratelimit-Remaining", "Ratelimit-Reset")


@dataclasses.dataclass
class Reply:
    status: int
    body: Any
    headers: Any


class EmulatorClient:
    """A small Twitch client for tests: OAuth, Helix, control API and WebSockets."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, settings: EmulatorSettings) -> None:
        self.http = http
        self.base_url = base_url
        self.ws_url = base_url.replace("http://", "ws://") + "/ws"
        self.settings = settings
        self.token: str | None = None
        self.api = ControlClient(base_url, http)

    async def app_token(self) -> str:
        form = {
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret,
            "grant_type": "client_credentials",
        }
        async with self.http.post(f"{self.base_url}/oauth2/token", data=form) as response:
            assert response.status == 200
            self.token = (await response.json())["access_token"]
        return self.token

    async def request(self, method: str, url: str, **kwargs: Any) -> Reply:
        async with self.http.request(method, url, **kwargs) as response:
            raw = await response.read()
            body = orjson.loads(raw) if raw else None
            return Reply(response.status, body, response.headers)

    async def helix(self, method: str, path: str, json: Any = None, params: Any = None, token: str | None = None) -> Reply:
        headers = {"Authorization": f"Bearer {token or self.token}", "Client-Id": self.settings.client_id}
        return await self.request(method, f"{self.base_url}/helix{path}", json=json, params=params, headers=headers)

    async def control(self, method: str, path: str, json: Any = None, params: Any = None) -> Reply:
        return await self.request(method, f"{self.base_url}/_emulator{path}", json=json, params=params)

    async def create_conduit(self, shard_count: int) -> str:
        reply = await self.helix("POST", "/eventsub/conduits", json={"shard_count": shard_count})
        assert reply.status == 200, reply.body
        return reply.body["data"][0]["id"]

    async def connect(self, url: str | None = None) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
        ws = await self.http.ws_connect(url or self.ws_url)
        welcome = await receive_json(ws)
        assert welcome["metadata"]["message_type"] == "session_welcome"
        return ws, welcome

    async def bind(self, conduit_id: str, shard_sessions: dict[str, str]) -> Reply:
        shards = [
            {"id": shard_id, "transport": {"method": "websocket", "session_id": session_id}}
            for shard_id, session_id in shard_sessions.items()
        ]
        return await self.helix("PATCH", "/eventsub/conduits/shards", json={"conduit_id": conduit_id, "shards": shards})

    async def subscribe(self, conduit_id: str, sub_type: str = "stream.online", version: str = "1",
                        condition: dict[str, str] | None = None) -> Reply:
        body = {
            "type": sub_type,
            "version": version,
            "condition": {"broadcaster_user_id": "1001"} if condition is None else condition,
            "transport": {"method": "conduit", "conduit_id": conduit_id},
        }
        return await self.helix("POST", "/eventsub/subscriptions", json=body)

    async def user_token(self, user_id: str, scopes: list[str] | None = None) -> str:
        return (await self.api.user_token(user_id, scopes))["access_token"]

    async def subscribe_ws(self, session_id: str, token: str, sub_type: str = "stream.online", version: str = "1",
                           condition: dict[str, str] | None = None) -> Reply:
        body = {
            "type": sub_type,
            "version": version,
            "condition": {"broadcaster_user_id": "1001"} if condition is None else condition,
            "transport": {"method": "websocket", "session_id": session_id},
        }
        return await self.helix("POST", "/eventsub/subscriptions", json=body, token=token)

    async def shards(self, conduit_id: str) -> dict[str, dict[str, Any]]:
        reply = await self.helix("GET", "/eventsub/conduits/shards", params={"conduit_id": conduit_id})
        assert reply.status == 200, reply.body
        return {shard["id"]: shard for shard in reply.body["data"]}


async def receive_json(ws: aiohttp.ClientWebSocketResponse, timeout_s: float = 3.0) -> dict[str, Any]:
    message = await ws.receive(timeout=timeout_s)
    assert message.type == aiohttp.WSMsgType.TEXT, f"expected a text frame, got {message.type} {message.data!r}"
    return orjson.loads(message.data)


async def receive_until_closed(ws: aiohttp.ClientWebSocketResponse, timeout_s: float = 3.0) -> list[dict[str, Any]]:
    """Read text frames until the socket closes; return them."""
    received = []
    while True:
        message = await ws.receive(timeout=timeout_s)
        if message.type == aiohttp.WSMsgType.TEXT:
            received.append(orjson.loads(message.data))
            continue
        return received


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


EmulatorFactory = Callable[..., Awaitable[EmulatorClient]]


def session_id_of(welcome: dict[str, Any]) -> str:
    return welcome["payload"]["session"]["id"]


def assert_error_reply(reply: Reply, status: int) -> None:
    """Check a Helix error: ``status`` and a body of exactly ``error``, ``status`` and ``message``."""
    assert reply.status == status, reply.body
    assert set(reply.body) == {"error", "status", "message"}, reply.body
    assert reply.body["status"] == status
    assert isinstance(reply.body["error"], str)
    assert isinstance(reply.body["message"], str)
    assert reply.body["message"]


def ratelimit_values(reply: Reply) -> dict[str, int]:
    """Return the three ``Ratelimit-*`` headers as integers; fail if one is missing or not a number."""
    values = {}
    for name in RATELIMIT_HEADERS:
        assert name in reply.headers, f"{name} missing"
        assert reply.headers[name].isdigit(), f"{name}: {reply.headers[name]!r}"
        values[name] = int(reply.headers[name])
    return values


def assert_conduit_list(body: Any) -> list[dict[str, Any]]:
    """Check ``{"data": [{"id": str, "shard_count": int}]}`` and return ``data``."""
    assert set(body) == {"data"}, body
    assert isinstance(body["data"], list)
    for conduit in body["data"]:
        assert set(conduit) == {"id", "shard_count"}, conduit
        assert isinstance(conduit["id"], str)
        assert type(conduit["shard_count"]) is int
    return body["data"]


def assert_shard_shape(shard: Any) -> None:
    """Check one shard: string id, a documented status, and a websocket or webhook transport."""
    assert set(shard) == {"id", "status", "transport"}, shard
    assert isinstance(shard["id"], str)
    assert shard["id"].isdigit()
    assert shard["status"] in SHARD_STATUSES
    transport = shard["transport"]
    if transport["method"] == "webhook":
        assert set(transport) == {"method", "callback"}, transport
        assert isinstance(transport["callback"], str)
        return
    assert transport["method"] == "websocket"
    assert set(transport) <= {"method", "session_id", "connected_at", "disconnected_at"}, transport
    if "session_id" in transport:
        assert isinstance(transport["session_id"], str)
        assert TIMESTAMP.match(transport["connected_at"])
    if "disconnected_at" in transport:
        assert TIMESTAMP.match(transport["disconnected_at"])


def assert_shard_page(body: Any) -> list[dict[str, Any]]:
    """Check Get Conduit Shards: ``data`` of shards and ``pagination`` with an optional string cursor."""
    assert set(body) == {"data", "pagination"}, body
    assert isinstance(body["data"], list)
    for shard in body["data"]:
        assert_shard_shape(shard)
    assert set(body["pagination"]) <= {"cursor"}
    if "cursor" in body["pagination"]:
        assert isinstance(body["pagination"]["cursor"], str)
    return body["data"]


def assert_subscription_shape(subscription: Any) -> None:
    assert set(subscription) == SUBSCRIPTION_KEYS, subscription
    for key in ("id", "type", "version"):
        assert isinstance(subscription[key], str), key
    assert subscription["status"] in SUBSCRIPTION_STATUSES
    assert isinstance(subscription["condition"], dict)
    assert all(isinstance(value, str) for value in subscription["condition"].values())
    assert TIMESTAMP.match(subscription["created_at"])
    assert isinstance(subscription["transport"], dict)
    assert subscription["transport"]["method"] in ("conduit", "websocket")
    assert type(subscription["cost"]) is int


def assert_subscription_list(body: Any, paginated: bool) -> list[dict[str, Any]]:
    """Check a Create or Get EventSub Subscriptions body and return ``data``."""
    keys = {"data", "total", "total_cost", "max_total_cost"} | ({"pagination"} if paginated else set())
    assert set(body) == keys, body
    for key in ("total", "total_cost", "max_total_cost"):
        assert type(body[key]) is int, key
    for subscription in body["data"]:
        assert_subscription_shape(subscription)
    if paginated:
        assert set(body["pagination"]) <= {"cursor"}
    return body["data"]


def assert_frame_metadata(frame: Any, message_type: str) -> dict[str, Any]:
    """Check a WebSocket frame's top level and ``metadata`` keys; return ``metadata``."""
    assert set(frame) == {"metadata", "payload"}, frame
    metadata = frame["metadata"]
    keys = {"message_id", "message_type", "message_timestamp"}
    if message_type in ("notification", "revocation"):
        keys |= {"subscription_type", "subscription_version"}
    assert set(metadata) == keys, metadata
    assert metadata["message_type"] == message_type
    assert isinstance(metadata["message_id"], str)
    assert TIMESTAMP.match(metadata["message_timestamp"])
    return metadata
