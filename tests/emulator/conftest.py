"""Fixtures that run a real emulator on 127.0.0.1 with a random port and talk to it over sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from emu_helpers import FAST_SCALE, EmulatorClient, EmulatorFactory

from emulator import EmulatorSettings, create_app



def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "twitchio: runs TwitchIO 3.x against the emulator (skipped without twitchio)")


@pytest.fixture
async def start_emulator() -> AsyncIterator[EmulatorFactory]:
    """Start emulators with setting overrides; each gets its own port and client session."""
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def start(**overrides: Any) -> EmulatorClient:
        values = {"host": "127.0.0.1", "port": 0, "time_scale": FAST_SCALE, "seed": 7, **overrides}
        settings = EmulatorSettings(**values)
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        http = aiohttp.ClientSession()
        sessions.append(http)
        client = EmulatorClient(http, f"http://127.0.0.1:{port}", settings)
        await client.app_token()
        return client

    yield start
    for http in sessions:
        await http.close()
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def emu(start_emulator: EmulatorFactory) -> EmulatorClient:
    return await start_emulator()
