"""RateLimiter (the fleet's shared Helix budget in Redis) and CircuitBreaker."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from common.errors import CircuitOpen
from common.helix import HelixClient
from common.keys import Keys
from common.ratelimit import BreakerState, CircuitBreaker, RateLimiter
from common.token import AppTokenManager

from .conftest import EmulatorStarter


def headers(limit: int, remaining: int) -> dict[str, str]:
    return {"Ratelimit-Limit": str(limit), "Ratelimit-Remaining": str(remaining), "Ratelimit-Reset": "0"}


async def test_acquire_paces_empty_bucket(redis_client: redis.Redis) -> None:
    # 60 points per Twitch minute at time scale 0.1 is 10 points per real second.
    limiter = RateLimiter(redis_client, Keys(), time_scale=0.1, default_limit=60)

    started = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for _ in range(5)))
    elapsed = time.monotonic() - started

    assert elapsed >= 0.45
    assert elapsed < 1.5


async def test_observe_sets_bucket_from_headers(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, Keys(), time_scale=100.0, default_limit=60, margin=5)

    await limiter.observe(headers(100, 50))
    first = await limiter.snapshot()
    await limiter.observe(headers(100, 10))
    second = await limiter.snapshot()

    assert first["limit"] == "100"
    assert float(first["tokens"]) == pytest.approx(45, abs=0.1)
    assert float(second["tokens"]) == pytest.approx(5, abs=0.1)


async def test_observe_429_empties_bucket(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, Keys(), time_scale=100.0, margin=5)

    await limiter.observe(headers(800, 700))
    await limiter.observe(headers(800, 0), rate_limited=True)
    snapshot = await limiter.snapshot()

    assert float(snapshot["tokens"]) == pytest.approx(-5, abs=0.1)
    assert snapshot["throttled"] == "1"


async def test_observe_keeps_room_for_calls_in_flight(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, Keys(), time_scale=100.0, margin=0)
    for _ in range(3):
        await limiter._acquire(keys=[limiter._key], args=[800, 60_000 * 100.0, 1])

    # Three calls reserved a point and this answer is for one of them, so two may still reach
    # Twitch: 100 remaining leaves 98 for new calls.
    await limiter.observe(headers(800, 100))
    snapshot = await limiter.snapshot()

    assert float(snapshot["tokens"]) == pytest.approx(98, abs=0.2)


async def test_late_response_cannot_raise_bucket(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, Keys(), time_scale=100.0, margin=0)
    await redis_client.hset(Keys().ratelimit, mapping={"limit": 800, "tokens": 100})
    late = await limiter.acquire()
    # Twitch responded to the first call with 99 points left. 30 newer calls reach Twitch after it,
    # and their responses are observed first, so 69 points are left.
    for remaining in range(98, 68, -1):
        await limiter.observe(headers(800, remaining), reservation=await limiter.acquire())
    await redis_client.hset(Keys().ratelimit, "tokens", "0")

    # The first call's response is observed last and still reports 99.
    await limiter.observe(headers(800, 99), reservation=late)
    snapshot = await limiter.snapshot()

    assert float(snapshot["tokens"]) == pytest.approx(69, abs=0.2)


async def test_two_limiters_share_bucket(redis_client: redis.Redis) -> None:
    first = RateLimiter(redis_client, Keys(), time_scale=100.0, margin=5)
    second = RateLimiter(redis_client, Keys(), time_scale=100.0, margin=5)

    await first.observe(headers(800, 20))
    await second.acquire()
    snapshot = await first.snapshot()

    assert float(snapshot["tokens"]) == pytest.approx(14, abs=0.1)
    assert snapshot["acquired"] == "1"


async def test_acquire_without_redis_paces_locally() -> None:
    # Nothing listens on port 1 of the loopback address, so every command fails at once.
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    limiter = RateLimiter(client, Keys(), time_scale=0.01, default_limit=600)
    try:
        reservation = await limiter.acquire()
    finally:
        await client.aclose()

    assert reservation.waited_s == pytest.approx(0.001, abs=0.0005)
    assert reservation.observed_before is None


def test_breaker_opens_after_threshold() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=3, cooldown_s=10.0, clock=lambda: now[0])

    for _ in range(3):
        breaker.before_call()
        breaker.record_failure()

    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen):
        breaker.before_call("GET", "/eventsub/subscriptions")


def test_breaker_half_open_allows_one_trial() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=1, cooldown_s=10.0, clock=lambda: now[0])
    breaker.record_failure()
    now[0] = 10.0

    breaker.before_call()
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    breaker.record_success()

    assert breaker.state is BreakerState.CLOSED
    breaker.before_call()


def test_breaker_failed_trial_reopens() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, cooldown_s=10.0, clock=lambda: now[0])
    breaker.record_failure()
    breaker.record_failure()
    now[0] = 11.0
    breaker.before_call()

    breaker.record_failure()

    assert breaker.state is BreakerState.OPEN
    assert breaker.times_opened == 2
    with pytest.raises(CircuitOpen):
        breaker.before_call()


def test_breaker_success_resets_count() -> None:
    breaker = CircuitBreaker(threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()

    assert breaker.state is BreakerState.CLOSED


async def test_clients_sharing_budget_avoid_429(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                                http: aiohttp.ClientSession) -> None:
    # 30 points per Twitch minute at time scale 0.05: the bucket holds 30 and refills 10 per second.
    emulator = await start_emulator(rate_limit_per_min=30)
    settings = emulator.fleet_settings(time_scale=0.05)
    keys = Keys(settings.key_prefix)
    clients = [
        HelixClient(settings, AppTokenManager(settings, redis_client, http), http,
                    limiter=RateLimiter(redis_client, keys, time_scale=settings.time_scale))
        for _ in range(3)
    ]

    async def call_many(client: HelixClient) -> None:
        for _ in range(20):
            await client.get_conduits()

    started = time.monotonic()
    await asyncio.gather(*(call_many(client) for client in clients))
    elapsed = time.monotonic() - started
    async with http.get(f"{emulator.base_url}/_emulator/counters") as response:
        counters = await response.json()

    assert counters["rate_limited"] == 0
    assert counters["helix_calls"]["GET /eventsub/conduits"] == 60
    assert sum(client.rate_limited_429 for client in clients) == 0
    assert elapsed < 8.0
