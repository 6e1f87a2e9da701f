"""A process that makes Helix calls through the fleet's shared rate budget, like any fleet process.

Run as `python -m tests.helix_caller COUNT` with the fleet's CF_* and TWITCH_* environment; it prints
how many calls got a rate-limit 429.
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp

from common.helix import HelixClient
from common.keys import Keys
from common.ratelimit import RateLimiter
from common.redisconn import control_redis
from common.settings import Settings
from common.token import AppTokenManager


async def call(count: int) -> int:
    settings = Settings.from_env()
    client = control_redis(settings)
    async with aiohttp.ClientSession() as http:
        limiter = RateLimiter(client, Keys(settings.key_prefix), time_scale=settings.time_scale)
        helix = HelixClient(settings, AppTokenManager(settings, client, http), http, limiter=limiter)
        for _ in range(count):
            await helix.get_conduits()
    await client.aclose()
    return helix.rate_limited_429


if __name__ == "__main__":
    print(f"rate_limited_429={asyncio.run(call(int(sys.argv[1])))}")
