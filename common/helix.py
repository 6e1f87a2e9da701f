"""An aiohttp client for the Helix conduit, shard and subscription endpoints.

Errors are translated here, at one boundary, into the `common.errors` tree. 5xx responses and network
errors are retried with capped, jittered backoff, and a circuit breaker stops calls after repeated
failures. A real rate limit (429 with `Ratelimit-Remaining: 0`) waits until `Ratelimit-Reset`
(Twitch API guide, rate limits). A 401 gets one new token and one retry. With a `RateLimiter`, every
call takes a point from the fleet's shared budget before it is sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import orjson
from prometheus_client import Counter

from .backoff import Backoff
from .errors import (
    Conflict, ConduitNotFound, CostLimitReached, HelixError, LimitReached, RateLimited, ServerError, Unauthorized,
)
from .models import (
    Conduit, Shard, ShardUpdate, Subscription, SubscriptionPage, UpdateShardsRequest, UpdateShardsResponse,
)
from .ratelimit import CircuitBreaker, RateLimiter, Reservation
from .settings import Settings
from .token import AppTokenManager

log = logging.getLogger(__name__)

HELIX_CALLS = Counter("cf_helix_calls_total", "Helix calls by endpoint and HTTP status", ["endpoint", "status"])

_conduits_decoder = msgspec.json.Decoder(dict[str, list[Conduit]])
_shards_page_decoder = msgspec.json.Decoder(dict[str, Any])
_update_decoder = msgspec.json.Decoder(UpdateShardsResponse)
_subs_page_decoder = msgspec.json.Decoder(SubscriptionPage)
_encoder = msgspec.json.Encoder()


class RateLimitState(msgspec.Struct):
    """The last `Ratelimit-*` headers seen: points per minute, points left, Unix time of a full bucket."""

    limit: int = 0
    remaining: int = -1
    reset_at_s: float = 0.0


class HelixClient:
    """Calls Helix with one token manager: the fleet's app token, or the user token of the legacy mode."""

    def __init__(
        self,
        settings: Settings,
        tokens: AppTokenManager,
        http: aiohttp.ClientSession,
        *,
        max_retries: int = 4,
        max_rate_limit_wait_s: float = 70.0,
        limiter: RateLimiter | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._settings = settings
        self._tokens = tokens
        self._http = http
        self._base = settings.helix_url.rstrip("/")
        self._max_retries = max_retries
        self._max_rate_limit_wait_s = max_rate_limit_wait_s
        self.limiter = limiter
        self.breaker = breaker or CircuitBreaker(cooldown_s=settings.scaled(30.0))
        self.ratelimit = RateLimitState()
        self.rate_limited_429 = 0
        self.consecutive_failures = 0
        self.last_total_cost = 0
        self.max_total_cost = 0

    # -- conduits -------------------------------------------------------------------------------

    async def get_conduits(self) -> list[Conduit]:
        body = await self._call("GET", "/eventsub/conduits")
        return _conduits_decoder.decode(body)["data"]

    async def create_conduit(self, shard_count: int) -> Conduit:
        body = await self._call("POST", "/eventsub/conduits", json={"shard_count": shard_count})
        return _conduits_decoder.decode(body)["data"][0]

    async def update_conduit(self, conduit_id: str, shard_count: int) -> Conduit:
        body = await self._call("PATCH", "/eventsub/conduits", json={"id": conduit_id, "shard_count": shard_count})
        return _conduits_decoder.decode(body)["data"][0]

    async def delete_conduit(self, conduit_id: str) -> None:
        await self._call("DELETE", "/eventsub/conduits", params={"id": conduit_id})

    # -- shards ---------------------------------------------------------------------------------

    async def get_shards(self, conduit_id: str, status: str | None = None) -> list[Shard]:
        """Return every shard of the conduit, following the pagination cursor."""
        shards: list[Shard] = []
        params = {"conduit_id": conduit_id}
        if status:
            params["status"] = status
        while True:
            page = _shards_page_decoder.decode(await self._call("GET", "/eventsub/conduits/shards", params=params))
            shards.extend(msgspec.convert(page.get("data") or [], list[Shard]))
            cursor = (page.get("pagination") or {}).get("cursor")
            if not cursor:
                return shards
            params["after"] = cursor

    async def update_shards(self, conduit_id: str, updates: list[ShardUpdate]) -> UpdateShardsResponse:
        """Point shards at transports; the response lists updated shards in `data` and the rest in `errors`."""
        request = UpdateShardsRequest(conduit_id=conduit_id, shards=updates)
        body = await self._call("PATCH", "/eventsub/conduits/shards", data=_encoder.encode(request))
        return _update_decoder.decode(body)

    # -- subscriptions ----------------------------------------------------------------------------

    async def create_subscription(
        self, type_: str, version: str, condition: dict[str, str], conduit_id: str = "", *, session_id: str = "",
    ) -> Subscription | None:
        """Create a conduit subscription, or with `session_id` a plain WebSocket one (user token only).

        Return None when it already exists (409).
        """
        transport = ({"method": "websocket", "session_id": session_id} if session_id
                     else {"method": "conduit", "conduit_id": conduit_id})
        request = {"type": type_, "version": version, "condition": condition, "transport": transport}
        try:
            body = await self._call("POST", "/eventsub/subscriptions", json=request)
        except Conflict:
            return None
        page = _subs_page_decoder.decode(body)
        self.last_total_cost, self.max_total_cost = page.total_cost, page.max_total_cost
        return page.data[0]

    async def iter_subscriptions(self, **filters: str) -> AsyncIterator[SubscriptionPage]:
        """Yield every page of Get EventSub Subscriptions with the given filter."""
        params = dict(filters)
        while True:
            raw = await self._call("GET", "/eventsub/subscriptions", params=params)
            page = _subs_page_decoder.decode(raw)
            yield page
            cursor = (orjson.loads(raw).get("pagination") or {}).get("cursor")
            if not cursor:
                return
            params["after"] = cursor

    async def get_subscriptions(self, **filters: str) -> tuple[list[Subscription], SubscriptionPage]:
        """Return all subscriptions matching the filter and the last page's totals."""
        found: list[Subscription] = []
        last = SubscriptionPage()
        async for page in self.iter_subscriptions(**filters):
            found.extend(page.data)
            last = page
        return found, last

    async def delete_subscription(self, subscription_id: str) -> bool:
        """Delete a subscription; return False when it did not exist."""
        try:
            await self._call("DELETE", "/eventsub/subscriptions", params={"id": subscription_id})
        except HelixError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # -- transport --------------------------------------------------------------------------------

    async def _call(
        self, method: str, path: str, *, params: dict | None = None, json: Any = None, data: bytes | None = None,
    ) -> bytes:
        if json is not None:
            data = orjson.dumps(json)
        backoff = Backoff(base_s=0.2, cap_s=5.0)
        renewed = False
        rate_limit_waited_s = 0.0
        attempt = 0
        while True:
            attempt += 1
            token = await self._tokens.get()
            self.breaker.before_call(method, path)
            reservation = await self.limiter.acquire() if self.limiter is not None else None
            try:
                status, headers, body = await self._send(method, path, token, params, data)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                await self._observe(None, reservation)
                self.breaker.record_failure()
                if attempt > self._max_retries:
                    self.consecutive_failures += 1
                    raise ServerError(0, f"network error: {exc}", method=method, path=path) from exc
                log.warning("Helix %s %s network error, retrying: %s", method, path, exc)
                await asyncio.sleep(backoff.next_delay())
                continue
            self._read_ratelimit(headers)
            real_rate_limit = status == 429 and self.ratelimit.remaining == 0
            await self._observe(headers, reservation, rate_limited=real_rate_limit)
            HELIX_CALLS.labels(f"{method} {path}", str(status)).inc()
            if status >= 500:
                self.breaker.record_failure()
            else:
                self.breaker.record_success()
            if status < 300:
                self.consecutive_failures = 0
                return body
            message = _error_message(body)
            if status == 401 and not renewed:
                renewed = True
                log.info("Helix %s %s returned 401; renewing the app token once", method, path)
                await self._tokens.invalidate(token)
                continue
            if real_rate_limit:
                self.rate_limited_429 += 1
                wait_s = max(0.05, self.ratelimit.reset_at_s - time.time()) + 0.05
                if rate_limit_waited_s + wait_s > self._max_rate_limit_wait_s:
                    raise RateLimited(status, message, method=method, path=path, reset_at_s=self.ratelimit.reset_at_s)
                log.warning("Helix rate limit reached on %s %s; waiting %.2f s for the bucket", method, path, wait_s)
                rate_limit_waited_s += wait_s
                await asyncio.sleep(wait_s)
                continue
            if status >= 500 and attempt <= self._max_retries:
                log.warning("Helix %s %s returned %s, retrying: %s", method, path, status, message)
                await asyncio.sleep(backoff.next_delay())
                continue
            if status >= 500 or status == 401:
                self.consecutive_failures += 1
            raise _classify(status, message, method, path)

    async def _observe(self, headers, reservation: Reservation | None, *, rate_limited: bool = False) -> None:
        if self.limiter is not None:
            await self.limiter.observe(headers, rate_limited=rate_limited, reservation=reservation)

    async def _send(self, method, path, token, params, data) -> tuple[int, Any, bytes]:
        headers = {
            "Authorization": f"Bearer {token}",
            "Client-Id": self._settings.client_id,
        }
        if data is not None:
            headers["Content-Type"] = "application/json"
        url = self._base + path
        async with self._http.request(method, url, params=params, data=data, headers=headers) as response:
            return response.status, response.headers, await response.read()

    def _read_ratelimit(self, headers) -> None:
        try:
            if "Ratelimit-Remaining" in headers:
                self.ratelimit = RateLimitState(
                    limit=int(headers.get("Ratelimit-Limit", 0)),
                    remaining=int(headers["Ratelimit-Remaining"]),
                    reset_at_s=float(headers.get("Ratelimit-Reset", 0)),
                )
        except ValueError:
            log.warning("ignoring malformed Ratelimit headers: %r", dict(headers))


def _error_message(body: bytes) -> str:
    try:
        return str(orjson.loads(body).get("message", ""))
    except (orjson.JSONDecodeError, AttributeError):
        return body[:200].decode(errors="replace")


def _classify(status: int, message: str, method: str, path: str) -> HelixError:
    if status == 401:
        return Unauthorized(status, message, method=method, path=path)
    if status == 409:
        return Conflict(status, message, method=method, path=path)
    if status == 429:
        # Remaining was not 0, so this is a limit (conduit count, cost, same type and condition).
        # Twitch documents no error code for the cost limit, so its message is the only sign.
        if "cost" in message.lower():
            return CostLimitReached(status, message, method=method, path=path)
        return LimitReached(status, message, method=method, path=path)
    if status == 404 and path.startswith("/eventsub/conduits"):
        return ConduitNotFound(status, message or "conduit not found", method=method, path=path)
    if status >= 500:
        return ServerError(status, message, method=method, path=path)
    return HelixError(status, message, method=method, path=path)
