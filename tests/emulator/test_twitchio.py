"""TwitchIO 3.x against the emulator: plain WebSocket and conduit (AutoClient) modes.

Needs ``twitchio>=3,<4`` installed in the environment; the tests are skipped without it.
TwitchIO is pointed at the emulator through ``Route.BASE``, ``Route.ID_BASE`` and the
EventSub ``WSS`` URL, on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from emu_helpers import EmulatorClient

twitchio = pytest.importorskip("twitchio", minversion="3", reason="twitchio>=3,<4 is not installed")
from twitchio import eventsub  # noqa: E402
from twitchio.eventsub import websockets as tio_websockets  # noqa: E402
from twitchio.http import Route  # noqa: E402

pytestmark = pytest.mark.twitchio


@pytest.fixture
async def emu(start_emulator) -> EmulatorClient:
    # TwitchIO 3 sends the conduit fields as query parameters (see docs/emulator.md).
    return await start_emulator(query_fields_as_body=True)


@pytest.fixture
def aimed_twitchio(emu: EmulatorClient, monkeypatch: pytest.MonkeyPatch, tmp_path) -> EmulatorClient:
    monkeypatch.setattr(Route, "BASE", f"{emu.base_url}/helix/")
    monkeypatch.setattr(Route, "ID_BASE", f"{emu.base_url}/")
    monkeypatch.setattr(tio_websockets, "WSS", emu.ws_url)
    # TwitchIO reads and writes .tio.tokens.json in the working directory.
    monkeypatch.chdir(tmp_path)
    logging.getLogger("twitchio").setLevel(logging.WARNING)
    return emu


async def test_twitchio_websocket_chat_message(aimed_twitchio: EmulatorClient) -> None:
    emu = aimed_twitchio
    minted = await emu.api.user_token("2002", ["user:read:chat", "user:bot"])
    client = twitchio.Client(client_id=emu.settings.client_id, client_secret=emu.settings.client_secret)
    try:
        await client.login(load_tokens=False, save_tokens=False)
        await client.add_token(minted["access_token"], minted["refresh_token"])
        payload = eventsub.ChatMessageSubscription(broadcaster_user_id="1001", user_id="2002")
        await client.subscribe_websocket(payload, token_for="2002")
        waiter = asyncio.create_task(client.wait_for("message", timeout=5))
        await asyncio.sleep(0)
        run = await emu.api.generate(50, count=1, wait=True, types=["channel.chat.message"])
        assert run["sent"] == 1
        message = await waiter
        assert message.broadcaster.id == "1001"
        assert message.text
    finally:
        await client.close()


async def test_twitchio_autoclient_conduit(aimed_twitchio: EmulatorClient) -> None:
    emu = aimed_twitchio
    subscriptions = [eventsub.ChatMessageSubscription(broadcaster_user_id="1001", user_id="2002")]
    client = twitchio.AutoClient(
        client_id=emu.settings.client_id, client_secret=emu.settings.client_secret,
        conduit_id=True, subscriptions=subscriptions,
    )
    try:
        await client.login(load_tokens=False, save_tokens=False)

        async def shards_enabled() -> bool:
            state = await emu.api.state()
            shards = [shard for conduit in state["conduits"] for shard in conduit["shards"]]
            return bool(shards) and all(shard["status"] == "enabled" for shard in shards)

        for _ in range(100):
            if await shards_enabled():
                break
            await asyncio.sleep(0.05)
        assert await shards_enabled()
        listed = await emu.helix("GET", "/eventsub/subscriptions")
        assert [s["type"] for s in listed.body["data"]] == ["channel.chat.message"]

        waiter = asyncio.create_task(client.wait_for("message", timeout=5))
        await asyncio.sleep(0)
        run = await emu.api.generate(50, count=1, wait=True)
        assert run["sent"] == 1
        message = await waiter
        assert message.broadcaster.id == "1001"
    finally:
        await client.close()
