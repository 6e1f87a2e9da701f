"""Async client for the emulator's control API (``/_emulator/``), for tests and tools.

Every method returns the decoded JSON body and raises ``ControlError`` for a status >= 400.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)


class ControlError(Exception):
    """Raised when the control API answers with a status of 400 or more."""

    def __init__(self, status: int, body: Any) -> None:
        message = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"control API returned {status}: {message}")
        self.status = status
        self.body = body


def _selection(session_ids: list[str] | None, shard_ids: list[str] | None, everything: bool) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if session_ids is not None:
        body["session_ids"] = session_ids
    if shard_ids is not None:
        body["shard_ids"] = shard_ids
    if everything:
        body["all"] = True
    return body


class EmulatorClient:
    """Control-API client. ``base_url`` is the emulator's ``http://HOST:PORT`` and ``session`` is the caller's."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = session

    async def _call(self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None) -> Any:
        url = f"{self.base_url}/_emulator{path}"
        async with self.http.request(method, url, json=body, params=params) as response:
            payload = await response.json(content_type=None) if response.status != 204 else None
            if response.status >= 400:
                raise ControlError(response.status, payload)
            return payload

    # Load generator

    async def generate(self, rate: float, *, wait: bool = False, **options: Any) -> dict[str, Any]:
        """Start a generator run. ``options`` are the other generator fields (count, duration_s, seed, ...)."""
        params = {"wait": "1"} if wait else None
        return await self._call("POST", "/generate", {"rate": rate, **options}, params)

    async def generator(self, run_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/generate/{run_id}")

    async def stop_generator(self, run_id: str) -> dict[str, Any]:
        return await self._call("DELETE", f"/generate/{run_id}")

    # Observation

    async def counters(self) -> dict[str, Any]:
        return await self._call("GET", "/counters")

    async def reset_counters(self) -> dict[str, Any]:
        return await self._call("POST", "/counters/reset")

    async def sessions(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/sessions")

    async def session(self, session_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/sessions/{session_id}")

    async def state(self) -> dict[str, Any]:
        return await self._call("GET", "/state")

    async def sent_frame(self, message_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/sent/{message_id}")

    async def helix_log(self, limit: int = 100) -> list[dict[str, Any]]:
        return await self._call("GET", "/helix-log", params={"limit": str(limit)})

    async def overview_html(self) -> str:
        async with self.http.get(f"{self.base_url}/_emulator/") as response:
            return await response.text()

    # Sessions

    async def drop(self, *, session_ids: list[str] | None = None, shard_ids: list[str] | None = None,
                   everything: bool = False, mode: str = "abrupt", code: int | None = None) -> dict[str, Any]:
        body = {**_selection(session_ids, shard_ids, everything), "mode": mode}
        if code is not None:
            body["code"] = code
        return await self._call("POST", "/sessions/drop", body)

    async def reconnect(self, *, session_ids: list[str] | None = None, shard_ids: list[str] | None = None,
                        everything: bool = False) -> dict[str, Any]:
        return await self._call("POST", "/sessions/reconnect", _selection(session_ids, shard_ids, everything))

    async def send_malformed(self, kind: str, *, session_ids: list[str] | None = None,
                             shard_ids: list[str] | None = None, everything: bool = False) -> dict[str, Any]:
        body = {**_selection(session_ids, shard_ids, everything), "kind": kind}
        return await self._call("POST", "/sessions/malformed", body)

    async def expect_pongs(self, expect: bool, *, session_ids: list[str] | None = None,
                           shard_ids: list[str] | None = None, everything: bool = False) -> dict[str, Any]:
        body = {**_selection(session_ids, shard_ids, everything), "expect": expect}
        return await self._call("POST", "/sessions/pongs", body)

    # Faults and conditions

    async def add_fault(self, **fault: Any) -> dict[str, Any]:
        """Add a fault whose request body is ``fault`` (kind, method, path, status, body, message, count, ...)."""
        return await self._call("POST", "/faults", fault)

    async def faults(self) -> dict[str, Any]:
        return await self._call("GET", "/faults")

    async def clear_faults(self) -> None:
        await self._call("DELETE", "/faults")

    async def empty_rate_limit(self, client_id: str | None = None) -> dict[str, Any]:
        return await self._call("POST", "/ratelimit/empty", {} if client_id is None else {"client_id": client_id})

    async def set_latency(self, *, helix_ms: int | None = None, websocket_ms: int | None = None) -> dict[str, Any]:
        body = {name: value for name, value in (("helix_ms", helix_ms), ("websocket_ms", websocket_ms)) if value is not None}
        return await self._call("POST", "/latency", body)

    async def latency(self) -> dict[str, Any]:
        return await self._call("GET", "/latency")

    async def set_delivery_drop(self, transport: str, ratio: float) -> dict[str, Any]:
        """Lose ``ratio`` (0 to 1) of the notifications of ``transport`` ("conduit" or "websocket"). 0 turns it off."""
        return await self._call("POST", "/delivery-drop", {"transport": transport, "ratio": ratio})

    async def delivery_drop(self) -> dict[str, Any]:
        return await self._call("GET", "/delivery-drop")

    async def revoke(self, subscription_ids: list[str], status: str = "authorization_revoked") -> dict[str, Any]:
        return await self._call("POST", "/revoke", {"subscription_ids": subscription_ids, "status": status})

    async def authorize(self, user_ids: list[str]) -> dict[str, Any]:
        return await self._call("POST", "/authorize", {"user_ids": user_ids})

    async def deauthorize(self, user_ids: list[str]) -> dict[str, Any]:
        return await self._call("POST", "/deauthorize", {"user_ids": user_ids})

    async def invalidate_app_tokens(self) -> dict[str, Any]:
        return await self._call("POST", "/tokens/invalidate")

    async def user_token(self, user_id: str, scopes: list[str] | None = None) -> dict[str, Any]:
        return await self._call("POST", "/user-tokens", {"user_id": user_id, "scopes": scopes or []})

    async def delete_conduit(self, conduit_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/conduits/{conduit_id}/delete")

    async def set_webhook_shard_status(self, shard_ids: list[str], status: str,
                                       conduit_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"shard_ids": shard_ids, "status": status}
        if conduit_id is not None:
            body["conduit_id"] = conduit_id
        return await self._call("POST", "/shards/status", body)
