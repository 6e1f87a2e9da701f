"""OAuth token, validate and revoke endpoints."""

from __future__ import annotations

from emu_helpers import EmulatorClient


async def test_token_and_validate(emu: EmulatorClient) -> None:
    reply = await emu.request(
        "GET", f"{emu.base_url}/oauth2/validate", headers={"Authorization": f"OAuth {emu.token}"}
    )
    assert reply.status == 200
    assert reply.body["client_id"] == emu.settings.client_id
    assert reply.body["login"] is None
    assert reply.body["user_id"] is None
    assert reply.body["scopes"] == []
    assert 4_999_000 <= reply.body["expires_in"] <= 5_000_000


async def test_token_wrong_secret_400(emu: EmulatorClient) -> None:
    form = {"client_id": emu.settings.client_id, "client_secret": "nope", "grant_type": "client_credentials"}
    reply = await emu.request("POST", f"{emu.base_url}/oauth2/token", data=form)
    assert reply.status == 400
    assert reply.body == {"status": 400, "message": "invalid client secret"}


async def test_token_response_shape(emu: EmulatorClient) -> None:
    form = {"client_id": emu.settings.client_id, "client_secret": emu.settings.client_secret, "grant_type": "client_credentials"}
    reply = await emu.request("POST", f"{emu.base_url}/oauth2/token", data=form)
    assert reply.status == 200
    assert reply.body["token_type"] == "bearer"
    assert reply.body["expires_in"] == 5_000_000
    assert reply.body["access_token"]


async def test_validate_unknown_token_401(emu: EmulatorClient) -> None:
    reply = await emu.request("GET", f"{emu.base_url}/oauth2/validate", headers={"Authorization": "OAuth bogus"})
    assert reply.status == 401
    assert reply.body == {"status": 401, "message": "invalid access token"}


async def test_revoke_then_helix_401(emu: EmulatorClient) -> None:
    form = {"client_id": emu.settings.client_id, "token": emu.token}
    reply = await emu.request("POST", f"{emu.base_url}/oauth2/revoke", data=form)
    assert reply.status == 200
    helix = await emu.helix("GET", "/eventsub/conduits")
    assert helix.status == 401
    assert helix.body == {"error": "Unauthorized", "status": 401, "message": "Invalid OAuth token"}


async def test_token_expires_scaled(start_emulator) -> None:
    emu = await start_emulator(token_expires_in_s=4, time_scale=0.05)
    import asyncio

    await asyncio.sleep(0.3)
    reply = await emu.helix("GET", "/eventsub/conduits")
    assert reply.status == 401


async def test_invalidate_app_tokens(emu: EmulatorClient) -> None:
    assert (await emu.helix("GET", "/eventsub/conduits")).status == 200
    reply = await emu.control("POST", "/tokens/invalidate")
    assert reply.body == {"invalidated": 1}
    assert (await emu.helix("GET", "/eventsub/conduits")).status == 401


async def test_user_token_validates_with_user(emu: EmulatorClient) -> None:
    minted = await emu.control("POST", "/user-tokens", json={"user_id": "123", "scopes": ["user:bot"]})
    assert minted.status == 200
    reply = await emu.request(
        "GET", f"{emu.base_url}/oauth2/validate", headers={"Authorization": f"OAuth {minted.body['access_token']}"}
    )
    assert reply.body["user_id"] == "123"
    assert reply.body["login"] == "user123"
    assert reply.body["scopes"] == ["user:bot"]


async def test_client_id_mismatch_401(emu: EmulatorClient) -> None:
    reply = await emu.request(
        "GET", f"{emu.base_url}/helix/eventsub/conduits",
        headers={"Authorization": f"Bearer {emu.token}", "Client-Id": "someone-else"},
    )
    assert reply.status == 401
