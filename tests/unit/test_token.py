"""AppTokenManager against the in-process emulator's OAuth endpoints and the real Redis."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import redis.asyncio as redis
from redis import Redis as SyncRedis

from common.errors import TokenError
from common.token import AppTokenManager

from .conftest import EmulatorStarter

TOKEN_KEY = "cf:token:app"
LOCK_KEY = "cf:token:lock"


class FakeClock:
    """A wall clock the test moves by hand, in Unix seconds."""

    def __init__(self, now_s: float = 1_000_000.0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


async def test_two_managers_one_request(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                        redis_port: int, http: aiohttp.ClientSession) -> None:
    emulator = await start_emulator()
    settings = emulator.fleet_settings()
    other_client = redis.Redis(host="127.0.0.1", port=redis_port)
    # Connect first, because a handshake inside get() widens the race that test_renew_rechecks_after_lock shows.
    await other_client.ping()
    first = AppTokenManager(settings, redis_client, http)
    second = AppTokenManager(settings, other_client, http)

    tokens = await asyncio.gather(first.get(), second.get())
    await other_client.aclose()

    assert tokens[0] == tokens[1]
    assert first.renewals + second.renewals == 1


async def test_concurrent_gets_one_request(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                           http: aiohttp.ClientSession) -> None:
    emulator = await start_emulator()
    manager = AppTokenManager(emulator.fleet_settings(), redis_client, http)

    tokens = await asyncio.gather(*(manager.get() for _ in range(5)))

    assert len(set(tokens)) == 1
    assert manager.renewals == 1


async def test_token_stored_in_redis(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                     http: aiohttp.ClientSession) -> None:
    emulator = await start_emulator(token_expires_in_s=1000, time_scale=1.0)
    clock = FakeClock(5000.0)
    manager = AppTokenManager(emulator.fleet_settings(), redis_client, http, clock=clock)

    token = await manager.get()

    stored = await redis_client.hgetall(TOKEN_KEY)
    assert stored[b"access_token"] == token.encode()
    assert float(stored[b"obtained_at_s"]) == 5000.0
    assert float(stored[b"expires_at_s"]) == 6000.0
    assert float(stored[b"renew_at_s"]) == 5900.0
    assert await redis_client.exists(LOCK_KEY) == 0


async def test_second_manager_reuses_stored(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                            http: aiohttp.ClientSession) -> None:
    emulator = await start_emulator()
    settings = emulator.fleet_settings()
    first = AppTokenManager(settings, redis_client, http)
    token = await first.get()

    second = AppTokenManager(settings, redis_client, http)

    assert await second.get() == token
    assert second.renewals == 0


async def test_renewal_at_90_percent(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                     http: aiohttp.ClientSession) -> None:
    emulator = await start_emulator(token_expires_in_s=100, time_scale=1.0)
    clock = FakeClock(1000.0)
    manager = AppTokenManager(emulator.fleet_settings(), redis_client, http, clock=clock)
    first_token = await manager.get()

    clock.now_s = 1089.9
    before_due = await manager.get()
    clock.now_s = 1090.0
    after_due = await manager.get()

    assert before_due == first_token
    assert after_due != first_token
    assert manager.renewals == 2


async def test_renewal_with_time_scale(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                       http: aiohttp.ClientSession) -> None:
    # 10 Twitch seconds times 0.05 is a 0.5 s token, renewed after 0.45 s.
    emulator = await start_emulator(token_expires_in_s=10, time_scale=0.05)
    manager = AppTokenManager(emulator.fleet_settings(time_scale=0.05), redis_client, http)
    first_token = await manager.get()

    early = await manager.get()
    await asyncio.sleep(0.5)
    late = await manager.get()

    assert early == first_token
    assert late != first_token
    assert manager.renewals == 2


async def test_stale_stored_token_replaced(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                           http: aiohttp.ClientSession) -> None:
    emulator = await start_emulator()
    clock = FakeClock(1000.0)
    await redis_client.hset(TOKEN_KEY, mapping={"access_token": "old", "renew_at_s": 999.0})
    manager = AppTokenManager(emulator.fleet_settings(), redis_client, http, clock=clock)

    token = await manager.get()

    assert token != "old"
    assert manager.renewals == 1


async def test_invalidate_once_per_bad_token(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                             http: aiohttp.ClientSession) -> None:
    emulator = await start_emulator()
    settings = emulator.fleet_settings()
    first = AppTokenManager(settings, redis_client, http)
    second = AppTokenManager(settings, redis_client, http)
    bad = await first.get()
    await second.get()

    await first.invalidate(bad)
    await second.invalidate(bad)

    assert await first.get() != bad
    assert await second.get() == await first.get()
    assert first.renewals + second.renewals == 2


async def test_waits_for_other_renewer(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                       http: aiohttp.ClientSession) -> None:
    emulator = await start_emulator()
    clock = FakeClock(1000.0)
    manager = AppTokenManager(emulator.fleet_settings(), redis_client, http, clock=clock)
    await redis_client.set(LOCK_KEY, "another-process", px=15_000)

    pending = asyncio.create_task(manager.get())
    await asyncio.sleep(0.1)
    await redis_client.hset(TOKEN_KEY, mapping={"access_token": "from-elsewhere", "renew_at_s": 2000.0})
    token = await asyncio.wait_for(pending, 1.0)

    assert token == "from-elsewhere"
    assert manager.renewals == 0


async def test_lock_wait_times_out(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                   http: aiohttp.ClientSession) -> None:
    emulator = await start_emulator()
    clock = FakeClock(1000.0)
    manager = AppTokenManager(emulator.fleet_settings(), redis_client, http, clock=clock)
    await redis_client.set(LOCK_KEY, "another-process", px=15_000)

    pending = asyncio.create_task(manager.get())
    await asyncio.sleep(0.1)
    clock.now_s += 16.0

    with pytest.raises(TokenError, match="timed out"):
        await asyncio.wait_for(pending, 1.0)


async def test_validate_returns_client(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                       http: aiohttp.ClientSession) -> None:
    emulator = await start_emulator()
    manager = AppTokenManager(emulator.fleet_settings(), redis_client, http)

    answer = await manager.validate()

    assert answer["client_id"] == emulator.settings.client_id


async def test_validate_invalidated_renews(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                           http: aiohttp.ClientSession) -> None:
    emulator = await start_emulator()
    manager = AppTokenManager(emulator.fleet_settings(), redis_client, http)
    old = await manager.get()
    async with http.post(f"{emulator.base_url}/_emulator/tokens/invalidate") as response:
        assert response.status == 200

    with pytest.raises(TokenError, match="401"):
        await manager.validate()

    assert await manager.get() != old
    assert manager.renewals == 2


async def test_missing_credentials_named(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                         http: aiohttp.ClientSession) -> None:
    emulator = await start_emulator()
    manager = AppTokenManager(emulator.fleet_settings(client_id=""), redis_client, http)

    with pytest.raises(TokenError) as caught:
        await manager.get()

    assert "TWITCH_CLIENT_ID" in str(caught.value)
    assert await redis_client.exists(LOCK_KEY) == 0


class RenewingElsewhereClock(FakeClock):
    """A clock whose first reading stores a fresh token in Redis, as another process finishing its renewal would."""

    def __init__(self, redis_port: int) -> None:
        super().__init__()
        self._redis_port = redis_port
        self.stored = False

    def __call__(self) -> float:
        if not self.stored:
            self.stored = True
            with SyncRedis(host="127.0.0.1", port=self._redis_port) as client:
                client.hset(TOKEN_KEY, mapping={"access_token": "renewed-elsewhere", "renew_at_s": self.now_s + 100})
        return self.now_s


async def test_renew_rechecks_after_lock(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                         redis_port: int, http: aiohttp.ClientSession) -> None:
    emulator = await start_emulator()
    # get() reads the clock for the first time in _renew, after _load_shared found no token.
    clock = RenewingElsewhereClock(redis_port)
    manager = AppTokenManager(emulator.fleet_settings(), redis_client, http, clock=clock)

    token = await manager.get()

    assert clock.stored is True
    assert token == "renewed-elsewhere"
    assert manager.renewals == 0
