"""Test helpers: a small emulator client and WebSocket read helpers."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from emulator import EmulatorSettings
from emulator.client import EmulatorClient as ControlClient

FAST_SCALE = 0.05


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
