"""Settings from the environment, serve() and ``python -m emulator``."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

import aiohttp
import pytest

from emulator import EmulatorSettings, serve


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_from_env_reads_values() -> None:
    settings = EmulatorSettings.from_env({
        "EMULATOR_PORT": "9000", "EMULATOR_TIME_SCALE": "0.5", "EMULATOR_SEED": "3",
        "EMULATOR_RECONNECT_OVERLAP_RESEND": "0", "EMULATOR_CLIENT_ID": "abc",
    })
    assert settings.port == 9000
    assert settings.time_scale == 0.5
    assert settings.seed == 3
    assert settings.reconnect_overlap_resend == 0
    assert settings.client_id == "abc"
    assert EmulatorSettings.from_env({}) == EmulatorSettings()


@pytest.mark.parametrize(
    ("name", "value"),
    [("EMULATOR_PORT", "70000"), ("EMULATOR_TIME_SCALE", "-1"), ("EMULATOR_RATE_LIMIT_PER_MIN", "abc"),
     ("EMULATOR_BIND_DEADLINE_S", "0"), ("EMULATOR_SEED", "x"), ("EMULATOR_HOST", " ")],
)
def test_from_env_rejects_invalid(name: str, value: str) -> None:
    with pytest.raises(ValueError) as raised:
        EmulatorSettings.from_env({name: value})
    assert name in str(raised.value)
    assert repr(value) in str(raised.value)
    assert "expected" in str(raised.value)


def test_keyword_construction_validates() -> None:
    with pytest.raises(ValueError, match="time_scale"):
        EmulatorSettings(time_scale=0)


async def test_serve_logs_and_stops(caplog) -> None:
    port = _free_port()
    ready = asyncio.Event()
    caplog.set_level(logging.INFO, logger="emulator")
    task = asyncio.create_task(serve(EmulatorSettings(port=port), ready))
    await asyncio.wait_for(ready.wait(), 5)
    assert f"emulator listening on http://127.0.0.1:{port}" in caplog.text
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"ws://127.0.0.1:{port}/ws")
        await ws.receive(timeout=2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        message = await ws.receive(timeout=2)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await ws.close()


async def test_module_runs_and_stops_on_sigterm() -> None:
    port = _free_port()
    env = {**os.environ, "EMULATOR_PORT": str(port), "EMULATOR_HOST": "127.0.0.1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "emulator", env=env, stderr=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(process.stderr.readline(), 10)
        while b"listening" not in line:
            line = await asyncio.wait_for(process.stderr.readline(), 10)
        assert f"http://127.0.0.1:{port}".encode() in line
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_module_rejects_bad_env() -> None:
    env = {**os.environ, "EMULATOR_PORT": "nope"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "emulator", env=env, stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 2
    assert b"EMULATOR_PORT" in stderr
