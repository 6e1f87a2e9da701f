"""UserTokenManager against the emulator's refresh-token flow and the real Redis."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import redis.asyncio as redis

from common.alerts import Alerts
from common.errors import TokenError
from common.keys import Keys
from common.token import UserTokenManager

from .conftest import EmulatorStarter, RunningEmulator


async def user_pair(http: aiohttp.ClientSession, emulator: RunningEmulator, user_id: str = "77") -> dict:
    async with http.post(f"{emulator.base_url}/_emulator/user-tokens",
                         json={"user_id": user_id, "scopes": ["user:bot"]}) as response:
        return await response.json()


async def validates(http: aiohttp.ClientSession, emulator: RunningEmulator, token: str) -> bool:
    async with http.get(f"{emulator.base_url}/oauth2/validate", headers={"Authorization": f"OAuth {token}"}) as response:
        return response.status == 200


async def test_seed_token_used_and_stored(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                          http: aiohttp.ClientSession) -> None:
    emulator = await start_emulator()
    pair = await user_pair(http, emulator)
    settings = emulator.fleet_settings(user_access_token=pair["access_token"], user_refresh_token=pair["refresh_token"])
    manager = UserTokenManager(settings, redis_client, http)

    token = await manager.get()
    stored = await redis_client.hgetall(Keys().user_token)

    assert token == pair["access_token"]
    assert manager.user_id == "77"
    assert stored[b"refresh_token"] == pair["refresh_token"].encode()
    assert manager.refreshes == 0


async def test_refreshed_before_expiry(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                       http: aiohttp.ClientSession) -> None:
    emulator = await start_emulator(token_expires_in_s=1000)
    pair = await user_pair(http, emulator)
    settings = emulator.fleet_settings(user_access_token=pair["access_token"], user_refresh_token=pair["refresh_token"],
                                       time_scale=0.05)
    now = [1000.0]
    manager = UserTokenManager(settings, redis_client, http, clock=lambda: now[0])
    first = await manager.get()

    now[0] += 1000 * 0.05 * 0.91  # past 90 % of the token's 1000 Twitch seconds
    second = await manager.get()
    stored = await redis_client.hgetall(Keys().user_token)

    assert second != first
    assert manager.refreshes == 1
    assert stored[b"access_token"] == second.encode()
    assert stored[b"refresh_token"] != pair["refresh_token"].encode()
    assert await validates(http, emulator, second)


async def test_refresh_after_401(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                 http: aiohttp.ClientSession) -> None:
    # The token lives 10 Twitch seconds (0.5 s real); the manager's clock does not move, so only
    # Twitch's 401 tells it the token expired.
    emulator = await start_emulator(token_expires_in_s=10)
    pair = await user_pair(http, emulator)
    settings = emulator.fleet_settings(user_access_token=pair["access_token"], user_refresh_token=pair["refresh_token"])
    manager = UserTokenManager(settings, redis_client, http, clock=lambda: 1000.0)
    first = await manager.get()
    await asyncio.sleep(0.6)
    assert not await validates(http, emulator, first)

    await manager.invalidate(first)
    await manager.invalidate(first)  # a second 401 with the same old token refreshes nothing
    second = await manager.get()

    assert second != first
    assert manager.refreshes == 1
    assert await validates(http, emulator, second)


async def test_invalid_seed_refreshed(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                      http: aiohttp.ClientSession) -> None:
    emulator = await start_emulator()
    pair = await user_pair(http, emulator)
    settings = emulator.fleet_settings(user_access_token="expired-token", user_refresh_token=pair["refresh_token"])
    manager = UserTokenManager(settings, redis_client, http)

    token = await manager.get()

    assert token != "expired-token"
    assert manager.refreshes == 1


async def test_second_manager_uses_stored_pair(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                               http: aiohttp.ClientSession) -> None:
    emulator = await start_emulator()
    pair = await user_pair(http, emulator)
    settings = emulator.fleet_settings(user_access_token=pair["access_token"], user_refresh_token=pair["refresh_token"])
    first = UserTokenManager(settings, redis_client, http)
    await first.get()
    await first.invalidate(pair["access_token"])  # rotates the refresh token stored in Redis

    # The settings still name the retired pair; the stored one wins.
    second = UserTokenManager(settings, redis_client, http)
    token = await second.get()

    assert token == await first.get()
    assert second.refreshes == 0


async def test_refresh_failures_alert(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                      http: aiohttp.ClientSession) -> None:
    emulator = await start_emulator()
    settings = emulator.fleet_settings(user_access_token="bad", user_refresh_token="bad-refresh")
    manager = UserTokenManager(settings, redis_client, http, alerts=Alerts(redis_client, Keys()))

    for _ in range(3):
        with pytest.raises(TokenError):
            await manager.get()
    alerts = [fields for _, fields in await redis_client.xrange(Keys().alerts)]

    assert [a[b"name"] for a in alerts] == [b"user_token_renewal_failed", b"user_token_renewal_failed_repeatedly"]
    assert all(b"bad-refresh" not in a[b"message"] for a in alerts)


async def test_missing_user_token_named(start_emulator: EmulatorStarter, redis_client: redis.Redis,
                                        http: aiohttp.ClientSession) -> None:
    emulator = await start_emulator()
    manager = UserTokenManager(emulator.fleet_settings(), redis_client, http)

    with pytest.raises(TokenError, match="TWITCH_USER_ACCESS_TOKEN"):
        await manager.get()
