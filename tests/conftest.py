"""Shared fixtures: one real redis-server for the session, flushed before each test that uses it."""

from __future__ import annotations

import signal

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


def _dump_tasks(signum, frame) -> None:
    """Print the stack of every asyncio task on SIGUSR1, to see what a hung test waits for."""
    import asyncio
    import sys

    loop = asyncio._get_running_loop()
    if loop is None:
        return
    for task in asyncio.all_tasks(loop):
        task.print_stack(file=sys.stderr)


signal.signal(signal.SIGUSR1, _dump_tasks)
