"""The app access token and the user access token, each shared by the whole fleet through Redis.

Twitch app tokens (client credentials) cannot be refreshed, only replaced, and they can be
invalidated at any time, so the manager renews at 90 % of the token's life and after a 401
(Twitch authentication guide). User tokens come with a refresh token that Twitch replaces on every
refresh, so the newest pair lives in Redis and the settings only seed it. One process renews at a
time: a Redis lock across the fleet and an asyncio lock inside the process. Renewal failures raise
alerts, critical after `CRITICAL_AFTER_FAILURES` in a row. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp
import orjson
import redis.asyncio as redis

from .alerts import Alerts
from .errors import TokenError
from .keys import Keys
from .settings import Settings

log = logging.getLogger(__name__)

RENEW_AT_FRACTION = 0.9
LOCK_TTL_MS = 15_000
CRITICAL_AFTER_FAILURES = 3
# Re-validate a user token whose expiry Twitch does not state (expires_in 0) after this many seconds.
UNKNOWN_EXPIRY_RECHECK_S = 3600.0


class RenewalAlerts:
    """Counts consecutive renewal failures of one token kind and raises or resolves its alerts."""

    def __init__(self, alerts: Alerts | None, kind: str) -> None:
        self._alerts = alerts
        self._kind = kind
        self.consecutive_failures = 0

    async def failed(self, error: str) -> None:
        self.consecutive_failures += 1
        if self._alerts is None:
            return
        name = f"{self._kind}_renewal_failed"
        await self._alerts.fire(name, "warning", f"renewing the {self._kind.replace('_', ' ')} failed: {error}")
        if self.consecutive_failures >= CRITICAL_AFTER_FAILURES:
            await self._alerts.fire(f"{name}_repeatedly", "critical",
                                    f"renewing the {self._kind.replace('_', ' ')} failed {self.consecutive_failures} "
                                    f"times in a row; last error: {error}")

    async def succeeded(self) -> None:
        self.consecutive_failures = 0
        if self._alerts is None:
            return
        name = f"{self._kind}_renewal_failed"
        await self._alerts.resolve(name, "renewed")
        await self._alerts.resolve(f"{name}_repeatedly", "renewed")


class AppTokenManager:
    """Returns a valid app token, renewing it when it ages or Helix rejects it."""

    def __init__(
        self,
        settings: Settings,
        redis_client: redis.Redis,
        http: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
        alerts: Alerts | None = None,
    ) -> None:
        self._settings = settings
        self._redis = redis_client
        self._http = http
        self._keys = Keys(settings.key_prefix)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token = ""
        self._renew_at_s = 0.0
        self._failures = RenewalAlerts(alerts, "app_token")
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
        """Drop `token` after Helix returned 401 for it, and get a new one (once per bad token)."""
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
            try:
                await self._request_token()
            except TokenError as exc:
                await self._failures.failed(str(exc))
                raise
            await self._failures.succeeded()
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


class UserTokenManager:
    """Returns a valid user access token, refreshing it before it expires and after a 401.

    The first call seeds Redis (`cf:token:user`) from TWITCH_USER_ACCESS_TOKEN and
    TWITCH_USER_REFRESH_TOKEN. After that the stored pair wins, because every refresh retires the
    refresh token it used (Twitch authentication guide, "Refreshing access tokens").
    """

    def __init__(
        self,
        settings: Settings,
        redis_client: redis.Redis,
        http: aiohttp.ClientSession,
        *,
        clock: Callable[[], float] = time.time,
        alerts: Alerts | None = None,
    ) -> None:
        self._settings = settings
        self._redis = redis_client
        self._http = http
        self._keys = Keys(settings.key_prefix)
        self._clock = clock
        self._lock = asyncio.Lock()
        self._stored: dict[str, str] = {}
        self._failures = RenewalAlerts(alerts, "user_token")
        self.refreshes = 0

    @property
    def user_id(self) -> str:
        return self._stored.get("user_id", "")

    async def get(self) -> str:
        """Return a user token that is not due for refresh, refreshing or seeding it if needed."""
        if self._fresh():
            return self._stored["access_token"]
        async with self._lock:
            await self._load_shared()
            if self._fresh():
                return self._stored["access_token"]
            if not self._stored:
                await self._seed()
                if self._fresh():
                    return self._stored["access_token"]
            await self._refresh(stale=self._stored.get("access_token", ""))
            return self._stored["access_token"]

    async def invalidate(self, token: str) -> None:
        """Refresh after Twitch returned 401 for `token`, unless another process already did."""
        async with self._lock:
            await self._load_shared()
            if self._stored.get("access_token") not in ("", None, token) and self._fresh():
                return
            await self._refresh(stale=token)

    def _fresh(self) -> bool:
        return bool(self._stored) and self._clock() < float(self._stored.get("renew_at_s", 0))

    async def _load_shared(self) -> None:
        raw = await self._redis.hgetall(self._keys.user_token)
        self._stored = {key.decode(): value.decode() for key, value in raw.items()}

    async def _seed(self) -> None:
        settings = self._settings
        if not settings.user_access_token and not settings.user_refresh_token:
            raise TokenError("missing TWITCH_USER_ACCESS_TOKEN and TWITCH_USER_REFRESH_TOKEN: set them to use a user token")
        self._stored = {"access_token": settings.user_access_token, "refresh_token": settings.user_refresh_token,
                        "renew_at_s": "0"}
        if not settings.user_access_token:
            return
        answer = await self._validate(settings.user_access_token)
        if answer is None:
            log.info("the user token from TWITCH_USER_ACCESS_TOKEN is not valid; refreshing it")
            return
        await self._store(settings.user_access_token, settings.user_refresh_token, answer)

    async def _validate(self, token: str) -> dict | None:
        """Return /oauth2/validate's JSON for `token`, or None when Twitch returns 401."""
        url = f"{self._settings.oauth_url}/validate"
        try:
            async with self._http.get(url, headers={"Authorization": f"OAuth {token}"}) as response:
                body = await response.read()
                status = response.status
        except aiohttp.ClientError as exc:
            raise TokenError(f"validating the user token at {self._settings.oauth_url} failed: {exc}") from exc
        if status == 401:
            return None
        if status != 200:
            raise TokenError(f"user token validation failed with HTTP {status}")
        return orjson.loads(body)

    async def _refresh(self, *, stale: str) -> None:
        owner = f"{id(self)}-{self._clock()}"
        deadline = time.monotonic() + LOCK_TTL_MS / 1000
        while not await self._redis.set(self._keys.user_token_lock, owner, nx=True, px=LOCK_TTL_MS):
            await asyncio.sleep(0.05)
            await self._load_shared()
            if self._fresh() and self._stored.get("access_token") != stale:
                return
            if time.monotonic() > deadline:
                raise TokenError("timed out waiting for another process to refresh the user token")
        try:
            await self._load_shared()
            if self._fresh() and self._stored.get("access_token") != stale:
                return
            try:
                await self._request_refresh(self._stored.get("refresh_token") or self._settings.user_refresh_token)
            except TokenError as exc:
                await self._failures.failed(str(exc))
                raise
            await self._failures.succeeded()
        finally:
            if await self._redis.get(self._keys.user_token_lock) == owner.encode():
                await self._redis.delete(self._keys.user_token_lock)

    async def _request_refresh(self, refresh_token: str) -> None:
        settings = self._settings
        if not refresh_token:
            raise TokenError("the user token needs refreshing but there is no refresh token: set TWITCH_USER_REFRESH_TOKEN")
        form = {"client_id": settings.client_id, "client_secret": settings.client_secret,
                "grant_type": "refresh_token", "refresh_token": refresh_token}
        try:
            async with self._http.post(f"{settings.oauth_url}/token", data=form) as response:
                body = await response.read()
                status = response.status
        except aiohttp.ClientError as exc:
            raise TokenError(f"user token refresh at {settings.oauth_url} failed: {exc}") from exc
        if status != 200:
            raise TokenError(f"user token refresh failed with HTTP {status}: the refresh token may be revoked; "
                             "get a new token pair and set TWITCH_USER_ACCESS_TOKEN and TWITCH_USER_REFRESH_TOKEN")
        answer = orjson.loads(body)
        validated = await self._validate(answer["access_token"]) or {}
        await self._store(answer["access_token"], answer.get("refresh_token") or refresh_token,
                          {**validated, "expires_in": answer.get("expires_in", validated.get("expires_in", 0))})
        self.refreshes += 1
        log.info("user token refreshed for user %s; valid for %s s", self.user_id or "?", answer.get("expires_in"))

    async def _store(self, access_token: str, refresh_token: str, answer: dict) -> None:
        now = self._clock()
        expires_in_s = float(answer.get("expires_in") or 0) * self._settings.time_scale
        if expires_in_s > 0:
            renew_at_s, expires_at_s = now + expires_in_s * RENEW_AT_FRACTION, now + expires_in_s
        else:
            renew_at_s = now + self._settings.scaled(UNKNOWN_EXPIRY_RECHECK_S)
            expires_at_s = 0.0
        self._stored = {
            "access_token": access_token, "refresh_token": refresh_token, "user_id": str(answer.get("user_id") or ""),
            "login": str(answer.get("login") or ""), "scopes": ",".join(answer.get("scopes") or []),
            "obtained_at_s": str(now), "expires_at_s": str(expires_at_s), "renew_at_s": str(renew_at_s),
        }
        await self._redis.hset(self._keys.user_token, mapping=self._stored)
