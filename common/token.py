"""The app access token, shared by the whole fleet through Redis.

Twitch app tokens (client credentials) cannot be refreshed, only replaced, and they can be
invalidated at any time, so the manager renews at 90 % of the token's life and after a 401
(Twitch authentication guide). One process renews at a time: a Redis lock across the fleet and an
asyncio lock inside the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp
import orjson
import redis.asyncio as redis

from .errors import TokenError
from .keys import Keys
from .settings import Settings

log = logging.getLogger(__name__)

RENEW_AT_FRACTION = 0.9
LOCK_TTL_MS = 15_000


class AppTokenManager:
    """Returns a valid app token, renewing it when it ages or Helix rejects it."""

    def __init__(
        self,
        settings: Settings,
        redis_client: redis.Redis,
        http: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._redis = redis_client
        self._http = http
        self._keys = Keys(settings.key_prefix)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token = ""
        self._renew_at_s = 0.0
        self.renewals = 0
        self.last_error = ""

    async def get(self) -> str:
        """Return a token that is not due for renewal, renewing it if needed."""
        if self._token and self._clock() < self._renew_at_s:
            return self._token
        async with self._lock:
            if self._token and self._clock() < self._renew_at_s:
                return self._token
            if await self._load_shared():
                return self._token
            await self._renew(stale="")
            return self._token

    async def invalidate(self, token: str) -> None:
        """Drop `token` after Helix answered 401 with it, and get a new one (once per bad token)."""
        async with self._lock:
            await self._load_shared()
            if self._token and self._token != token and self._clock() < self._renew_at_s:
                return  # someone already replaced it
            await self._renew(stale=token)

    async def validate(self) -> dict:
        """Call /oauth2/validate with the current token; return its JSON or raise TokenError on 401."""
        token = await self.get()
        url = f"{self._settings.oauth_url}/validate"
        async with self._http.get(url, headers={"Authorization": f"OAuth {token}"}) as response:
            body = await response.read()
            if response.status == 401:
                await self.invalidate(token)
                raise TokenError("the app token failed validation (401); a new one was requested")
            if response.status != 200:
                raise TokenError(f"token validation failed with HTTP {response.status}")
            return orjson.loads(body)

    async def _load_shared(self) -> bool:
        stored = await self._redis.hgetall(self._keys.token)
        if not stored:
            return False
        token = stored[b"access_token"].decode()
        renew_at_s = float(stored[b"renew_at_s"])
        if self._clock() >= renew_at_s:
            return False
        self._token, self._renew_at_s = token, renew_at_s
        return True

    async def _renew(self, *, stale: str) -> None:
        owner = f"{id(self)}-{self._clock()}"
        deadline = self._clock() + LOCK_TTL_MS / 1000
        while not await self._redis.set(self._keys.token_lock, owner, nx=True, px=LOCK_TTL_MS):
            # Another process is renewing: wait for its token instead of asking Twitch twice.
            await asyncio.sleep(0.05)
            if await self._load_shared() and self._token != stale:
                return
            if self._clock() > deadline:
                raise TokenError("timed out waiting for another process to renew the app token")
        try:
            # Another process may have stored a new token between our last read and taking the lock.
            if await self._load_shared() and self._token != stale:
                return
            await self._request_token()
        finally:
            await self._redis.delete(self._keys.token_lock)

    async def _request_token(self) -> None:
        settings = self._settings
        if not settings.client_id or not settings.client_secret:
            raise TokenError("missing TWITCH_CLIENT_ID or TWITCH_CLIENT_SECRET: set both to get an app token")
        form = {
            "client_id": settings.client_id,
            "client_secret": settings.client_secret,
            "grant_type": "client_credentials",
        }
        try:
            async with self._http.post(f"{settings.oauth_url}/token", data=form) as response:
                body = await response.read()
                status = response.status
        except aiohttp.ClientError as exc:
            self.last_error = f"network error: {exc}"
            raise TokenError(f"app token request to {settings.oauth_url} failed: {exc}") from exc
        if status != 200:
            self.last_error = f"HTTP {status}"
            raise TokenError(f"app token request failed with HTTP {status}: check TWITCH_CLIENT_ID and TWITCH_CLIENT_SECRET")
        answer = orjson.loads(body)
        now = self._clock()
        lifetime_s = float(answer["expires_in"]) * settings.time_scale
        self._token = answer["access_token"]
        self._renew_at_s = now + lifetime_s * RENEW_AT_FRACTION
        await self._redis.hset(self._keys.token, mapping={
            "access_token": self._token,
            "obtained_at_s": now,
            "expires_at_s": now + lifetime_s,
            "renew_at_s": self._renew_at_s,
        })
        self.renewals += 1
        self.last_error = ""
        log.info("app token renewed; valid for %.0f s", lifetime_s)
