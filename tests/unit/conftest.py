"""Fixtures for unit tests: an in-process emulator on 127.0.0.1 and fleet settings aimed at it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from common.settings import Settings
from emulator import EmulatorSettings, create_app


@dataclasses.dataclass
class RunningEmulator:
    """An emulator served on 127.0.0.1 with a random port."""

    settings: EmulatorSettings
    base_url: str

    def fleet_settings(self, **overrides: Any) -> Settings:
        """Return fleet settings whose Helix and OAuth URLs and app credentials point at this emulator."""
        values = {
            "helix_url": f"{self.base_url}/helix",
            "oauth_url": f"{self.base_url}/oauth2",
            "eventsub_ws_url": self.base_url.replace("http://", "ws://") + "/ws",
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret,
            **overrides,
        }
        return Settings.from_env({}, **values)


EmulatorStarter = Callable[..., Awaitable[RunningEmulator]]


@pytest.fixture
async def start_emulator() -> AsyncIterator[EmulatorStarter]:
    """Start emulators with `EmulatorSettings` overrides. Every emulator is stopped after the test."""
    runners: list[web.AppRunner] = []

    async def start(**overrides: Any) -> RunningEmulator:
        values = {"host": "127.0.0.1", "port": 0, "time_scale": 0.05, "seed": 11, **overrides}
        settings = EmulatorSettings(**values)
        runner = web.AppRunner(create_app(settings), access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return RunningEmulator(settings, f"http://127.0.0.1:{port}")

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
    yield session
    await session.close()
