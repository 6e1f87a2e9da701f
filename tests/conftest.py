"""Shared fixtures: one real redis-server for the session, flushed before each test that uses it."""

from __future__ import annotations

import pytest
import redis.asyncio as redis

from common.local import start_redis


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory):
    process, port = start_redis(tmp_path_factory.mktemp("redis"))
    yield port
    process.stop()


@pytest.fixture
async def redis_client(redis_port):
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    await client.flushall()
    yield client
    await client.aclose()
