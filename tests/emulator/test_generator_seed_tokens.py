"""Seeded generation and its type and channel mix; user tokens with refresh, validate and revoke."""

from __future__ import annotations

import collections

from emu_helpers import EmulatorClient, receive_json

TYPES = (
    ("stream.online", "1", {"broadcaster_user_id": "{b}"}),
    ("channel.chat.message", "1", {"broadcaster_user_id": "{b}", "user_id": "9"}),
    ("channel.update", "2", {"broadcaster_user_id": "{b}"}),
)
VOLATILE = {"message_id", "started_at", "followed_at"}


async def _setup(emu: EmulatorClient):
    conduit_id = await emu.create_conduit(1)
    ws, welcome = await emu.connect()
    await emu.bind(conduit_id, {"0": welcome["payload"]["session"]["id"]})
    for broadcaster in ("1001", "1002"):
        for sub_type, version, template in TYPES:
            condition = {key: value.format(b=broadcaster) for key, value in template.items()}
            assert (await emu.subscribe(conduit_id, sub_type, version, condition)).status == 202
    return ws


def _stable(frame: dict) -> tuple:
    subscription = frame["payload"]["subscription"]
    event = {key: value for key, value in frame["payload"]["event"].items() if key not in VOLATILE}
    return subscription["type"], tuple(sorted(subscription["condition"].items())), repr(event)


async def _run(start_emulator, **options) -> list[tuple]:
    emu = await start_emulator()
    ws = await _setup(emu)
    count = options.pop("count", 30)
    run = await emu.api.generate(1000, count=count, wait=True, **options)
    frames = [await receive_json(ws) for _ in range(count)]
    await ws.close()
    return [run["seed"], *[_stable(frame) for frame in frames]]


async def test_same_seed_same_sequence(start_emulator) -> None:
    first = await _run(start_emulator, seed=42)
    second = await _run(start_emulator, seed=42)
    other = await _run(start_emulator, seed=43)
    assert first[0] == 42
    assert first == second
    assert first[1:] != other[1:]


async def test_type_and_channel_mix(start_emulator) -> None:
    emu = await start_emulator()
    ws = await _setup(emu)
    await emu.api.generate(2000, count=400, wait=True, seed=5,
                           type_weights={"channel.chat.message": 3, "stream.online": 1},
                           channel_weights={"1001": 1})
    frames = [await receive_json(ws) for _ in range(400)]
    types = collections.Counter(f["payload"]["subscription"]["type"] for f in frames)
    channels = {f["payload"]["event"]["broadcaster_user_id"] for f in frames}
    assert channels == {"1001"}
    assert set(types) == {"channel.chat.message", "stream.online"}
    assert 2.0 < types["channel.chat.message"] / types["stream.online"] < 4.5
    await ws.close()


async def test_mix_bad_weights_400(emu: EmulatorClient) -> None:
    for body in ({"type_weights": {"nope": 1}}, {"channel_weights": {"1": -1}}, {"type_weights": {"stream.online": 0}},
                 {"seed": "x"}):
        reply = await emu.control("POST", "/generate", json={"rate": 1, "count": 1, **body})
        assert reply.status == 400, body


async def _token_form(emu: EmulatorClient, **fields: str):
    form = {"client_id": emu.settings.client_id, "client_secret": emu.settings.client_secret, **fields}
    return await emu.request("POST", f"{emu.base_url}/oauth2/token", data=form)


async def test_user_token_refresh(emu: EmulatorClient) -> None:
    minted = await emu.api.user_token("1001", ["user:read:chat"])
    assert set(minted) == {"access_token", "refresh_token", "expires_in", "scope", "token_type"}
    reply = await _token_form(emu, grant_type="refresh_token", refresh_token=minted["refresh_token"])
    assert reply.status == 200
    assert set(reply.body) == {"access_token", "refresh_token", "expires_in", "scope", "token_type"}
    assert reply.body["scope"] == ["user:read:chat"]
    assert reply.body["access_token"] != minted["access_token"]
    again = await _token_form(emu, grant_type="refresh_token", refresh_token=minted["refresh_token"])
    assert again.status == 400
    assert again.body == {"status": 400, "message": "Invalid refresh token"}


async def test_app_token_has_no_refresh(emu: EmulatorClient) -> None:
    reply = await _token_form(emu, grant_type="client_credentials")
    assert "refresh_token" not in reply.body
    bogus = await _token_form(emu, grant_type="refresh_token", refresh_token=reply.body["access_token"])
    assert bogus.status == 400


async def test_user_token_validate_and_revoke(emu: EmulatorClient) -> None:
    token = await emu.user_token("1001", ["user:read:chat", "user:bot"])
    headers = {"Authorization": f"OAuth {token}"}
    valid = await emu.request("GET", f"{emu.base_url}/oauth2/validate", headers=headers)
    assert valid.status == 200
    assert valid.body["login"] == "user1001"
    assert valid.body["user_id"] == "1001"
    assert valid.body["scopes"] == ["user:read:chat", "user:bot"]
    assert valid.body["client_id"] == emu.settings.client_id
    revoked = await emu.request("POST", f"{emu.base_url}/oauth2/revoke",
                                data={"client_id": emu.settings.client_id, "token": token})
    assert revoked.status == 200
    assert (await emu.request("GET", f"{emu.base_url}/oauth2/validate", headers=headers)).status == 401
    assert (await emu.helix("GET", "/eventsub/subscriptions", token=token)).status == 401
